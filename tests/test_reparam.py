"""Re-parameterization: fusion math, the generic RepConvBN block, and exactness of the fused GhostNetV3."""
import pytest
import torch
import torch.nn as nn

from gv3lite.reparam import (RepConvBN, fuse_conv_bn, identity_kernel, pad_kernel, randomize_batchnorm,
                             reparameterize)


def batchnorms(module):
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


# ---------------------------------------------------------------- fusion math

def test_fuse_conv_bn_matches_conv_then_bn():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True).double()
    bn = randomize_batchnorm(nn.BatchNorm2d(6).double()).eval()
    x = torch.randn(2, 4, 7, 5, dtype=torch.float64)
    kernel, bias = fuse_conv_bn(conv.weight, bn, conv.bias)
    y = nn.functional.conv2d(x, kernel, bias, padding=1)
    torch.testing.assert_close(y, bn(conv(x)), atol=1e-12, rtol=0)


@pytest.mark.parametrize("channels,groups", [(6, 1), (6, 2), (6, 6)])
def test_identity_kernel_is_identity(channels, groups):
    x = torch.randn(2, channels, 5, 4, dtype=torch.float64)
    k = identity_kernel(channels, groups, 3, dtype=torch.float64)
    assert k.shape == (channels, channels // groups, 3, 3)
    torch.testing.assert_close(nn.functional.conv2d(x, k, padding=1, groups=groups), x, atol=0, rtol=0)


def test_pad_kernel_keeps_output_at_stride_2():
    x = torch.randn(1, 3, 9, 8, dtype=torch.float64)
    k1 = torch.randn(5, 3, 1, 1, dtype=torch.float64)
    k5 = pad_kernel(k1, 5)
    assert k5.shape == (5, 3, 5, 5)
    torch.testing.assert_close(nn.functional.conv2d(x, k5, stride=2, padding=2),
                               nn.functional.conv2d(x, k1, stride=2), atol=1e-14, rtol=0)
    with pytest.raises(ValueError, match="centre"):
        pad_kernel(torch.zeros(1, 1, 3, 3), 4)


def test_identity_kernel_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        identity_kernel(6, 4, 3)
    with pytest.raises(ValueError, match="odd"):
        identity_kernel(4, 1, 2)


def test_unfusable_norms_are_refused():
    conv = nn.Conv2d(3, 4, 1, bias=False)
    with pytest.raises(ValueError, match="track_running_stats"):
        fuse_conv_bn(conv.weight, nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match="BatchNorm-like"):
        fuse_conv_bn(conv.weight, nn.GroupNorm(2, 4))
    with pytest.raises(ValueError, match="output channels"):
        fuse_conv_bn(conv.weight, nn.BatchNorm2d(5))


def test_bn_subclass_and_timm_batchnormact_fuse():
    from timm.layers import BatchNormAct2d

    class MyBN(nn.BatchNorm2d):
        pass

    torch.manual_seed(0)
    w = torch.randn(4, 3, 1, 1, dtype=torch.float64)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    for bn in (MyBN(4), BatchNormAct2d(4, apply_act=False), nn.BatchNorm2d(4, affine=False)):
        bn = randomize_batchnorm(bn.double()).eval()
        k, b = fuse_conv_bn(w, bn)
        torch.testing.assert_close(nn.functional.conv2d(x, k, b), bn(nn.functional.conv2d(x, w)),
                                   atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="not linear"):
        fuse_conv_bn(w, BatchNormAct2d(4, act_layer=nn.ReLU))


# ---------------------------------------------------------------- RepConvBN

@pytest.mark.parametrize("cfg", [
    dict(in_ch=8, out_ch=8, kernel_size=3),                                    # all 5 branches
    dict(in_ch=8, out_ch=8, kernel_size=3, groups=8, act=nn.ReLU()),           # depthwise, MobileNet style
    dict(in_ch=8, out_ch=16, kernel_size=5, stride=2, groups=4),               # no skip (shapes differ)
    dict(in_ch=6, out_ch=6, kernel_size=1, num_conv_branches=4),               # 1x1: no scale branch
    dict(in_ch=6, out_ch=6, kernel_size=3, num_conv_branches=1, use_scale_branch=False,
         use_identity_branch=False),                                           # plain conv + BN
])
def test_repconvbn_fuses_exactly(cfg):
    torch.manual_seed(0)
    block = randomize_batchnorm(RepConvBN(**cfg)).double().eval()
    x = torch.randn(2, cfg["in_ch"], 11, 8, dtype=torch.float64)
    fused = reparameterize(block)
    assert block.deploy is False and fused.deploy is True   # inplace=False leaves the original alone
    assert not batchnorms(fused)
    assert isinstance(fused.conv, nn.Conv2d) and fused.conv.bias is not None
    torch.testing.assert_close(fused(x), block(x), atol=1e-12, rtol=0)


def test_repconvbn_branch_placement():
    b = RepConvBN(8, 8, 3)
    assert len(b.rpr_conv) == 3 and b.rpr_scale is not None and b.rpr_skip is not None
    b = RepConvBN(8, 16, 3)
    assert b.rpr_skip is None
    b = RepConvBN(8, 8, 3, stride=2)
    assert b.rpr_skip is None and b.rpr_scale.conv.stride == (2, 2)
    assert RepConvBN(8, 8, 1).rpr_scale is None
    with pytest.raises(ValueError, match="odd"):
        RepConvBN(8, 8, 2)
    with pytest.raises(ValueError, match="num_conv_branches"):
        RepConvBN(8, 8, 3, num_conv_branches=0)
    with pytest.raises(ValueError, match="use_scale_branch"):
        RepConvBN(8, 8, 3, use_scale_branch="yes")


def test_repconvbn_deploy_constructor_loads_fused_state_dict():
    block = randomize_batchnorm(RepConvBN(4, 4, 3)).eval()
    fused = reparameterize(block)
    direct = RepConvBN(4, 4, 3, deploy=True)
    direct.load_state_dict(fused.state_dict(), strict=True)
    x = torch.randn(1, 4, 6, 6)
    torch.testing.assert_close(direct(x), block(x), atol=1e-5, rtol=0)


def test_reparameterize_warns_in_train_mode_and_uses_running_stats():
    block = randomize_batchnorm(RepConvBN(4, 4, 3)).double()
    with pytest.warns(UserWarning, match="train"):
        fused = reparameterize(block)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    block.eval()
    torch.testing.assert_close(fused(x), block(x), atol=1e-12, rtol=0)
    assert fused.training  # the train/eval flag is kept


def test_reparameterize_inplace_twice_is_noop_and_trainable():
    model = nn.Sequential(RepConvBN(3, 8, 3, stride=2, act=nn.ReLU()), RepConvBN(8, 8, 3)).eval()
    randomize_batchnorm(model)
    out = reparameterize(model, inplace=True)
    assert out is model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    reparameterize(model, inplace=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    model.train()
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    assert all(p.grad is not None and p.requires_grad for p in model.parameters())


# ---------------------------------------------------------------- Ghost modules and the whole network

from gv3lite import create_model, list_models  # noqa: E402
from gv3lite.ghost import GhostBottleneckV3, GhostModuleV3  # noqa: E402


def fused_blocks_have_no_bn(model):
    """No BN (and no rpr branch) is left inside the fused parts: primary/cheap convs and the depthwise stage."""
    for m in model.modules():
        if isinstance(m, GhostModuleV3):
            assert m.deploy and not batchnorms(m.primary_conv) and not batchnorms(m.cheap_operation)
        if isinstance(m, GhostBottleneckV3):
            assert m.deploy and (m.conv_dw is None or isinstance(m.conv_dw, nn.Conv2d))
    assert not [n for n, _ in model.named_modules() if "_rpr_" in n]


@pytest.mark.parametrize("name", list_models()[:4])  # the GhostNetV3 names (models.py registers others)
def test_network_fusion_is_exact(name):
    """Randomized BN statistics, eval mode, non-square input: fp32 <= 1e-5, fp64 <= 1e-10."""
    torch.manual_seed(0)
    model = randomize_batchnorm(create_model(name, num_classes=10)).eval()
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        fused = reparameterize(model)
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=0)
        model64, x64 = model.double(), x.double()
        torch.testing.assert_close(reparameterize(model64)(x64), model64(x64), atol=1e-10, rtol=0)
    fused_blocks_have_no_bn(fused)
    assert sum(p.numel() for p in fused.parameters()) < sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("opts", [dict(num_conv_branches=1), dict(num_conv_branches=2, use_scale_branch=False),
                                  dict(num_conv_branches=4, use_identity_branch=False)])
def test_ablation_variants_fuse_exactly(opts):
    model = randomize_batchnorm(create_model("ghostnetv3_050", num_classes=10, **opts)).double().eval()
    x = torch.randn(1, 3, 64, 72, dtype=torch.float64)
    fused = reparameterize(model)
    torch.testing.assert_close(fused(x), model(x), atol=1e-10, rtol=0)
    ref = create_model("ghostnetv3_050", num_classes=10, deploy=True)
    assert set(fused.state_dict()) == set(ref.state_dict())  # every variant fuses to the same deploy graph


@pytest.mark.parametrize("cfg", [
    dict(in_ch=12, out_ch=24, ratio=3),                             # init 8, new 16: no skip branch
    dict(in_ch=12, out_ch=25, ratio=3, dw_size=5, use_dfc=True),    # out not a multiple of ratio: sliced
    dict(in_ch=12, out_ch=15, ratio=2, kernel_size=3, stride=2),    # odd out, k > 1 primary with scale branch
])
def test_ghost_module_v3_general_ratio(cfg):
    torch.manual_seed(0)
    m = randomize_batchnorm(GhostModuleV3(**cfg)).double().eval()
    assert m.cheap_rpr_skip is None if cfg["ratio"] == 3 else m.cheap_rpr_skip is not None
    x = torch.randn(2, cfg["in_ch"], 10, 9, dtype=torch.float64)
    y = m(x)
    assert y.shape[1] == cfg["out_ch"]
    fused = reparameterize(m)
    torch.testing.assert_close(fused(x), y, atol=1e-10, rtol=0)
    assert not batchnorms(fused.primary_conv) and not batchnorms(fused.cheap_operation)


def test_syncbatchnorm_model_fuses_on_cpu_in_eval():
    model = nn.SyncBatchNorm.convert_sync_batchnorm(create_model("ghostnetv3_050", num_classes=10))
    model = randomize_batchnorm(model).eval()
    assert isinstance(model.blocks[1][0].ghost1.cheap_rpr_skip, nn.SyncBatchNorm)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(reparameterize(model)(x), model(x), atol=1e-5, rtol=0)


def test_bottleneck_reparameterize_converts_itself_fully():
    block = randomize_batchnorm(GhostBottleneckV3(8, 24, 16, 5, stride=2, se_ratio=0.25, use_dfc=True)).double().eval()
    x = torch.randn(1, 8, 12, 10, dtype=torch.float64)
    y = block(x)
    block.reparameterize()
    assert block.ghost1.deploy and block.ghost2.deploy and isinstance(block.conv_dw, nn.Conv2d)
    torch.testing.assert_close(block(x), y, atol=1e-10, rtol=0)


def test_network_twice_is_noop_and_deploy_model_trains():
    model = randomize_batchnorm(create_model("ghostnetv3_050", num_classes=10)).eval()
    fused = reparameterize(model)
    again = reparameterize(fused)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in fused.state_dict().items())
    direct = create_model("ghostnetv3_050", num_classes=10, deploy=True)
    direct.load_state_dict(fused.state_dict(), strict=True)
    fused.train()
    loss = nn.functional.cross_entropy(fused(torch.randn(2, 3, 64, 64)), torch.tensor([1, 2]))
    loss.backward()
    grads = [p.grad for p in fused.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_timm_model_converts_through_our_protocol():
    timm = pytest.importorskip("timm")
    ref = randomize_batchnorm(timm.create_model("ghostnetv3_050", num_classes=10)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fused = reparameterize(ref)
        torch.testing.assert_close(fused(x), ref(x), atol=1e-5, rtol=0)
    assert set(fused.state_dict()) == set(create_model("ghostnetv3_050", num_classes=10, deploy=True).state_dict())


def test_protocol_switch_to_deploy_and_fuse_are_honoured():
    class SwitchBlock(nn.Module):  # RepVGG / timm style: converts itself in place
        def __init__(self):
            super().__init__()
            self.inner = RepConvBN(4, 4, 3)

        def switch_to_deploy(self):
            self.inner.reparameterize()
            self.switched = True

    class FuseBlock(nn.Module):  # timm LeViT style: returns a replacement module
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x))

        def fuse(self):
            from gv3lite.reparam import fused_conv
            return fused_conv(self.conv, *fuse_conv_bn(self.conv.weight, self.bn))

    model = randomize_batchnorm(nn.Sequential(SwitchBlock(), FuseBlock())).eval()
    fused = reparameterize(model)
    assert fused[0].switched and fused[0].inner.deploy and isinstance(fused[1], nn.Conv2d)
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(fused[1](x), model[1](x), atol=1e-5, rtol=0)
