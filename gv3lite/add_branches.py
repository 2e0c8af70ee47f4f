"""Adding GhostNetV3's re-parameterizable training-time branches to ordinary models (MobileNetV2, ShuffleNetV2,
GhostNetV2).

Owns: ``add_rep_branches`` (the conversion), its two blocks ``RepConv2d`` / ``DeferredBatchNorm`` and the default
layer-selection rule. The model names (``mobilenetv2_*_rep``, ...) that use it are registered in ``gv3lite.models``.

Why: the paper claims its training strategy is not GhostNet-specific -- it also lifts GhostNetV2, MobileNetV2 and
ShuffleNetV2 (arXiv 2404.11202, abstract). Its re-parameterization part (§3.1) replaces a conv+BN by a sum
of branches during training: ``num_conv_branches`` k x k conv+BN branches, a 1x1 conv+BN "scale" branch when k > 1,
and a BN-only "skip" (identity) branch when the shapes allow it (stride 1, in == out channels, "same" padding).

Which layers are converted by default (``include=None``), mirroring GhostNetV3:
* GhostNetV3 converts the primary 1x1 conv and the cheap depthwise conv of every Ghost module and the stride-2
  depthwise conv of a bottleneck -- every conv *inside a building block* that computes features -- and leaves the
  stem, the last 1x1 conv before the head, the head, SE, DFC attention and projection shortcuts alone.
* MobileNetV2 / ShuffleNetV2 (torchvision): every Conv2d directly followed by a BatchNorm2d inside an
  ``InvertedResidual`` block: MobileNetV2's expansion 1x1, depthwise 3x3 and projection 1x1 (the analogues of the
  primary conv, the cheap op / stride-2 depthwise conv, and ghost2's primary conv), ShuffleNetV2's 1x1 / depthwise
  3x3 / 1x1 of both branches. Not converted: the stem (``features.0`` / ``conv1``), the last conv (``features.18``
  / ``conv5``) and the classifier, as in GhostNetV3. ShuffleNetV2's ``branch1`` (stride-2 units only) is converted
  although it looks like a shortcut: its output is *concatenated* as half of the unit's features, not added as a
  residual, so it is a main computational path like GhostNet's depthwise stage. These are 50 layers in
  MobileNetV2 and 54 in ShuffleNetV2 (any width).
* GhostNetV2 = our GhostNetV3 built without branches (``num_conv_branches=1``, no scale, no skip): each
  ``*_rpr_conv`` slot holds one conv+BN. Conversion fills those slots (68 layers: 16 bottlenecks x 2 Ghost modules
  x (primary, cheap) + 4 stride-2 depthwise convs), so the result *is* the GhostNetV3 train form (same state_dict
  keys as ``create_model('ghostnetv3_*')``): "GhostNetV3 = GhostNetV2 + the training recipe". As in timm's
  GhostNetV3, the primary conv never gets a skip branch (it has no slot for one).

Design (torchvision models). A convertible pair is a Conv2d followed directly by a BatchNorm2d in an
``nn.Sequential`` (only there is "the BN acts on the conv output and nothing else" guaranteed by structure). The
Conv2d is replaced by a ``RepConv2d`` (holding a ``gv3lite.reparam.RepConvBN`` without activation: the branches,
each with its own BN) and the BatchNorm2d by a ``DeferredBatchNorm`` (identity while training). Both follow the
``fuse()`` part of the block protocol of ``gv3lite.reparameterize``: ``RepConv2d.fuse()`` returns a bias-free
Conv2d holding the fused kernel, ``DeferredBatchNorm.fuse()`` a BatchNorm2d that adds the fused bias b exactly
(weight 1, bias b, running_mean 0, running_var 1 - eps, so BN(x) = x + b in eval mode). The deploy model therefore
has the *original* architecture and its state_dict loads strictly into the unmodified torchvision model. No fusion
math is written here; it is all ``gv3lite.reparam``.

Rule for the deploy form: ``reparameterize(add_rep_branches(m).model)`` has the architecture of
``reparameterize(m)``: the torchvision model itself, and for GhostNetV2 the fused GhostNetV3 (``deploy=True``).
"""
from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn as nn
from torchvision.models.mobilenetv2 import InvertedResidual as MobileNetV2Block
from torchvision.models.shufflenetv2 import InvertedResidual as ShuffleNetV2Block

