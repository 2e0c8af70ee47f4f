"""Structural re-parameterization: fold parallel conv + BN branches into one conv with bias (GhostNetV3 §3.1).

Owns:
* the fusion math, written once and used by every block: ``batchnorm_statistics``, ``fuse_conv_bn``,
  ``identity_kernel``, ``pad_kernel``, ``fuse_branch``, ``fuse_branches``, ``fused_conv``;
* ``RepConvBN``, a generic multi-branch block (k x k conv+BN branches, a 1x1 "scale" branch, a BN "skip" branch;
  its train-form branch sum is ``gv3lite.branch_sums.branch_sum``, the fast exact one);
* the block protocol and ``reparameterize(model, inplace=False)``, which turns a train-form model into its deploy
  (fused) form, and ``randomize_batchnorm`` (BN statistics that make fusion tests meaningful).

Math (paper §3.1, following RepVGG / MobileOne). A conv kernel W (C_out, C_in/g, kh, kw) followed by a BatchNorm
with running mean mu, running variance var, affine gamma, beta and eps is, in eval mode, one conv with
    W' = W * s,   b' = beta + (b_conv - mu) * s,   s = gamma / sqrt(var + eps)   (per output channel).
A BN-only "skip" branch is the same with W = the identity kernel; a 1x1 "scale" branch is zero-padded to k x k.
Branch outputs are summed before the activation, and convolution is linear, so the fused kernel and bias are the
sums over branches. The fusion reads the *running* statistics: it reproduces the train-form model in ``eval()``
mode exactly (up to float rounding), not its ``train()``-mode output, which uses batch statistics.

Block protocol (what ``reparameterize`` converts). A module takes part if it has a method, called without
arguments, that converts it *in place* to its deploy form and is a no-op when already converted:
``reparameterize()`` (ours, MobileOne) or ``switch_to_deploy()`` (RepVGG, timm GhostNetV3). A timm-style
``fuse()`` that *returns* a replacement module is also honoured: the returned module takes the old one's place.
At most one of these is called per module, in that order of preference; then its children are visited.
"""
import copy
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from gv3lite.branch_sums import branch_sum
from gv3lite.layers import ConvBnAct


# ----------------------------------------------------------------------------------------------------------------
# Fusion math
# ----------------------------------------------------------------------------------------------------------------

def batchnorm_statistics(bn):
    """Read ``(running_mean, running_var, gamma, beta, eps)`` from any BatchNorm-like module.

    Works for ``nn.BatchNorm2d``, ``nn.SyncBatchNorm``, subclasses such as timm's ``BatchNormAct2d`` (only when its
    activation and drop are identities) and anything else exposing those attributes. ``affine=False`` gives
    gamma = 1, beta = 0. Tensors have shape (C,).

    Raises:
        ValueError: ``bn`` has no running statistics (``track_running_stats=False``: its output depends on the
            batch, so no fixed conv reproduces it), is not BatchNorm-like (e.g. GroupNorm, Identity), or carries a
            non-identity activation that a conv bias cannot absorb.
    """
    name = type(bn).__name__
    if not hasattr(bn, "running_var") or not hasattr(bn, "eps"):
        raise ValueError(f"cannot fuse a {name} into a conv: expected a BatchNorm-like module with running_mean, "
                         "running_var, weight, bias and eps")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"cannot fuse {name} with track_running_stats=False: without running statistics its "
                         "output depends on the batch; train with tracked statistics to re-parameterize")
    for attr in ("act", "drop"):  # timm BatchNormAct2d folds an activation / dropout into the norm layer
        extra = getattr(bn, attr, None)
        if isinstance(extra, nn.Module) and not isinstance(extra, (nn.Identity, nn.Dropout)):
            raise ValueError(f"cannot fuse {name}: its {attr} ({type(extra).__name__}) is not linear; "
                             "only a BN followed by identity can be folded into a conv")
    mean, var = bn.running_mean, bn.running_var
    gamma = bn.weight if getattr(bn, "weight", None) is not None else torch.ones_like(var)
    beta = bn.bias if getattr(bn, "bias", None) is not None else torch.zeros_like(mean)
    return mean, var, gamma, beta, bn.eps


