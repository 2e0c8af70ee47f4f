"""The fast train form (dense 1x1 branch sums as one conv from the input's moments,
``gv3lite.branch_sums.moment_branch_sum``) is exact:
in float64 its outputs, parameter gradients and BatchNorm running statistics equal those of timm's per-branch
``ghostnetv3_*`` loaded with the same state_dict (and of our own per-branch form), at every width."""
import pytest
import torch
import torch.nn as nn

import gv3lite
from gv3lite.branch_sums import moment_branch_sum, set_fast_branches
from gv3lite.reparam import RepConvBN, randomize_batchnorm

timm = pytest.importorskip("timm")

WIDTHS = ["ghostnetv3_050", "ghostnetv3_100", "ghostnetv3_130", "ghostnetv3_160"]


def _pair(name, channels_last=False):
    """(ours: fast train form, timm's per-branch reference) with the same random weights and BN statistics."""
    torch.manual_seed(0)
    ours = gv3lite.create_model(name, num_classes=7, drop_rate=0.0).double()
    randomize_batchnorm(ours, seed=1)
    ref = timm.create_model(name, num_classes=7, drop_rate=0.0).double()
    ref.load_state_dict(ours.state_dict())
    if channels_last:
        ours, ref = ours.to(memory_format=torch.channels_last), ref.to(memory_format=torch.channels_last)
    return ours, ref


def _assert_rel(actual, expected, tol, what, floor=0.0):
    """max |actual - expected| <= tol * max |expected| (the scale is at least ``floor``)."""
    scale = max(expected.abs().max().item(), floor)
    err = (actual - expected).abs().max().item()
    assert err <= tol * max(scale, 1e-300), f"{what}: max |diff| {err:.3e} vs max |ref| {scale:.3e}"


def _train_step(model, x, seed=2):
    model.train()
    out = model(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    (out * weights).sum().backward()
    return out.detach()


@pytest.mark.parametrize("name", WIDTHS)
def test_fast_train_form_matches_timm_per_branch(name):
    ours, ref = _pair(name)
    x = torch.randn(2, 3, 34, 42, dtype=torch.float64)  # non-square
    out, out_ref = _train_step(ours, x), _train_step(ref, x)
    _assert_rel(out, out_ref, 1e-8, "train-mode logits")
    grads, ref_grads = dict(ours.named_parameters()), dict(ref.named_parameters())
    assert grads.keys() == ref_grads.keys()
    # Some gradients are exactly zero in exact arithmetic (e.g. the bias of a BN whose output goes through another
    # train-mode BN: a per-channel shift is normalized away) and are float noise (~1e-15) in both models; they are
    # compared against a floor of 1e-9 x the largest gradient of the whole network instead of their own size.
    floor = 1e-9 * max(p.grad.abs().max().item() for p in ref.parameters())
    for key, p in grads.items():
        assert p.grad is not None, key
        _assert_rel(p.grad, ref_grads[key].grad, 1e-7, f"grad of {key}", floor)
    state, ref_state = ours.state_dict(), ref.state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in ref_state.items()}
    for key, value in state.items():
        if "running" in key:
            _assert_rel(value, ref_state[key], 1e-8, key)
        elif "num_batches_tracked" in key:
            assert value.item() == ref_state[key].item() == 1, key
    # eval mode (running statistics), batch of one
    ours.eval(), ref.eval()
    with torch.no_grad():
        one = torch.randn(1, 3, 40, 34, dtype=torch.float64)
        _assert_rel(ours(one), ref(one), 1e-8, "eval logits, batch 1")


def test_fast_equals_own_per_branch_form_over_steps_channels_last():
    """Two SGD steps: the fast model (channels_last) and our per-branch model stay equal, running stats too."""
    ours, _ = _pair("ghostnetv3_050", channels_last=True)
    per_branch = set_fast_branches(gv3lite.create_model("ghostnetv3_050", num_classes=7, drop_rate=0.0)
                                      .double(), False)
    per_branch.load_state_dict(ours.state_dict())
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (ours, per_branch)]
    for step in range(2):  # two steps: the second one starts from updated weights and running statistics
        x = torch.randn(3, 3, 40, 34, dtype=torch.float64, generator=torch.Generator().manual_seed(step))
        for model, opt in zip((ours, per_branch), opts):
            opt.zero_grad()
            _train_step(model, x.contiguous(memory_format=torch.channels_last) if model is ours else x, seed=step)
            opt.step()
    for (key, value), (ref_key, ref_value) in zip(ours.state_dict().items(), per_branch.state_dict().items()):
        assert key == ref_key
        _assert_rel(value.double(), ref_value.double(), 1e-7, key)


