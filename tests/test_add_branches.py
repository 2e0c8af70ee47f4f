"""add_branches.py + models.py: re-parameterizable branches on MobileNetV2 / ShuffleNetV2 / GhostNetV2 and the round trip back."""
import copy

import pytest
import torch
import torch.nn as nn
import torchvision

from conftest import randomize_bn_around_activations
from gv3lite import reparameterize
from gv3lite.add_branches import DeferredBatchNorm, RepConv2d, add_rep_branches
from gv3lite.ghostnetv3 import GhostNetV3
from gv3lite.models import MODEL_BUILDERS, create_model

NUM_CLASSES = 10


def params(model):
    return sum(p.numel() for p in model.parameters())


# name -> (plain model builder, converted layers, train-form params, deploy/original params) at 10 classes
ARCHS = {
    "mobilenetv2": (lambda: torchvision.models.mobilenet_v2(weights=None, num_classes=NUM_CLASSES), 50,
                    5_891_914, 2_236_682),
    "shufflenetv2": (lambda: torchvision.models.shufflenet_v2_x1_0(weights=None, num_classes=NUM_CLASSES), 54,
                     2_834_978, 1_263_854),
    "ghostnetv2": (lambda: create_model("ghostnetv2_100", num_classes=NUM_CLASSES), 68, 6_860_838, 4_888_718),
}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_round_trip_is_exact_and_restores_the_original(arch):
    build, n_layers, n_train, n_plain = ARCHS[arch]
    torch.manual_seed(0)
    original = build()
    rep, layers = add_rep_branches(original)
    assert len(layers) == n_layers
    assert params(original) == n_plain and params(rep) == n_train
    randomize_bn_around_activations(rep)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = rep(x)
        deploy = reparameterize(rep)
        torch.testing.assert_close(deploy(x), y, atol=1e-5, rtol=0)
        rep64 = copy.deepcopy(rep).double()
        torch.testing.assert_close(reparameterize(rep64)(x.double()), rep64(x.double()), atol=1e-10, rtol=0)
    assert not [m for m in deploy.modules() if isinstance(m, (RepConv2d, DeferredBatchNorm))]
    if arch == "ghostnetv2":  # deploy = the fused GhostNetV3 (= GhostNetV2 graph); train form = GhostNetV3's
        assert params(deploy) == params(create_model("ghostnetv2_100", NUM_CLASSES, deploy=True)) == n_plain - 9320
        ref_train = GhostNetV3(1.0, NUM_CLASSES)
        assert {k: v.shape for k, v in rep.state_dict().items()} == \
               {k: v.shape for k, v in ref_train.state_dict().items()}
        ref = create_model("ghostnetv2_100", NUM_CLASSES, deploy=True).eval()
    else:  # deploy = the unmodified torchvision model
        assert params(deploy) == n_plain
        ref = build().eval()
    ref.load_state_dict(deploy.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(ref(x), deploy(x))


def test_which_layers_and_which_branches():
    mb = torchvision.models.mobilenet_v2(weights=None)
    _, layers = add_rep_branches(mb, inplace=True)
    assert layers[:3] == ["features.1.conv.0.0", "features.1.conv.1", "features.2.conv.0.0"]
    assert not [n for n in layers if n.startswith(("features.0.", "features.18.", "classifier"))]
    dw_s1, dw_s2, expand = mb.features[1].conv[0][0].rep, mb.features[2].conv[1][0].rep, mb.features[2].conv[0][0].rep
    assert (len(dw_s1.rpr_conv), dw_s1.rpr_scale is not None, dw_s1.rpr_skip is not None) == (3, True, True)
    assert (dw_s2.rpr_scale is not None, dw_s2.rpr_skip is None) == (True, True)       # stride 2: no skip
    assert (expand.rpr_scale is None, expand.rpr_skip is None) == (True, True)         # 1x1, 16 -> 96
    assert isinstance(mb.features[1].conv[0][1], DeferredBatchNorm)
    twin = copy.deepcopy(mb)  # the BN placeholder must follow its own RepConv2d into a copy
    assert twin.features[1].conv[0][1].source is twin.features[1].conv[0][0]

    sh = torchvision.models.shufflenet_v2_x1_0(weights=None)
    _, layers = add_rep_branches(sh, inplace=True)
    assert sum(".branch1." in n for n in layers) == 6 and not [n for n in layers if n.startswith(("conv1", "conv5"))]
    assert sh.stage2[1].branch2[0].rep.rpr_skip is not None                            # 1x1, 58 -> 58, stride 1

    gn = create_model("ghostnetv2_050")
    _, layers = add_rep_branches(gn, inplace=True)
    assert {n.split(".")[-3] for n in layers} == {"primary_rpr_conv", "cheap_rpr_conv", "dw_rpr_conv"}
    assert sum("dw_rpr_conv" in n for n in layers) == 4 and "short_conv" not in str(layers)


def test_include_rule_and_options():
    model = torchvision.models.mobilenet_v2(weights=None, width_mult=0.5)
    rep, layers = add_rep_branches(model, num_conv_branches=2, use_identity_branch=False,
                                   include=lambda name, conv: conv.groups > 1)
    assert len(layers) == 17 and all(rep.get_submodule(n).rep.groups > 1 for n in layers)
    assert isinstance(model.features[1].conv[0][0], nn.Conv2d)   # inplace=False left the original alone
    assert all(len(rep.get_submodule(n).rep.rpr_conv) == 2 and rep.get_submodule(n).rep.rpr_skip is None
               for n in layers)
    # the train form trains: every branch gets a gradient
    rep.train()
    rep(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in rep.features[1].conv[0][0].parameters())


def test_bad_input_raises_clear_errors():
    mb = torchvision.models.mobilenet_v2(weights=None, width_mult=0.5)
    for bad in (dict(num_conv_branches=0), dict(num_conv_branches=2.0), dict(use_scale_branch=1)):
        with pytest.raises(ValueError, match="num_conv_branches|use_scale_branch"):
            add_rep_branches(mb, **bad)
    with pytest.raises(ValueError, match="adds no branch"):
        add_rep_branches(mb, 1, False, False)
    with pytest.raises(ValueError, match="no convertible layer.*include"):
        add_rep_branches(torchvision.models.resnet18(weights=None))    # BNs are attributes, not in a Sequential
    with pytest.raises(ValueError, match="no convertible layer"):
        add_rep_branches(mb, include=lambda name, conv: False)
    with pytest.raises(ValueError, match="already has re-parameterizable branches"):
        add_rep_branches(add_rep_branches(mb).model)
    with pytest.raises(ValueError, match="already has re-parameterizable branches"):
        add_rep_branches(GhostNetV3(0.5, 10))                            # GhostNetV3 itself, not GhostNetV2
    dilated = nn.Sequential(nn.Conv2d(4, 4, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match=r"cannot convert layer 0: .*padding"):
        add_rep_branches(dilated, include=lambda name, conv: True)


def test_model_names():
    assert set(MODEL_BUILDERS) >= {"mobilenetv2_100", "shufflenetv2_100", "ghostnetv2_100", "mobilenetv2_100_rep",
                                   "shufflenetv2_100_rep", "ghostnetv2_100_rep"}
    plain, rep = create_model("shufflenetv2_050", 10), create_model("shufflenetv2_050_rep", 10)
    assert params(plain) == params(torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=10))
    assert params(rep) == params(add_rep_branches(plain).model)
    # the switches decide (a Recipe always passes them); the _rep suffix only sets their defaults
    assert params(create_model("shufflenetv2_050", 10, num_conv_branches=3, use_scale_branch=True,
                              use_identity_branch=True)) == params(rep)
    assert params(create_model("ghostnetv2_050_rep", 10)) == params(GhostNetV3(0.5, 10))
    assert isinstance(create_model("mobilenetv2_050_rep", 10, deploy=True).features[1].conv[1], nn.Conv2d)
    with pytest.raises(ValueError, match="valid names: ghostnetv3_050, .*mobilenetv2_050"):
        create_model("mobilenetv3_100")
    with pytest.raises(ValueError, match="in_chans"):
        create_model("mobilenetv2_050", in_chans=1)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("mobilenetv2_050", num_classes=0)
    # ShuffleNetV2 has no dropout in torchvision; drop_rate adds one before fc (train mode only)
    model = create_model("shufflenetv2_050", 10, drop_rate=0.5)
    feats = torch.ones(4, 1024)
    model.train()
    torch.manual_seed(0)
    dropped = model.fc(feats)
    assert not torch.allclose(dropped, nn.functional.linear(feats, model.fc.weight, model.fc.bias))
    model.eval()
    torch.testing.assert_close(model.fc(feats), nn.functional.linear(feats, model.fc.weight, model.fc.bias))


def test_names_reach_create_model_and_recipe():
    import gv3lite
    from gv3lite.recipe import Recipe
    from gv3lite.models import build_model as build_from_recipe
    assert set(MODEL_BUILDERS) <= set(gv3lite.list_models())
    model = gv3lite.create_model("mobilenetv2_050_rep", num_classes=10, num_conv_branches=2)
    assert len(model.features[1].conv[0][0].rep.rpr_conv) == 2
    with pytest.raises(ValueError, match="unknown keyword.*pretrained"):
        gv3lite.create_model("mobilenetv2_050", pretrained=True)
    recipe = Recipe(model="shufflenetv2_050", drop_rate=0.0)  # the recipe's branch switches (3, True, True) apply
    assert params(build_from_recipe(recipe, 10)) == params(create_model("shufflenetv2_050_rep", 10))