def fuse_conv_bn(kernel, bn, conv_bias=None):
    """Fold a BatchNorm that follows a conv into the conv's kernel and bias.

    Args:
        kernel: conv weight (C_out, C_in/groups, kh, kw).
        bn: BatchNorm-like module over C_out channels (see ``batchnorm_statistics``).
        conv_bias: optional conv bias (C_out,); ``None`` for bias-free convs.

    Returns:
        ``(kernel, bias)`` of shapes (C_out, C_in/groups, kh, kw) and (C_out,): ``W * s`` and
        ``beta + (conv_bias - mean) * s`` with ``s = gamma / sqrt(var + eps)``.

    Raises:
        ValueError: channel counts differ, or ``bn`` cannot be fused (see ``batchnorm_statistics``).
    """
    mean, var, gamma, beta, eps = batchnorm_statistics(bn)
    if kernel.shape[0] != mean.numel():
        raise ValueError(f"conv has {kernel.shape[0]} output channels but the BatchNorm has {mean.numel()}")
    scale = gamma / torch.sqrt(var + eps)
    if conv_bias is None:
        conv_bias = torch.zeros_like(mean)
    return kernel * scale.reshape(-1, 1, 1, 1), beta + (conv_bias - mean) * scale


def _pair(size):
    return (size, size) if isinstance(size, int) else tuple(size)


