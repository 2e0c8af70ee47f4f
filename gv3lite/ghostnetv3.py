"""The GhostNetV3 network (Liu et al., arXiv 2404.11202), its layer table and its widths 0.5/1.0/1.3/1.6
(the registry that builds it by name is ``gv3lite.models``).

Layout (GhostNet Table 1; V3 §3.1; timm 1.0.31 ``timm/models/ghostnet.py``: ``GhostNet`` line 645, the
layer table ``cfgs`` in ``_create_ghostnet`` line 893): stem 3x3/2 conv+BN+ReLU -> 16 Ghost
bottlenecks (``blocks.0`` ... ``blocks.8``) -> ``blocks.9`` 1x1 conv+BN+ReLU -> global average pool -> 1x1
``conv_head`` to 1280 (+ReLU) -> dropout -> linear classifier. Every channel count is ``make_divisible(c * width,
4)``; ``conv_head`` is never width-scaled. Layers from index 2 on gate ghost1 with DFC attention (GhostNetV2).
Names and state_dict keys equal timm 1.0.31's ``ghostnetv3_*`` (train and deploy form), so weights load both ways.
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import make_divisible

from gv3lite.ghost import GhostBottleneckV3
from gv3lite.layers import ConvBnAct

# One list per stage; each row is a bottleneck: (dw kernel k, expansion width "exp", output width, SE ratio, stride).
# Values at width 1.0 (GhostNet Table 1).
LAYER_CFG = [
    [(3, 16, 16, 0.0, 1)],
    [(3, 48, 24, 0.0, 2)],
    [(3, 72, 24, 0.0, 1)],
    [(5, 72, 40, 0.25, 2)],
    [(5, 120, 40, 0.25, 1)],
    [(3, 240, 80, 0.0, 2)],
    [(3, 200, 80, 0.0, 1), (3, 184, 80, 0.0, 1), (3, 184, 80, 0.0, 1), (3, 480, 112, 0.25, 1),
     (3, 672, 112, 0.25, 1)],
    [(5, 672, 160, 0.25, 2)],
    [(5, 960, 160, 0.0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0.0, 1), (5, 960, 160, 0.25, 1)],
]
STEM_CH, FINAL_CH, HEAD_CH = 16, 960, 1280

# official `<x>_rpr_conv.N.bn.*` / `<x>_rpr_scale.bn.*` -> timm's and our `.bn1.` (huawei-noah/Efficient-AI-Backbones
# ghostnetv3_pytorch/ghostnetv3.py, class GhostModule; renamed as timm 1.0.31 timm/models/ghostnet.py
# checkpoint_filter_fn, line 873)
_OFFICIAL_BN = re.compile(r"(_rpr_conv\.\d+|_rpr_scale)\.bn\.")

# Registered names (timm's) -> width multiplier.
MODEL_WIDTHS = {"ghostnetv3_050": 0.5, "ghostnetv3_100": 1.0, "ghostnetv3_130": 1.3, "ghostnetv3_160": 1.6}


class GhostNetV3(nn.Module):
    """GhostNetV3 classifier. Input (B, in_chans, H, W) with H, W >= 33 -> logits (B, num_classes).

    (At 32 px the last stage is 1x1 and the DFC attention's 2x2 average pooling has nothing to pool.)

    Args:
        width: width multiplier (0.5, 1.0, 1.3, 1.6 are the paper's; any positive float works).
        num_classes: classifier outputs; 0 drops the classifier (forward returns (B, 1280) pre-logits).
        in_chans: input channels.
        drop_rate: dropout probability before the classifier (timm's default 0.2; the official code has none).
        num_conv_branches, use_scale_branch, use_identity_branch: re-parameterization switches of every Ghost
            module and stride-2 depthwise stage (defaults = the paper's 3 / True / True; ``1, False, False`` = the
            plain train form without extra branches).
        deploy: build the fused (deploy) form directly, e.g. to load a deploy state_dict.
        fast_branches: compute branch sums by the fast exact method of ``gv3lite.branch_sums.branch_sum``
            (default; the same numbers as the per-branch computation, faster); False = the per-branch computation
            (``gv3lite.branch_sums.set_fast_branches`` switches an existing model).
    """

    def __init__(self, width: float = 1.0, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2,
                 num_conv_branches: int = 3, use_scale_branch: bool = True, use_identity_branch: bool = True,
                 deploy: bool = False, fast_branches: bool = True):
        super().__init__()
        _check_args(width, num_classes, in_chans, drop_rate)
        self.width, self.num_classes, self.drop_rate, self.in_chans = width, num_classes, drop_rate, in_chans
        branch_opts = dict(num_conv_branches=num_conv_branches, use_scale_branch=use_scale_branch,
                           use_identity_branch=use_identity_branch, deploy=deploy, fast_branches=fast_branches)

        stem_ch = make_divisible(STEM_CH * width, 4)
        self.conv_stem = nn.Conv2d(in_chans, stem_ch, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_ch)
        self.act1 = nn.ReLU(inplace=True)

        stages, in_ch, layer_idx = [], stem_ch, 0
        for stage_cfg in LAYER_CFG:
            layers = []
            for k, exp, out, se_ratio, stride in stage_cfg:
                mid_ch, out_ch = make_divisible(exp * width, 4), make_divisible(out * width, 4)
                layers.append(GhostBottleneckV3(in_ch, mid_ch, out_ch, k, stride, se_ratio,
                                                use_dfc=layer_idx > 1, **branch_opts))
                in_ch, layer_idx = out_ch, layer_idx + 1
            stages.append(nn.Sequential(*layers))
        self.num_features = make_divisible(FINAL_CH * width, 4)
        stages.append(nn.Sequential(ConvBnAct(in_ch, self.num_features, 1)))
        self.blocks = nn.Sequential(*stages)

        self.head_hidden_size = HEAD_CH
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(self.num_features, HEAD_CH, 1, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(HEAD_CH, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> feature map (B, num_features, H/32, W/32). Raises ``ValueError`` for input the
        network cannot take (see `check_input`)."""
        check_input(x, self.conv_stem.weight, MIN_INPUT_SIZE)
        return self.blocks(self.act1(self.bn1(self.conv_stem(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> (B, 1280) pre-logits if ``pre_logits`` else (B, num_classes) logits."""
        x = self.flatten(self.act2(self.conv_head(self.global_pool(x))))
        x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def checkpoint_filter(self, state_dict: dict) -> dict:
        """The keys of the official GhostNetV3 release renamed to ours (``...primary_rpr_conv.0.bn.weight`` ->
        ``.bn1.``); other keys unchanged. ``gv3lite.checkpoint.load_checkpoint`` calls it before loading."""
        return {_OFFICIAL_BN.sub(r"\1.bn1.", key): value for key, value in state_dict.items()}

    def checkpoint_hint(self, state_dict: dict) -> str:
        """The fix to add to a load error when ``state_dict`` is in the other form (train vs deploy) than this
        model, else ``""``. ``gv3lite.checkpoint.load_checkpoint`` calls it when the weights do not fit."""
        mine, theirs = _form(self.state_dict()), _form(state_dict)
        if theirs == "deploy" and mine == "train":
            return (" The checkpoint is in deploy (fused) form but the model is in train form: build the model with "
                    "deploy=True, e.g. create_model(name, deploy=True).")
        if theirs == "train" and mine == "deploy":
            return (" The checkpoint is in train form but the model is fused: load it into a train-form model "
                    "(deploy=False) and then call gv3lite.reparameterize(model).")
        return ""

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh ``Linear(1280, num_classes)`` (Identity for 0), e.g. to fine-tune."""
        _check_args(self.width, num_classes, 1, self.drop_rate)
        self.num_classes = num_classes
        self.classifier = nn.Linear(HEAD_CH, num_classes) if num_classes > 0 else nn.Identity()


MIN_INPUT_SIZE = 33  # px: at 32 the last stage is 1x1 and DFC attention's 2x2 pooling has nothing to pool


def _form(keys) -> str | None:
    """'train' if the keys hold re-parameterization branches, 'deploy' if fused Ghost convs, else None."""
    if any("_rpr_conv." in k for k in keys):
        return "train"
    if any(".primary_conv.0." in k or ".cheap_operation.0." in k for k in keys):
        return "deploy"
    return None


def check_input(x, weight: torch.Tensor, min_size: int = MIN_INPUT_SIZE) -> None:
    """Raise ``ValueError`` naming the problem and the fix unless ``x`` is a (B, C, H, W) tensor that a network whose
    first conv has ``weight`` (shape (out, C, k, k)) can take: same channel count C, same floating dtype and device
    as ``weight``, and H, W >= ``min_size``. Skipped while tracing / exporting (shapes are symbolic there)."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
        return
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"the model takes a torch.Tensor of shape (B, 3, H, W), got {type(x).__name__}; convert "
                         "images with torchvision.transforms.v2 (or gv3lite.data) first")
    chans = weight.shape[1]
    if x.ndim != 4:
        fix = " (one image: add the batch dimension with x.unsqueeze(0))" if x.ndim == 3 else ""
        raise ValueError(f"input has shape {tuple(x.shape)}; the model takes a batch of shape (B, {chans}, H, W)"
                         f"{fix}")
    if x.shape[1] != chans:
        fix = ("; channels-last images (B, H, W, C) need x.permute(0, 3, 1, 2)" if x.shape[-1] == chans else
               "; grayscale images need x.expand(-1, 3, -1, -1)" if x.shape[1] == 1 and chans == 3 else "")
        raise ValueError(f"input has {x.shape[1]} channels (shape {tuple(x.shape)}) but the model takes {chans} "
                         f"(in_chans={chans}){fix}")
    if x.dtype != weight.dtype:
        fix = ("convert with x.float() / 255 and normalize with the ImageNet mean/std (gv3lite.data.IMAGENET_MEAN/"
               "IMAGENET_STD)" if not x.is_floating_point() else f"convert with x.to({weight.dtype})")
        raise ValueError(f"input dtype is {x.dtype} but the model's weights are {weight.dtype}: {fix}")
    if x.device != weight.device:
        raise ValueError(f"input is on {x.device} but the model is on {weight.device}: move one of them, e.g. "
                         f"x.to('{weight.device}')")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(f"input is {x.shape[-2]}x{x.shape[-1]} px; the model needs at least {min_size}x{min_size} "
                         f"(five stride-2 stages): resize the images, e.g. to 224 px or the recipe's img_size")


def _check_args(width, num_classes, in_chans, drop_rate):
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ValueError(f"width must be a positive number, got {width!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an int >= 0 (0 = no classifier), got {num_classes!r}")
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be an int >= 1, got {in_chans!r}")
    if not isinstance(drop_rate, (int, float)) or not 0 <= drop_rate < 1:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")


__all__ = ["GhostNetV3", "LAYER_CFG", "MODEL_WIDTHS"]
