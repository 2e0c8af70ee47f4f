"""The train-form branch sum of a re-parameterizable block, computed fast and exactly (issue 10).

Owns: ``branch_sum`` (the sum of a block's parallel conv+BN branches in train mode: batch statistics, running
statistics updated as torch's BatchNorm does), ``moment_branch_sum`` (the fast path: dense 1x1 branches computed as
one conv from the input's channel moments, exact), ``per_channel_branch_sum`` (depthwise branches) and
``set_fast_branches`` (switch a model between the fast and the textbook per-branch form). ``gv3lite.reparam``'s
blocks and ``gv3lite.ghost``'s Ghost module V3 call ``branch_sum``; ``tests/test_fast_train_form.py`` compares it with
timm's per-branch model in float64.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def _moment_pairs(x, branches):
    """The (C_out, C_in) matrices and BNs of ``branches`` if ``moment_branch_sum`` applies to them, else None."""
    mats, bns = [], []
    for branch in branches:
        if branch is None:
            continue
        if hasattr(branch, "conv"):
            conv, bn = branch.conv, branch.bn1
            linear = isinstance(getattr(branch, "act", None), (nn.Identity, type(None)))
            if (conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.padding != (0, 0) or conv.groups != 1
                    or conv.bias is not None or not linear):
                return None
            mats.append(conv.weight.reshape(conv.out_channels, conv.in_channels))
        else:  # a BN-only skip branch of a 1x1 block: the identity matrix
            bn = branch
            mats.append(torch.eye(bn.num_features, x.shape[1], dtype=x.dtype, device=x.device))
        if type(bn) is not nn.BatchNorm2d or not bn.affine or bn.running_mean is None or bn.momentum is None:
            return None
        bns.append(bn)
    if not bns or any((bn.eps, bn.momentum, bn.training) != (bns[0].eps, bns[0].momentum, True) for bn in bns):
        return None
    return mats, bns


def moment_branch_sum(x, branches):
    """``sum_b BN_b(conv_b(x))`` of parallel dense 1x1 conv+BN branches in ``train()`` mode, computed with ONE
    convolution: the exact batch statistics of every branch come from the input's channel moments.

    A 1x1 conv is a matrix W_b (C_out, C_in) applied at every pixel, so over the B*H*W pixels of the batch its
    output has mean ``W_b m`` and biased variance ``diag(W_b S W_b^T)``, where m (C_in,) and S (C_in, C_in) are the
    mean and (centred) covariance of the input's channels. Each BN then is an affine map ``a_b * z + c_b`` with
    ``a_b = gamma_b / sqrt(var_b + eps)``, so the sum of branches is the single 1x1 conv with matrix
    ``sum_b a_b W_b`` and bias ``sum_b (beta_b - a_b mean_b)``: the same function of x as the per-branch BN in
    training mode (PyTorch's ``batch_norm``), hence the same output and, through autograd, the same gradients.
    Cost: one C_in x C_in covariance (a GEMM) plus one conv, instead of n convs and n BN passes; it pays when
    C_in is not much larger than C_out (``branch_sum`` uses it for C_in <= 4 C_out). The BN running statistics are
    updated as ``nn.BatchNorm2d`` does (momentum, unbiased variance ``var * N / (N - 1)``, ``num_batches_tracked``).

    Args:
        x: input (B, C_in, H, W), N = B*H*W >= 2 pixels.
        branches: conv+BN branches (``conv`` 1x1, stride 1, no padding, groups 1, no bias; ``bn1`` a
            ``nn.BatchNorm2d`` in train mode) and BN-only skip branches (C_out = C_in); ``None`` entries skipped.

    Returns:
        (B, C_out, H, W), or ``None`` where the method does not apply (other kernels, eval mode, a BN with
        ``momentum=None``, differing eps/momentum, N < 2): then call the branches one by one.
    """
    pairs = _moment_pairs(x, branches)
    if pairs is None or x.shape[0] * x.shape[2] * x.shape[3] < 2:
        return None
    mats, bns = pairs
    pixels = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # (N, C_in); a view for channels_last input
    n = pixels.shape[0]
    mean_in = pixels.mean(0)
    centred = pixels - mean_in
    cov = centred.T @ centred / n                                             # (C_in, C_in), biased
    weights = torch.stack(mats)                                               # (branches, C_out, C_in)
    mean = weights @ mean_in                                                  # (branches, C_out)
    var = ((weights @ cov) * weights).sum(-1)                                 # (branches, C_out), biased
    scale = torch.stack([bn.weight for bn in bns]) * torch.rsqrt(var + bns[0].eps)
    kernel = (scale[..., None] * weights).sum(0)                              # (C_out, C_in)
    bias = (torch.stack([bn.bias for bn in bns]) - scale * mean).sum(0)
    _update_running_stats(bns, mean, var, n)
    return F.conv2d(x, kernel[..., None, None], bias)


def _per_channel_scale(branch, channels):
    """(weight (C,) or None for a BN-only skip branch, BN, stride) of a per-channel branch, or None if it is not one:
    a depthwise 1x1 conv (groups = C_in = C_out, no padding, no bias) + BN, or a BN alone."""
    if not hasattr(branch, "conv"):
        return (None, branch, 1) if isinstance(branch, nn.BatchNorm2d) else None
    conv = branch.conv
    if (conv.kernel_size == (1, 1) and conv.groups == conv.in_channels == conv.out_channels == channels
            and conv.padding == (0, 0) and conv.bias is None and conv.stride[0] == conv.stride[1]
            and isinstance(getattr(branch, "act", None), (nn.Identity, type(None)))):
        return conv.weight.reshape(-1), branch.bn1, conv.stride[0]
    return None


def per_channel_branch_sum(x, branches):
    """``sum_b BN_b(w_b * x)`` of per-channel branches in ``train()`` mode -- the depthwise 1x1 "scale" branch and
    the BN-only "skip" branch of a depthwise block -- as ONE per-channel affine map of x, exactly.

    For a per-channel weight w (C,), ``w * x`` has batch mean ``w m`` and biased variance ``w^2 v`` (m, v: the mean
    and biased variance of each input channel over batch and pixels), so each BN is ``a_b w_b x + c_b`` with
    ``a_b = gamma_b / sqrt(w_b^2 v + eps)``; the sum is ``(sum_b a_b w_b) x + sum_b (beta_b - a_b w_b m)``. A stride
    s (the scale branch of a stride-2 stage) samples x at every s-th pixel first. Running statistics are updated as
    ``nn.BatchNorm2d`` does. Input (B, C, H, W) -> (B, C, ceil(H/s), ceil(W/s)); returns ``None`` when a branch is
    not per-channel, the strides differ, or a BN cannot be reproduced (see ``moment_branch_sum``).
    """
    found = [_per_channel_scale(b, x.shape[1]) for b in branches if b is not None]
    if not found or any(f is None for f in found) or len({f[2] for f in found}) != 1:
        return None
    bns = [bn for _, bn, _ in found]
    if any(type(bn) is not nn.BatchNorm2d or not bn.affine or bn.running_mean is None or bn.momentum is None
           or (bn.eps, bn.momentum, bn.training) != (bns[0].eps, bns[0].momentum, True) for bn in bns):
        return None
    stride = found[0][2]
    xs = x[:, :, ::stride, ::stride] if stride > 1 else x
    n = xs.shape[0] * xs.shape[2] * xs.shape[3]
    if n < 2:
        return None
    var_in, mean_in = torch.var_mean(xs, dim=(0, 2, 3), unbiased=False)
    weights = torch.stack([torch.ones_like(mean_in) if w is None else w for w, _, _ in found])  # (branches, C)
    mean, var = weights * mean_in, weights ** 2 * var_in
    scale = torch.stack([bn.weight for bn in bns]) * torch.rsqrt(var + bns[0].eps)
    gain = (scale * weights).sum(0)
    bias = (torch.stack([bn.bias for bn in bns]) - scale * mean).sum(0)
    _update_running_stats(bns, mean, var, n)
    return xs * gain[:, None, None] + bias[:, None, None]


def _update_running_stats(bns, mean, var, n):
    """``nn.BatchNorm2d``'s running-statistic update with batch ``mean``/biased ``var`` (branches, C) over n values."""
    with torch.no_grad():
        momentum = bns[0].momentum
        for i, bn in enumerate(bns):
            bn.running_mean.mul_(1 - momentum).add_(mean[i].detach(), alpha=momentum)
            bn.running_var.mul_(1 - momentum).add_(var[i].detach(), alpha=momentum * n / (n - 1))
            bn.num_batches_tracked.add_(1)


def branch_sum(x, branches, fast=True):
    """``sum_b branch_b(x)`` over the train-form ``branches`` of a block (``None`` entries skipped).

    ``fast=True`` (training mode) uses the fastest exact method that applies, each measured faster by
    ``benchmarks/throughput.py``: ``moment_branch_sum`` for dense 1x1 branches when C_in <= 4 C_out, and for a
    depthwise block ``per_channel_branch_sum`` for its stride-1 1x1 scale and BN skip branches (the k x k branches
    are called one by one; for the stride-2 stage, whose only such branch is a strided scale branch, it measured
    slower and is not used). Two other candidates were measured slower on CPU and are not used: one conv with stacked
    outputs and one BN over the stacked channels (dense 0.9-1.1x, depthwise ~0.45x), and the depthwise k x k batch
    statistics from per-channel patch moments (unfold + batched covariance, ~0.3x). In ``eval()`` mode, and with
    ``fast=False``, each branch is called in turn: the textbook form taught in notebook 03.
    Shapes: (B, C_in, H, W) -> (B, C_out, H', W')."""
    if not fast or not branches[0].bn1.training:
        return sum(branch(x) for branch in branches if branch is not None)
    if x.shape[1] <= 4 * branches[0].bn1.num_features:
        y = moment_branch_sum(x, branches)
        if y is not None:
            return y
    per_channel = [b for b in branches if b is not None and (_per_channel_scale(b, x.shape[1]) or (0, 0, 0))[2] == 1]
    if per_channel and len(per_channel) < sum(b is not None for b in branches):
        y = per_channel_branch_sum(x, per_channel)
        if y is not None:
            return sum(b(x) for b in branches if b is not None and b not in per_channel) + y
    return sum(branch(x) for branch in branches if branch is not None)


def set_fast_branches(model, fast):
    """Switch every multi-branch block of ``model`` (those with a ``fast_branches`` attribute: ``RepConvBN``,
    ``GhostModuleV3``, ``GhostBottleneckV3``) between the fast exact computation (True, the default; see
    ``branch_sum``) and the per-branch one (False); returns ``model``. Raises ``ValueError`` if ``fast`` is not a
    bool."""
    if not isinstance(fast, bool):
        raise ValueError(f"fast must be True or False, got {fast!r}")
    for m in model.modules():
        if hasattr(m, "fast_branches"):
            m.fast_branches = fast
    return model
