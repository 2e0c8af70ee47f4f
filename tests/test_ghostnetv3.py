"""GhostNetV3 (gv3lite.ghostnetv3): shapes, parity with timm 1.0.31 (weights both ways, outputs), counts vs the reference."""
import pytest
import torch
import torch.nn as nn

import gv3lite
from gv3lite import count_macs, count_params, create_model, list_models, reparameterize
from gv3lite.ghost import GhostModule

timm = pytest.importorskip("timm")
from timm.layers import make_divisible  # noqa: E402
from timm.utils.model import reparameterize_model as timm_reparameterize  # noqa: E402

from gv3lite.reparam import randomize_batchnorm  # noqa: E402

# timm 1.0.31 (timm/models/ghostnet.py) and the official code agree: params, conv+linear MACs (M) at 224
EXPECTED = {
    ("ghostnetv3_050", "train"): (3_395_384, 117.53), ("ghostnetv3_050", "deploy"): (2_853_176, 49.64),
    ("ghostnetv3_100", "train"): (8_129_028, 404.13), ("ghostnetv3_100", "deploy"): (6_147_588, 167.05),
    ("ghostnetv3_130", "train"): (12_217_720, 654.84), ("ghostnetv3_130", "deploy"): (8_948_296, 269.32),
    ("ghostnetv3_160", "train"): (17_275_700, 971.57), ("ghostnetv3_160", "deploy"): (12_377_778, 398.61),
}


def test_make_divisible_rule_and_hard_sigmoid():
    """timm's make_divisible (divisor 4, as GhostNet) and torch's hardsigmoid are the rules the models use."""
    assert [make_divisible(c * 1.6, 4) for c in (16, 672, 960)] == [24, 1076, 1536]
    assert make_divisible(36 * 0.25, 4) == 12  # 8 would lose >10%, so +4
    x = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    torch.testing.assert_close(torch.nn.functional.hardsigmoid(x), torch.nn.functional.relu6(x + 3) / 6,
                               rtol=0, atol=1e-15)


def test_count_macs_is_half_of_torch_flop_counter():
    """count_macs (teaching code: forward hooks on Conv2d/Linear) equals torch's FlopCounterMode total / 2."""
    from torch.utils.flop_counter import FlopCounterMode
    for model in (create_model("ghostnetv3_050", num_classes=10).eval(),
                  reparameterize(create_model("ghostnetv3_050", num_classes=10)).eval(),
                  create_model("mobilenetv2_050", num_classes=10).eval()):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.zeros(1, 3, 64, 64))
        assert count_macs(model, 64) == counter.get_total_flops() // 2


@pytest.mark.parametrize("deploy", [False, True])
def test_shapes_batch1_and_head(deploy):
    model = create_model("ghostnetv3_050", num_classes=7, deploy=deploy).eval()
    x = torch.randn(1, 3, 64, 48)
    assert model(x).shape == (1, 7)
    feats = model.forward_features(x)
    assert feats.shape == (1, 480, 2, 2)
    assert model.forward_head(feats, pre_logits=True).shape == (1, 1280)
    model.reset_classifier(0)
    assert model(x).shape == (1, 1280)


def test_dropout_before_classifier_like_timm():
    model = create_model("ghostnetv3_050", num_classes=3, drop_rate=0.5).train()
    feats = torch.ones(4, 1280)
    model.conv_head, model.act2, model.global_pool, model.flatten = (nn.Identity(),) * 4
    out = model.forward_head(feats, pre_logits=True)
    assert (out == 0).any() and torch.allclose(out[out != 0], torch.full_like(out[out != 0], 2.0))
    model.eval()
    assert torch.equal(model.forward_head(feats, pre_logits=True), feats)


@pytest.mark.parametrize("name", list_models()[:4])  # the GhostNetV3 names (models.py registers others)
def test_parity_with_timm(name):
    """timm weights load strictly into ours and back; eval outputs agree in train form and deploy form."""
    torch.manual_seed(0)
    ref = randomize_batchnorm(timm.create_model(name, num_classes=10)).eval()
    ours = create_model(name, num_classes=10).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)
        ours_d, ref_d = reparameterize(ours), timm_reparameterize(ref)
        assert set(ours_d.state_dict()) == set(ref_d.state_dict())
        torch.testing.assert_close(ours_d(x), ref_d(x), atol=1e-5, rtol=0)
        direct = create_model(name, num_classes=10, deploy=True).eval()   # deploy=True loads timm's fused weights
        direct.load_state_dict(ref_d.state_dict(), strict=True)
        torch.testing.assert_close(direct(x), ref_d(x), atol=1e-5, rtol=0)


def test_parity_with_timm_at_224():
    torch.manual_seed(1)
    ref = randomize_batchnorm(timm.create_model("ghostnetv3_100")).eval()
    ours = create_model("ghostnetv3_100").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)


def test_counts_at_224_match_reference():
    table = gv3lite.model_summary(list_models()[:4], img_size=224)
    assert list(table.columns[:4]) == ["name", "form", "params", "macs"]
    assert len(table) == 8
    for row in table.itertuples():
        params, macs_m = EXPECTED[(row.name, row.form)]
        assert row.params == params, (row.name, row.form)
        assert abs(row.macs / 1e6 - macs_m) <= 0.01, (row.name, row.form, row.macs)


def test_plain_train_form_has_the_deploy_graph():
    """num_conv_branches=1 without scale/skip = one conv+BN per operation: same MACs as the fused model."""
    plain = create_model("ghostnetv3_050", num_conv_branches=1, use_scale_branch=False, use_identity_branch=False)
    assert not any("rpr_scale" in k or "rpr_skip" in k or "rpr_conv.1" in k for k in plain.state_dict())
    assert count_macs(plain, 64) == count_macs(create_model("ghostnetv3_050", deploy=True), 64)
    four = create_model("ghostnetv3_050", num_conv_branches=4)
    assert count_params(four) > count_params(create_model("ghostnetv3_050"))


def test_ghost_module_ratio_and_odd_channels():
    """Plain Ghost module: about 1/s of a conv's parameters; odd out channels are sliced to `out`."""
    m = GhostModule(256, 256, ratio=2, act=False)
    conv_params = 256 * 256
    ghost_convs = sum(p.numel() for n, p in m.named_parameters() if p.dim() == 4)
    assert ghost_convs == 128 * 256 + 128 * 9  # primary 1x1 + cheap depthwise 3x3
    assert abs(ghost_convs / conv_params - 1 / 2) < 0.05
    assert GhostModule(8, 15, use_dfc=True)(torch.randn(1, 8, 6, 6)).shape == (1, 15, 6, 6)
    assert GhostModule(8, 16, ratio=3)(torch.randn(1, 8, 6, 6)).shape == (1, 16, 6, 6)
