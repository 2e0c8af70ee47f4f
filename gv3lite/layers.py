"""Small shared layers: squeeze-and-excitation and conv + BN (+ activation).

Owns: ``SqueezeExcite``, ``ConvBnAct``. Channel rounding is timm's ``make_divisible`` (timm 1.0.31
``timm/layers/helpers.py`` line 55: nearest multiple of ``divisor``, one more ``divisor`` if that lost over 10%),
always called with ``divisor=4`` as GhostNet does (``timm/models/ghostnet.py`` line 37); the gate is torch's
``F.hardsigmoid`` (``relu6(x + 3) / 6``, MobileNetV3).
Attribute names (``conv``, ``bn1``, ``conv_reduce``, ``conv_expand``) are chosen so that state_dict keys equal
those of timm's GhostNet (timm 1.0.31 ``ghostnet.py``), which lets timm weights load strictly into our models.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import make_divisible


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation channel gate (Hu et al. 2018) with a hard-sigmoid gate, as in GhostNet.

    ``y = x * hardsigmoid(W2 relu(W1 mean_hw(x) + b1) + b2)``; reduced width ``make_divisible(channels *
    se_ratio, 4)``. Input and output: (B, C, H, W).

    Args:
        channels: C.
        se_ratio: reduction ratio (GhostNet uses 0.25).
    """

    def __init__(self, channels: int, se_ratio: float = 0.25):
        super().__init__()
        reduced = make_divisible(channels * se_ratio, 4)
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # squeeze: (B, C, 1, 1)
        s = self.conv_expand(self.act(self.conv_reduce(s)))  # excite
        return x * F.hardsigmoid(s)


class ConvBnAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation. Input (B, in_ch, H, W) -> (B, out_ch, H', W').

    Used as the stem-like 1x1 block before the head and as one *branch* of a re-parameterizable block
    (then ``act=None``). Attribute names ``conv`` / ``bn1`` give timm-compatible state_dict keys.

    Args:
        in_ch, out_ch: channels.
        kernel_size: odd int.
        stride: int.
        padding: int; default ``kernel_size // 2`` ("same" for stride 1).
        groups: conv groups (``in_ch`` for depthwise).
        act: ``True`` for ReLU, ``None``/``False`` for none, or an ``nn.Module`` instance.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, padding: int | None = None,
                 groups: int = 1, act: bool | nn.Module | None = True):
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        if act is True:
            act = nn.ReLU(inplace=True)
        self.act = act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn1(self.conv(x)))


__all__ = ["SqueezeExcite", "ConvBnAct"]
