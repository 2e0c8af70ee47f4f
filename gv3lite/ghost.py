"""Ghost modules and the Ghost bottleneck: GhostNet (V1), DFC attention (V2) and the re-parameterizable V3 module.

Owns: ``DFCAttention``, ``GhostModule`` (V1, with optional V2 DFC gate), ``GhostModuleV3`` and ``GhostBottleneckV3``.

Ghost module (GhostNet §3.1, eq. 2-3). An ordinary conv producing ``out`` channels is replaced by
* a *primary* conv producing ``init = ceil(out / s)`` "intrinsic" channels (``s`` = ``ratio``), and
* a *cheap operation*, a depthwise ``dw_size x dw_size`` conv that makes ``(s - 1)`` "ghost" maps per intrinsic map;
their concatenation, cut to ``out`` channels, is the output. Parameters and MACs drop by about ``s``.

DFC attention (GhostNetV2 §3.2): a gate computed from the module input by 1x1 conv -> horizontal 1x5 depthwise ->
vertical 5x1 depthwise (each + BN) on a 2x down-sampled map, passed through a sigmoid, up-sampled (nearest) and
multiplied onto the Ghost module output; it captures long-range dependencies cheaply.

GhostNetV3 (§3.1, Fig. 3): at training time the primary conv and the cheap operation are each a sum of
``num_conv_branches`` conv+BN branches plus a 1x1 "scale" branch and a BN "skip" (identity) branch; the sum is
followed by the activation. After training each sum is folded into one conv (``reparameterize()``), giving the
GhostNetV2 graph. Branch placement and attribute names follow timm 1.0.31 (``*_rpr_conv``, ``*_rpr_scale``,
``*_rpr_skip``; deploy ``primary_conv.0``, ``cheap_operation.0``, ``conv_dw``) so that state_dicts are
interchangeable with ``timm.create_model('ghostnetv3_*')``: timm 1.0.31 ``timm/models/ghostnet.py``,
``GhostModuleV3`` (line 125) and ``GhostBottleneckV3`` (line 453); the official release is huawei-noah/
Efficient-AI-Backbones ``ghostnetv3_pytorch/ghostnetv3.py`` (``GhostModule`` with ``mode='ori'`` /
``'ori_shortcut_mul_conv15'``, ``GhostBottleneck``).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gv3lite.layers import ConvBnAct, SqueezeExcite
from gv3lite.branch_sums import branch_sum
from gv3lite.reparam import check_branch_options, fuse_branches, fused_conv


def _act(act):
    return nn.ReLU(inplace=True) if act else nn.Identity()


class DFCAttention(nn.Sequential):
    """Decoupled fully-connected (DFC) attention gate of GhostNetV2 §3.2.

    ``gate = upsample_nearest(sigmoid(BN(dw_5x1(BN(dw_1x5(BN(conv_1x1(avgpool_2x2(x)))))))))`` with no activation
    in between. It is an ``nn.Sequential`` of the six layers (keys ``0`` ... ``5`` as in timm's ``short_conv``).

    Args:
        in_ch, out_ch: channels of the module input and of the gated output.
        kernel_size, stride: of the first conv (1 and 1 in GhostNet).

    Forward: ``x`` (B, in_ch, H, W) and the target ``size`` (H', W') -> gate (B, out_ch, H', W') in (0, 1).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.Conv2d(out_ch, out_ch, (1, 5), 1, (0, 2), groups=out_ch, bias=False),  # horizontal FC
            nn.BatchNorm2d(out_ch),
            nn.Conv2d(out_ch, out_ch, (5, 1), 1, (2, 0), groups=out_ch, bias=False),  # vertical FC
            nn.BatchNorm2d(out_ch),
        )

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        gate = super().forward(F.avg_pool2d(x, kernel_size=2, stride=2))
        return F.interpolate(torch.sigmoid(gate), size=size, mode="nearest")