from gv3lite.ghost import GhostBottleneckV3, GhostModuleV3
from gv3lite.layers import ConvBnAct
from gv3lite.reparam import RepConvBN, check_branch_options, fuse_branches

# Building blocks whose Conv2d -> BatchNorm2d pairs the default rule converts (module docstring).
BLOCK_TYPES = (MobileNetV2Block, ShuffleNetV2Block)


# ----------------------------------------------------------------------------------------------------------------
# The two blocks that stand where a (Conv2d, BatchNorm2d) pair was
# ----------------------------------------------------------------------------------------------------------------

class RepConv2d(nn.Module):
    """Stands where a bias-free ``nn.Conv2d`` was; computes the *whole* conv+BN pair as a sum of branches.

    Train form: ``y = sum_i BN_i(conv_i(x)) [+ BN_s(conv_1x1(x))] [+ BN_id(x)]``, held by ``self.rep``, a
    ``RepConvBN`` without activation (branch rules there). Branch 0 starts as a copy of the original conv and BN;
    every BN copies the original BN's ``eps`` and ``momentum``. Input (B, C_in, H, W) -> (B, C_out, H', W'), the
    original conv's output shape. The BN that followed the conv is replaced by a ``DeferredBatchNorm``.

    Deploy form (``fuse()``, called by ``gv3lite.reparameterize``): a bias-free ``nn.Conv2d`` with the original
    conv's settings holding the fused kernel; the fused bias goes to the ``DeferredBatchNorm``.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, num_conv_branches: int = 3, use_scale_branch: bool = True,
                 use_identity_branch: bool = True):
        super().__init__()
        k = conv.kernel_size[0]
        self.rep = RepConvBN(conv.in_channels, conv.out_channels, k, conv.stride[0], conv.padding[0], conv.groups,
                             num_conv_branches, use_scale_branch, use_identity_branch, act=None)
        for m in self.rep.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = bn.eps, bn.momentum
        self.rep.rpr_conv[0].conv.load_state_dict(conv.state_dict())
        self.rep.rpr_conv[0].bn1.load_state_dict(bn.state_dict())
        self.rep.to(device=conv.weight.device, dtype=conv.weight.dtype).train(conv.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rep(x)

    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(kernel (C_out, C_in/groups, k, k), bias (C_out,))`` of the one conv equal to the sum of branches."""
        return fuse_branches(self.rep.branches(), self.rep.kernel_size, self.rep.groups)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """Return the deploy conv: a copy of branch 0's bias-free conv holding the fused kernel."""
        conv = copy.deepcopy(self.rep.rpr_conv[0].conv)
        conv.weight.copy_(self.fused_kernel_bias()[0])
        return conv


class DeferredBatchNorm(nn.Module):
    """Stands where the BatchNorm2d after a converted conv was: the identity while training (each branch of the
    ``RepConv2d`` before it has its own BN). Input and output (B, C, H, W).

    ``fuse()`` returns the deploy BN: a BatchNorm2d with the original ``eps``/``momentum`` and weight 1, bias b,
    running_mean 0, running_var 1 - eps, where b is the fused bias of ``source`` -- so in eval mode BN(x) = x + b
    (up to one float rounding of ``(1 - eps) + eps``), and the pair (conv, BN) equals the sum of branches.

    ``source`` (the ``RepConv2d``) is kept as a plain attribute, not a submodule: its parameters belong to the
    parent once. ``fuse()`` only reads it, so the order in which the two are fused does not matter.
    """

    def __init__(self, source):
        super().__init__()
        self.__dict__["source"] = source  # bypass nn.Module.__setattr__, which would register a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.no_grad()
    def fuse(self) -> nn.BatchNorm2d:
        """Return the deploy BatchNorm2d (see class docstring); it has the train/eval flag of this module."""
        bn = copy.deepcopy(self.source.rep.rpr_conv[0].bn1)
        bn.weight.fill_(1.0)
        bn.bias.copy_(self.source.fused_kernel_bias()[1])
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
        return bn.train(self.training)


# ----------------------------------------------------------------------------------------------------------------
# Finding the layers
# ----------------------------------------------------------------------------------------------------------------

class _Pair(NamedTuple):
    """A Conv2d directly followed by a BatchNorm2d inside ``parent`` (an nn.Sequential), at keys ``i`` / ``i + 1``."""
    name: str
    parent: nn.Module
    conv_key: str
    bn_key: str
    in_block: bool