@pytest.mark.parametrize("in_ch,out_ch,k", [(6, 10, 1), (6, 6, 1), (12, 3, 1), (6, 6, 3)])
def test_fast_branch_sum_generic_block(in_ch, out_ch, k):
    """RepConvBN: 1x1 blocks with and without the BN skip branch (the moment method), a block with C_in > 4 C_out
    and a 3x3 block (per-branch fallback): fast == per-branch in train and eval mode, running stats included."""
    torch.manual_seed(0)
    block = RepConvBN(in_ch, out_ch, k, num_conv_branches=3, act=nn.ReLU()).double()
    randomize_batchnorm(block, seed=3)
    twin = RepConvBN(in_ch, out_ch, k, num_conv_branches=3, act=nn.ReLU(), fast_branches=False).double()
    twin.load_state_dict(block.state_dict())
    assert (block.rpr_skip is not None) == (in_ch == out_ch)
    x = torch.randn(2, in_ch, 9, 11, dtype=torch.float64, requires_grad=True)
    x_twin = x.detach().clone().requires_grad_()
    for m, inp in ((block, x), (twin, x_twin)):
        _train_step(m, inp)
    _assert_rel(x.grad, x_twin.grad, 1e-7, "input grad")
    for (key, p), (_, p_twin) in zip(block.named_parameters(), twin.named_parameters()):
        _assert_rel(p.grad, p_twin.grad, 1e-7, f"grad of {key}", 1e-9 * x_twin.grad.abs().max().item())
    for (key, v), (_, v_twin) in zip(block.state_dict().items(), twin.state_dict().items()):
        _assert_rel(v.double(), v_twin.double(), 1e-8, key)
    block.eval(), twin.eval()
    with torch.no_grad():
        _assert_rel(block(x), twin(x), 1e-8, "eval output")


def test_moment_branch_sum_declines_what_it_cannot_reproduce():
    """Cumulative-average BN (momentum=None), eval mode and a single pixel are left to the per-branch sum."""
    block = RepConvBN(4, 4, 1, num_conv_branches=2).double()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    assert moment_branch_sum(x, block.branches()) is not None
    assert moment_branch_sum(x[:1, :, :1, :1], block.branches()) is None
    block.eval()
    assert moment_branch_sum(x, block.branches()) is None
    block.train()
    block.rpr_conv[1].bn1.momentum = None
    assert moment_branch_sum(x, block.branches()) is None
    twin = RepConvBN(4, 4, 1, num_conv_branches=2, fast_branches=False).double()
    twin.load_state_dict(block.state_dict())
    twin.rpr_conv[1].bn1.momentum = None
    torch.testing.assert_close(block(x), twin(x))
    with pytest.raises(ValueError, match="True or False"):
        set_fast_branches(block, "yes")


def test_deploy_evaluation_equals_train_form_evaluation(tiny_datasets):
    """The trainer evaluates the deploy form (``gv3lite.train.deploy_form``): same top-1/top-5 and, to float
    rounding, the same loss as the train form in eval mode, on real images; the live model keeps its mode."""
    from gv3lite.data import build_loader
    from gv3lite.train import deploy_form, evaluate
    torch.manual_seed(0)
    model = randomize_batchnorm(gv3lite.create_model("ghostnetv3_050", num_classes=4), seed=5)
    model = model.to(memory_format=torch.channels_last).train()
    loader = build_loader(tiny_datasets[1], 40, train=False)
    deployed = deploy_form(model)
    assert model.training and not any("rpr" in name for name, _ in deployed.named_modules())
    train_form, deploy = evaluate(model, loader), evaluate(deployed, loader)
    assert train_form["top1"] == deploy["top1"] and train_form["top5"] == deploy["top5"]
    assert abs(train_form["loss"] - deploy["loss"]) <= 1e-5 * abs(train_form["loss"])