class GhostModule(nn.Module):
    """Plain Ghost module (GhostNet §3.1), optionally gated by DFC attention (GhostNetV2).

    Input (B, in_ch, H, W) -> output (B, out_ch, H/stride, W/stride).

    Args:
        in_ch, out_ch: channels. kernel_size: primary conv kernel (1 in GhostNet). ratio: s >= 2.
        dw_size: cheap-operation kernel (3). stride: primary conv stride. act: ReLU after both convs if True.
        use_dfc: multiply the output by the DFC attention gate.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, ratio: int = 2, dw_size: int = 3, stride: int = 1,
                 act: bool = True, use_dfc: bool = False):
        super().__init__()
        _check_ratio(ratio)
        self.out_ch = out_ch
        init_ch = math.ceil(out_ch / ratio)          # intrinsic feature maps
        new_ch = init_ch * (ratio - 1)               # ghost feature maps
        self.primary_conv = nn.Sequential(
            nn.Conv2d(in_ch, init_ch, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(init_ch), _act(act))
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init_ch, new_ch, dw_size, 1, dw_size // 2, groups=init_ch, bias=False),
            nn.BatchNorm2d(new_ch), _act(act))
        self.short_conv = DFCAttention(in_ch, out_ch, kernel_size, stride) if use_dfc else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        out = torch.cat([x1, x2], dim=1)[:, :self.out_ch]
        if self.short_conv is not None:
            out = out * self.short_conv(x, out.shape[-2:])
        return out


def _check_ratio(ratio):
    if not isinstance(ratio, int) or ratio < 2:
        raise ValueError(f"ratio (s) must be an int >= 2, got {ratio!r}")


class GhostModuleV3(nn.Module):
    """Re-parameterizable Ghost module of GhostNetV3 (§3.1, Fig. 3); deploy form = ``GhostModule`` with biased convs.

    Train form, for x (B, in_ch, H, W), ``init = ceil(out_ch / ratio)``, ``new = init * (ratio - 1)``:
        x1 = act( sum_i BN(conv_k_i(x)) [+ BN(conv_1x1(x)) if kernel_size > 1] )                 # primary
        x2 = act( sum_i BN(dwconv_d_i(x1)) + BN(dwconv_1x1(x1)) [+ BN(x1) if init == new] )      # cheap op
        y  = concat(x1, x2)[:, :out_ch]   (* DFC gate of x if use_dfc)
    The skip (identity) branch of the cheap op exists only when its shapes allow (``init == new``, i.e. ratio 2;
    timm builds it always and fails for ratio 3). Like timm, the primary conv has no skip branch (the official
    code's primary skip, reachable only at widths 0.3/0.35, fuses wrongly); its scale branch exists only for
    ``kernel_size > 1``, which the network never uses. Output (B, out_ch, H/stride, W/stride).

    Args:
        in_ch, out_ch, kernel_size, ratio, dw_size, stride, act, use_dfc: as ``GhostModule``.
        num_conv_branches (>= 1), use_scale_branch, use_identity_branch: re-parameterization switches
            (``1, False, False`` = a plain Ghost module with one conv+BN per operation).
        deploy: build the fused form directly.
        fast_branches: compute branch sums by ``gv3lite.branch_sums.branch_sum``'s fast exact method where it
            applies (the same numbers, faster); False calls the branches one by one.

    Raises:
        ValueError: ratio < 2 or bad switches.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, ratio: int = 2, dw_size: int = 3, stride: int = 1,
                 act: bool = True, use_dfc: bool = False, num_conv_branches: int = 3, use_scale_branch: bool = True,
                 use_identity_branch: bool = True, deploy: bool = False, fast_branches: bool = True):
        super().__init__()
        _check_ratio(ratio)
        check_branch_options(num_conv_branches, use_scale_branch, use_identity_branch)
        self.out_ch, self.fast_branches = out_ch, fast_branches
        init_ch = math.ceil(out_ch / ratio)
        new_ch = init_ch * (ratio - 1)
        self.kernel_size, self.dw_size, self.init_ch = kernel_size, dw_size, init_ch
        self.deploy = deploy
        if deploy:
            self.primary_conv = nn.Sequential(
                nn.Conv2d(in_ch, init_ch, kernel_size, stride, kernel_size // 2, bias=True), _act(act))
            self.cheap_operation = nn.Sequential(
                nn.Conv2d(init_ch, new_ch, dw_size, 1, dw_size // 2, groups=init_ch, bias=True), _act(act))
        else:
            self.primary_rpr_conv = nn.ModuleList([
                ConvBnAct(in_ch, init_ch, kernel_size, stride, act=None) for _ in range(num_conv_branches)])
            self.primary_rpr_scale = (ConvBnAct(in_ch, init_ch, 1, stride, act=None)
                                      if use_scale_branch and kernel_size > 1 else None)
            self.primary_activation = _act(act)
            self.cheap_rpr_conv = nn.ModuleList([
                ConvBnAct(init_ch, new_ch, dw_size, 1, groups=init_ch, act=None) for _ in range(num_conv_branches)])
            self.cheap_rpr_scale = (ConvBnAct(init_ch, new_ch, 1, 1, groups=init_ch, act=None)
                                    if use_scale_branch else None)
            self.cheap_rpr_skip = nn.BatchNorm2d(init_ch) if use_identity_branch and init_ch == new_ch else None
            self.cheap_activation = _act(act)
        self.short_conv = DFCAttention(in_ch, out_ch, kernel_size, stride) if use_dfc else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            x1 = self.primary_conv(x)
            x2 = self.cheap_operation(x1)
        else:
            x1 = self.primary_activation(branch_sum(x, self._primary_branches(), self.fast_branches))
            x2 = self.cheap_activation(branch_sum(x1, self._cheap_branches(), self.fast_branches))
        out = torch.cat([x1, x2], dim=1)[:, :self.out_ch]
        if self.short_conv is not None:
            out = out * self.short_conv(x, out.shape[-2:])
        return out

    def _primary_branches(self):
        return [*self.primary_rpr_conv, self.primary_rpr_scale]

    def _cheap_branches(self):
        return [*self.cheap_rpr_conv, self.cheap_rpr_scale, self.cheap_rpr_skip]

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the branches in place: ``primary_conv`` / ``cheap_operation`` become Sequential(conv with bias, act).
        The DFC gate keeps its BNs (it is not a branch sum). No-op if already fused."""
        if self.deploy:
            return
        kernel, bias = fuse_branches(self._primary_branches(), self.kernel_size, groups=1)
        self.primary_conv = nn.Sequential(fused_conv(self.primary_rpr_conv[0].conv, kernel, bias),
                                          self.primary_activation)
        kernel, bias = fuse_branches(self._cheap_branches(), self.dw_size, groups=self.init_ch)
        self.cheap_operation = nn.Sequential(fused_conv(self.cheap_rpr_conv[0].conv, kernel, bias),
                                             self.cheap_activation)
        del self.primary_rpr_conv, self.primary_rpr_scale, self.primary_activation
        del self.cheap_rpr_conv, self.cheap_rpr_scale, self.cheap_rpr_skip, self.cheap_activation
        self.deploy = True


class GhostBottleneckV3(nn.Module):
    """Ghost bottleneck of GhostNetV3: ghost1 (ReLU, DFC) -> [depthwise k x k, stride 2] -> [SE] -> ghost2 (linear),
    plus a shortcut (GhostNet §3.2, Fig. 3; V3 §3.1).

    The stride-2 depthwise stage is re-parameterizable: ``num_conv_branches`` dw k x k conv+BN branches and a
    stride-2 dw 1x1 scale branch (no skip branch: the stride changes the shape); deploy form ``conv_dw`` (with bias).
    Stride-1 bottlenecks have no depthwise stage. Shortcut: identity if ``in_ch == out_ch`` and stride 1, else
    dw k x k (stride) + BN + 1x1 conv + BN (not re-parameterized).
    Input (B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride).

    Args:
        in_ch, mid_ch, out_ch: channels (mid = expansion width). dw_kernel_size: k (3 or 5). stride: 1 or 2.
        se_ratio: 0 for no SE, else SE reduction ratio. use_dfc: DFC gate in ghost1.
        num_conv_branches, use_scale_branch, use_identity_branch, deploy, fast_branches: as ``GhostModuleV3``.
    """

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, dw_kernel_size: int = 3, stride: int = 1,
                 se_ratio: float = 0.0, use_dfc: bool = False, num_conv_branches: int = 3,
                 use_scale_branch: bool = True, use_identity_branch: bool = True, deploy: bool = False,
                 fast_branches: bool = True):
        super().__init__()
        branch_opts = dict(num_conv_branches=num_conv_branches, use_scale_branch=use_scale_branch,
                           use_identity_branch=use_identity_branch, deploy=deploy, fast_branches=fast_branches)
        self.stride, self.dw_kernel_size, self.deploy = stride, dw_kernel_size, deploy
        self.fast_branches = fast_branches
        self.ghost1 = GhostModuleV3(in_ch, mid_ch, act=True, use_dfc=use_dfc, **branch_opts)
        self.conv_dw = None
        if stride > 1 and deploy:
            self.conv_dw = nn.Conv2d(mid_ch, mid_ch, dw_kernel_size, stride, dw_kernel_size // 2,
                                     groups=mid_ch, bias=True)
        elif stride > 1:
            self.dw_rpr_conv = nn.ModuleList([
                ConvBnAct(mid_ch, mid_ch, dw_kernel_size, stride, groups=mid_ch, act=None)
                for _ in range(num_conv_branches)])
            self.dw_rpr_scale = (ConvBnAct(mid_ch, mid_ch, 1, stride, padding=0, groups=mid_ch, act=None)
                                 if use_scale_branch else None)
        self.se = SqueezeExcite(mid_ch, se_ratio) if se_ratio and se_ratio > 0 else None
        self.ghost2 = GhostModuleV3(mid_ch, out_ch, act=False, use_dfc=False, **branch_opts)
        if in_ch == out_ch and stride == 1:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, in_ch, dw_kernel_size, stride, dw_kernel_size // 2, groups=in_ch, bias=False),
                nn.BatchNorm2d(in_ch),
                nn.Conv2d(in_ch, out_ch, 1, bias=False),
                nn.BatchNorm2d(out_ch))

    def _dw_branches(self):
        return [*self.dw_rpr_conv, self.dw_rpr_scale]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ghost1(x)
        if self.stride > 1:
            h = self.conv_dw(h) if self.deploy else branch_sum(h, self._dw_branches(), self.fast_branches)
        if self.se is not None:
            h = self.se(h)
        return self.ghost2(h) + self.shortcut(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold ghost1, ghost2 and (stride-2 blocks) the depthwise stage into ``conv_dw``, in place.
        No-op if already fused."""
        if self.deploy:
            return
        self.ghost1.reparameterize()
        self.ghost2.reparameterize()
        if self.stride > 1:
            groups = self.dw_rpr_conv[0].conv.groups
            kernel, bias = fuse_branches(self._dw_branches(), self.dw_kernel_size, groups=groups)
            self.conv_dw = fused_conv(self.dw_rpr_conv[0].conv, kernel, bias)
            del self.dw_rpr_conv, self.dw_rpr_scale
        self.deploy = True


__all__ = ["DFCAttention", "GhostModule", "GhostModuleV3", "GhostBottleneckV3"]