class _Slot(NamedTuple):
    """A one-branch ``<prefix>_rpr_conv`` slot of a train-form GhostNetV3 module (GhostNetV2 without branches)."""
    name: str
    owner: nn.Module
    prefix: str


def _find_pairs(module, prefix="", in_block=False):
    in_block = in_block or isinstance(module, BLOCK_TYPES)
    children = list(module.named_children())
    if isinstance(module, nn.Sequential):
        for (key, conv), (bn_key, bn) in zip(children, children[1:]):
            if type(conv) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d):
                yield _Pair(f"{prefix}{key}", module, key, bn_key, in_block)
    for key, child in children:
        yield from _find_pairs(child, f"{prefix}{key}.", in_block)


def _find_slots(model):
    for name, m in model.named_modules():
        prefixes = ("primary", "cheap") if isinstance(m, GhostModuleV3) else (
            ("dw",) if isinstance(m, GhostBottleneckV3) else ())
        for p in prefixes:
            if not m.deploy and hasattr(m, f"{p}_rpr_conv"):  # dw_rpr_conv exists in stride-2 bottlenecks only
                yield _Slot(f"{name}.{p}_rpr_conv.0.conv" if name else f"{p}_rpr_conv.0.conv", m, p)


def _pair_problem(conv, bn):
    """Why a Conv2d -> BatchNorm2d pair cannot become a ``RepConv2d``, or None."""
    k = conv.kernel_size
    if k[0] != k[1] or k[0] % 2 == 0:
        return f"kernel {k} is not square and odd"
    if conv.padding != (k[0] // 2, k[0] // 2):
        return f"padding {conv.padding} is not kernel_size // 2"
    if conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        return "dilated or non-zero-padded convs are not supported"
    if conv.stride[0] != conv.stride[1]:
        return f"stride {conv.stride} is not the same in both directions"
    if conv.bias is not None:
        return "the conv has a bias (a conv followed by BN normally has none)"
    if not (bn.affine and bn.track_running_stats):
        return "the BatchNorm needs affine=True and track_running_stats=True to carry the fused bias"
    return None


class RepConversion(NamedTuple):
    """Result of ``add_rep_branches``: the converted ``model`` and the qualified names of the converted convs."""
    model: nn.Module
    layers: list


def _check_request(model, num_conv_branches: int, use_scale_branch: bool, use_identity_branch: bool) -> None:
    """The `add_rep_branches` errors about the request itself (switches, model type, branches already there)."""
    check_branch_options(num_conv_branches, use_scale_branch, use_identity_branch)
    if (num_conv_branches, use_scale_branch, use_identity_branch) == (1, False, False):
        raise ValueError("num_conv_branches=1 with use_scale_branch=False and use_identity_branch=False adds no "
                         "branch; use the model as it is, or ask for num_conv_branches >= 2 or a scale/skip branch")
    if not isinstance(model, nn.Module):
        raise ValueError(f"add_rep_branches expects an nn.Module, got {type(model).__name__}")
    if any(isinstance(m, (RepConvBN, RepConv2d)) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} already has re-parameterizable branches (RepConvBN/RepConv2d); "
                         "convert the plain model instead")