def identity_kernel(channels, groups, kernel_size, dtype=None, device=None):
    """The conv kernel that maps a (B, C, H, W) input to itself (stride 1, padding ``kernel_size // 2``).

    Shape (C, C/groups, kh, kw): zero except a 1 at the centre tap of input channel ``i mod (C/groups)`` for
    output channel i (for depthwise, groups = C, that is channel 0 of each one-channel group).

    Raises:
        ValueError: ``channels`` not divisible by ``groups`` or an even kernel size (no centre tap).
    """
    kh, kw = _pair(kernel_size)
    if channels % groups:
        raise ValueError(f"channels ({channels}) must be divisible by groups ({groups})")
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"identity needs an odd kernel size to have a centre tap, got {(kh, kw)}")
    in_per_group = channels // groups
    kernel = torch.zeros(channels, in_per_group, kh, kw, dtype=dtype, device=device)
    index = torch.arange(channels, device=device)
    kernel[index, index % in_per_group, kh // 2, kw // 2] = 1
    return kernel


def pad_kernel(kernel, kernel_size):
    """Zero-pad a (C_out, C_in/g, h, w) kernel symmetrically to ``kernel_size`` (e.g. 1x1 -> 3x3).

    The padded kernel gives the same output as the small one when the big conv's padding is larger by the
    same amount (a 1x1 with padding 0 equals its 3x3 padded version with padding 1, for any stride).

    Raises:
        ValueError: the target is smaller or the size difference is odd (the kernel cannot stay centred).
    """
    kh, kw = _pair(kernel_size)
    dh, dw = kh - kernel.shape[-2], kw - kernel.shape[-1]
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise ValueError(f"cannot centre a {tuple(kernel.shape[-2:])} kernel in {(kh, kw)}")
    return F.pad(kernel, [dw // 2, dw // 2, dh // 2, dh // 2])


def fuse_branch(branch, kernel_size, groups):
    """Equivalent ``(kernel, bias)`` of one branch, with the kernel padded to ``kernel_size``.

    A branch is either a conv followed by a BN (a module with attribute ``conv`` and ``bn1`` -- ours and timm's --
    or ``bn`` -- the official GhostNetV3 code), or a BN alone (the "skip" branch: BN(x) = BN(identity conv(x)),
    whose conv has ``groups`` groups).

    Raises:
        ValueError: the branch has a non-identity activation, or its norm layer cannot be fused.
    """
    if hasattr(branch, "conv"):
        conv = branch.conv
        bn = branch.bn1 if hasattr(branch, "bn1") else getattr(branch, "bn", None)
        if bn is None:
            raise ValueError(f"branch {type(branch).__name__} has a conv but no `bn1`/`bn` norm layer to fuse")
        act = getattr(branch, "act", None)
        if isinstance(act, nn.Module) and not isinstance(act, nn.Identity):
            raise ValueError(f"branch {type(branch).__name__} has an activation ({type(act).__name__}); "
                             "only linear conv+BN branches can be summed into one conv")
        kernel, bias = fuse_conv_bn(conv.weight, bn, conv.bias)
    else:
        mean = batchnorm_statistics(branch)[0]
        eye = identity_kernel(mean.numel(), groups, kernel_size, dtype=mean.dtype, device=mean.device)
        kernel, bias = fuse_conv_bn(eye, branch)
    return pad_kernel(kernel, kernel_size), bias


def fuse_branches(branches, kernel_size, groups):
    """Sum of ``fuse_branch`` over ``branches`` (``None`` entries are skipped): the kernel and bias of the one conv
    that equals the sum of all branch outputs. Returns ``(kernel (C_out, C_in/groups, kh, kw), bias (C_out,))``."""
    kernel = bias = 0
    for branch in branches:
        if branch is not None:
            k, b = fuse_branch(branch, kernel_size, groups)
            kernel, bias = kernel + k, bias + b
    return kernel, bias


def fused_conv(template, kernel, bias):
    """A new ``nn.Conv2d`` (with bias) holding ``kernel``/``bias``, with ``template``'s stride, padding, dilation,
    groups and padding mode (``template`` is the largest-kernel branch conv). Its parameters are ordinary leaf
    tensors, so the deploy model can still be trained."""
    conv = nn.Conv2d(template.in_channels, template.out_channels, tuple(kernel.shape[-2:]), template.stride,
                     template.padding, template.dilation, template.groups, bias=True,
                     padding_mode=template.padding_mode, device=kernel.device, dtype=kernel.dtype)
    with torch.no_grad():
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
    return conv


def check_branch_options(num_conv_branches, use_scale_branch, use_identity_branch):
    """Validate the re-parameterization switches shared by every block (issue-3 ablation).

    Raises:
        ValueError: ``num_conv_branches`` is not an int >= 1, or a ``use_*`` switch is not a bool.
    """
    if isinstance(num_conv_branches, bool) or not isinstance(num_conv_branches, int) or num_conv_branches < 1:
        raise ValueError(f"num_conv_branches must be an int >= 1 (1 = no extra conv branches), "
                         f"got {num_conv_branches!r}")
    for name, value in (("use_scale_branch", use_scale_branch), ("use_identity_branch", use_identity_branch)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")


# ----------------------------------------------------------------------------------------------------------------
# A generic re-parameterizable block
# ----------------------------------------------------------------------------------------------------------------

class RepConvBN(nn.Module):
    """Multi-branch conv block that folds into one conv: ``act(sum of branches)`` (GhostNetV3 §3.1, MobileOne).

    Train form, for input x (B, in_ch, H, W):
        y = act( sum_i BN_i(conv_kxk_i(x))  +  BN_s(conv_1x1(x))  +  BN_id(x) )
    with ``num_conv_branches`` k x k branches, the 1x1 "scale" branch when ``use_scale_branch`` and k > 1 (for
    k = 1 it would only repeat a conv branch), and the BN "skip" branch when ``use_identity_branch`` and shapes
    allow it (in_ch == out_ch, stride 1, "same" padding); otherwise that branch is simply absent.
    Deploy form: ``y = act(conv(x))`` with one biased conv. Output (B, out_ch, H', W') in both forms.

    Args:
        in_ch, out_ch: channels; kernel_size: odd int; stride: int; padding: default ``kernel_size // 2``;
        groups: conv groups (``in_ch`` = depthwise); num_conv_branches: >= 1;
        use_scale_branch, use_identity_branch: bools; act: an ``nn.Module`` (e.g. ``nn.ReLU()``) or None;
        deploy: build the fused form directly (to load a deploy state_dict).
        fast_branches: compute the branch sum by ``branch_sum``'s fast exact method where it applies (same
            numbers, faster); False calls the branches one by one. Switch later with ``set_fast_branches``.

    Raises:
        ValueError: even kernel size, bad switches, or a scale branch requested with padding < kernel_size // 2.
    """

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, padding=None, groups=1, num_conv_branches=3,
                 use_scale_branch=True, use_identity_branch=True, act=None, deploy=False, fast_branches=True):
        super().__init__()
        check_branch_options(num_conv_branches, use_scale_branch, use_identity_branch)
        self.fast_branches = fast_branches
        if not isinstance(kernel_size, int) or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd int, got {kernel_size!r}")
        padding = kernel_size // 2 if padding is None else padding
        self.kernel_size, self.groups = kernel_size, groups
        self.act = act if act is not None else nn.Identity()
        self.deploy = deploy
        if deploy:
            self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=True)
            return
        self.rpr_conv = nn.ModuleList([
            ConvBnAct(in_ch, out_ch, kernel_size, stride, padding, groups, act=None)
            for _ in range(num_conv_branches)])
        self.rpr_scale = None
        if use_scale_branch and kernel_size > 1:
            if padding < kernel_size // 2:
                raise ValueError(f"a 1x1 scale branch needs padding >= kernel_size // 2 to align with the "
                                 f"{kernel_size}x{kernel_size} branches (got padding={padding}); "
                                 "pass use_scale_branch=False")
            self.rpr_scale = ConvBnAct(in_ch, out_ch, 1, stride, padding - kernel_size // 2, groups, act=None)
        shapes_allow = in_ch == out_ch and stride == 1 and padding == kernel_size // 2
        self.rpr_skip = nn.BatchNorm2d(out_ch) if use_identity_branch and shapes_allow else None

    def branches(self):
        """The train-form branches, in a fixed order (conv branches, scale, skip); None entries are absent."""
        return [*self.rpr_conv, self.rpr_scale, self.rpr_skip]

    def forward(self, x):
        if self.deploy:
            return self.act(self.conv(x))
        return self.act(branch_sum(x, self.branches(), self.fast_branches))

    @torch.no_grad()
    def reparameterize(self):
        """Convert in place to the deploy form (one conv with bias, no BN). No-op if already fused."""
        if self.deploy:
            return
        kernel, bias = fuse_branches(self.branches(), self.kernel_size, self.groups)
        self.conv = fused_conv(self.rpr_conv[0].conv, kernel, bias)
        del self.rpr_conv, self.rpr_scale, self.rpr_skip
        self.deploy = True


# ----------------------------------------------------------------------------------------------------------------
# Whole-model conversion
# ----------------------------------------------------------------------------------------------------------------

def _convert(module):
    """Convert ``module`` by the block protocol, then its children; returns the (possibly replaced) module."""
    if callable(getattr(module, "reparameterize", None)):
        module.reparameterize()
    elif callable(getattr(module, "switch_to_deploy", None)):
        module.switch_to_deploy()
    elif callable(getattr(module, "fuse", None)):
        replacement = module.fuse()
        if isinstance(replacement, nn.Module):
            module = replacement
    for name, child in list(module.named_children()):
        new_child = _convert(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def reparameterize(model, inplace=False):
    """Return the deploy (fused) form of ``model``: every block following the block protocol (module docstring)
    becomes a single conv with bias; everything else is unchanged. Works on any ``nn.Module`` -- our GhostNetV3,
    timm's GhostNetV3, a torchvision model with ``RepConvBN`` blocks, or one block.

    Args:
        model: train-form (or partly / fully fused) model. Converting a fused model again is a no-op.
        inplace: convert ``model`` itself; default False converts and returns a deep copy.

    Returns:
        The deploy-form ``nn.Module`` (same train/eval flag; parameters are trainable leaf tensors).

    Warns:
        UserWarning if ``model`` is in ``train()`` mode: fusion always uses the BN running statistics, so the
        result equals the train-form model in ``eval()`` mode, not its batch-statistics ``train()`` output.
        Call ``model.eval()`` first to make that explicit.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"reparameterize expects an nn.Module, got {type(model).__name__}")
    if model.training:
        warnings.warn("reparameterize(): model is in train() mode; the fusion uses the BatchNorm running "
                      "statistics, so the deploy model matches the train-form model in eval() mode only. "
                      "Call model.eval() first to silence this warning.", UserWarning, stacklevel=2)
    if not inplace:
        model = copy.deepcopy(model)
    return _convert(model)


def randomize_batchnorm(model, seed=0):
    """Give every BatchNorm in ``model`` random running statistics and affine parameters, in place; return it.

    The check used to verify a fusion (as RepVGG's ``tools/verify.py`` does): with default statistics
    (mean 0, var 1, gamma 1, beta 0) a BN is nearly the identity, so a wrong fusion would still look exact.
    Draws mean ~ N(0, 0.2^2), var ~ U(0.5, 2), gamma ~ U(0.5, 1.5), beta ~ N(0, 0.2^2) from a generator seeded
    with ``seed``. Compare train and deploy forms in ``eval()`` mode afterwards.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model


__all__ = ["batchnorm_statistics", "fuse_conv_bn", "identity_kernel", "pad_kernel", "fuse_branch",
           "fuse_branches", "fused_conv", "check_branch_options", "moment_branch_sum", "per_channel_branch_sum",
           "branch_sum",
           "set_fast_branches", "RepConvBN", "reparameterize", "randomize_batchnorm"]
