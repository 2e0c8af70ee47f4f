"""Precise BatchNorm statistics: the running mean/variance of every BatchNorm recomputed for the final weights.

Owns `precise_bn`. Why: a BatchNorm's running statistics are an exponential average (momentum 0.1) over the last
~10 training batches of a network whose weights still move, and the EMA weights carry statistics averaged the same
way; recomputing them as a plain average over training batches for the weights that are evaluated removes that
mismatch (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", Sec. 3). ``gv3lite.train`` applies it before an
evaluation when ``Recipe.precise_bn`` is set; ``gv3lite.posthoc`` applies it to saved checkpoints.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from gv3lite.data import build_loader

PRECISE_BN_BATCH = 64  # images per batch of the statistics pass (the variance pilot's value)


def precise_bn(model: nn.Module, train_dataset, batch_size: int = PRECISE_BN_BATCH, max_images: int | None = None,
               seed: int = 0, device: str | torch.device = "cpu") -> nn.Module:
    """``model`` (moved to ``device``, changed in place and returned) with every BatchNorm's running statistics
    recomputed as the plain average over shuffled batches of ``train_dataset`` (its train-time augmentation; batch
    order fixed by ``seed``; at most ``max_images``, default all): ``torch.optim.swa_utils.update_bn``. Only the BN
    buffers change; the weights do not. Leaves ``model`` in eval mode. Images: (B, 3, H, W) float batches from
    ``gv3lite.data.build_loader``."""
    generator = torch.Generator().manual_seed(seed)
    loader = build_loader(train_dataset, batch_size, train=True, generator=generator)
    if max_images is not None:
        loader = [batch for _, batch in zip(range(max(1, max_images // batch_size)), loader)]
    update_bn(((batch[0],) for batch in loader), model.to(device), device=torch.device(device))
    return model.eval()