def add_rep_branches(model: nn.Module, num_conv_branches: int = 3, use_scale_branch: bool = True,
                     use_identity_branch: bool = True, include=None, inplace: bool = False) -> "RepConversion":
    """Add GhostNetV3's re-parameterizable training-time branches (§3.1) to the convs of an ordinary model.

    Every selected Conv2d -> BatchNorm2d pair becomes ``RepConv2d`` + ``DeferredBatchNorm`` (torchvision models);
    every one-branch slot of a GhostNetV2 (= GhostNetV3 built with ``num_conv_branches=1``, no scale, no skip) gets
    the missing branches. Which layers: module docstring. ``gv3lite.reparameterize`` folds the result back (its
    deploy form has the original model's deploy architecture; torchvision state_dicts load strictly).

    Args:
        model: an ``nn.Module`` (e.g. torchvision ``mobilenet_v2(weights=None)``, ``shufflenet_v2_x1_0``, or
            ``create_model('ghostnetv2_100')``). Its input/output shapes are unchanged.
        num_conv_branches: k x k conv+BN branches per layer (>= 1; the paper uses 3).
        use_scale_branch: add the 1x1 conv+BN branch to layers with k > 1.
        use_identity_branch: add the BN-only branch where shapes allow (stride 1, in == out channels).
        include: ``None`` for the default rule, or a callable ``include(name, conv) -> bool`` choosing among all
            candidates (``name`` = qualified name of the Conv2d, as reported in ``layers``).
        inplace: convert ``model`` itself; default False converts a deep copy.

    Returns:
        ``RepConversion(model, layers)``; ``layers`` lists the converted convs' qualified names in module order.

    Raises:
        ValueError: bad switches, or ``(1, False, False)`` (no extra branch requested); ``model`` already has
            branches; no layer selected (names the rule and how to pass ``include``); a selected layer that cannot
            be converted (names the layer and why).
    """
    _check_request(model, num_conv_branches, use_scale_branch, use_identity_branch)
    if not inplace:
        model = copy.deepcopy(model)

    slots, pairs = list(_find_slots(model)), list(_find_pairs(model))
    if include is None:
        chosen_slots = slots
        chosen_pairs = [p for p in pairs if p.in_block]
    else:
        chosen_slots = [s for s in slots if include(s.name, getattr(s.owner, f"{s.prefix}_rpr_conv")[0].conv)]
        chosen_pairs = [p for p in pairs if include(p.name, p.parent._modules[p.conv_key])]
    if not chosen_slots and not chosen_pairs:
        rule = "the default rule (Conv2d->BatchNorm2d pairs in nn.Sequential inside a MobileNetV2/ShuffleNetV2 " \
               "InvertedResidual block, or GhostNetV2 branch slots)" if include is None else "your include rule"
        raise ValueError(f"no convertible layer in {type(model).__name__} under {rule} ({len(pairs)} "
                         f"Conv2d->BatchNorm2d pairs found in total); pass include=lambda name, conv: ... to choose")

    for p in chosen_pairs:  # check everything before changing anything
        problem = _pair_problem(p.parent._modules[p.conv_key], p.parent._modules[p.bn_key])
        if problem:
            raise ValueError(f"cannot convert layer {p.name}: {problem}; exclude it with include=")
    for s in chosen_slots:
        _fill_slot(s, num_conv_branches, use_scale_branch, use_identity_branch)
    for p in chosen_pairs:
        conv, bn = p.parent._modules[p.conv_key], p.parent._modules[p.bn_key]
        rep = RepConv2d(conv, bn, num_conv_branches, use_scale_branch, use_identity_branch)
        deferred = DeferredBatchNorm(rep).train(bn.training)
        setattr(p.parent, p.conv_key, rep)
        setattr(p.parent, p.bn_key, deferred)
    converted = {s.name for s in chosen_slots} | {p.name for p in chosen_pairs}
    return RepConversion(model, [n for n, _ in model.named_modules() if n in converted])  # in module order


def _fill_slot(slot, num_conv_branches, use_scale_branch, use_identity_branch):
    """Give a one-branch GhostNetV3 slot its missing branches (the shapes ghost.py would have built)."""
    owner, p = slot.owner, slot.prefix
    branches = getattr(owner, f"{p}_rpr_conv")
    if len(branches) != 1 or getattr(owner, f"{p}_rpr_scale", None) is not None \
            or getattr(owner, f"{p}_rpr_skip", None) is not None:
        raise ValueError(f"{slot.name.rsplit('.', 3)[0]} already has re-parameterizable branches; convert a "
                         "GhostNetV2 (num_conv_branches=1, use_scale_branch=False, use_identity_branch=False)")
    conv = branches[0].conv
    k, stride, pad, groups = conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.groups
    like = dict(device=conv.weight.device, dtype=conv.weight.dtype)

    def new_branch(kernel_size, padding):
        branch = ConvBnAct(conv.in_channels, conv.out_channels, kernel_size, stride, padding, groups, act=None)
        return branch.to(**like).train(conv.training)

    branches.extend(new_branch(k, pad) for _ in range(num_conv_branches - 1))
    if use_scale_branch and k > 1:
        setattr(owner, f"{p}_rpr_scale", new_branch(1, pad - k // 2))
    if use_identity_branch and hasattr(owner, f"{p}_rpr_skip") and stride == 1 \
            and conv.in_channels == conv.out_channels:
        setattr(owner, f"{p}_rpr_skip", nn.BatchNorm2d(conv.out_channels).to(**like).train(conv.training))


__all__ = ["RepConv2d", "DeferredBatchNorm", "RepConversion", "add_rep_branches", "BLOCK_TYPES"]
