"""Evaluations of trained weights that cost no training: precise BN statistics, flip test-time averaging and
averaging the weights of the last checkpoints.

Owns: `average_states` (the mean of several state dicts of one model: the
weights of the last epochs, as in SWA, Izmailov et al. 2018), `evaluate_tta` (top-1 of a model with and without
averaging its softmax over the image and its horizontal mirror) and `posthoc_top1` (all of these for one run's
last checkpoints). ``benchmarks/variance_pilot.py`` uses them to find out which of these lowers the seed-to-seed
spread of top-1 (issue 22).

Why they can matter at short training: the BN running statistics are an exponential average (momentum 0.1) over
the last ~10 batches of a network whose weights still move, and the EMA weights get statistics averaged the same
way; recomputing them for the final weights removes that mismatch (precise BN, Wu & Johnson 2021).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from gv3lite.bn_stats import precise_bn
from gv3lite.data import build_loader
from gv3lite.train import deploy_form, evaluate

TTA_VARIANTS = ("center", "flip")


def average_states(states: list[dict]) -> dict:
    """The element-wise mean of ``states`` (state dicts of one architecture, e.g. the end-of-epoch weights of the
    last epochs); integer buffers (BN ``num_batches_tracked``) are taken from the last. Raises ``ValueError`` for
    no states or states with different keys/shapes."""
    if not states:
        raise ValueError("average_states needs at least one state dict")
    keys = list(states[-1])
    for s in states:
        if list(s) != keys or any(s[k].shape != states[-1][k].shape for k in keys):
            raise ValueError("average_states: the state dicts are not of one architecture (keys or shapes differ)")
    return {k: (torch.stack([s[k].float() for s in states]).mean(0).to(states[-1][k].dtype)
                if states[-1][k].is_floating_point() else states[-1][k].clone()) for k in keys}


@torch.no_grad()
def evaluate_tta(model: nn.Module, eval_dataset, batch_size: int = 256, device: str | torch.device = "cpu") -> dict:
    """Top-1 (%) of ``model`` over ``eval_dataset`` (an eval-transform ``ImageFolderDataset``) for the center crop
    (``"center"``) and for the mean softmax of the center crop and its horizontal mirror (``"flip"``): the training
    loop's own reading (`gv3lite.train.evaluate`, ``flip=False`` / ``True``) of the deploy form
    (`gv3lite.train.deploy_form`: the same function, faster). Raises `gv3lite.train.NonFiniteError` (a
    ``FloatingPointError``) when the logits are not finite. Runs on ``device``."""
    model = deploy_form(model).eval().to(device)
    loader = build_loader(eval_dataset, batch_size, train=False)
    return {variant: evaluate(model, loader, device=device, flip=variant == "flip")["top1"] for variant in TTA_VARIANTS}


def posthoc_top1(model: nn.Module, checkpoints: list[dict], train_dataset, eval_dataset,
                 bn_images: int | None = None, device: str | torch.device = "cpu") -> dict:
    """Top-1 (%) on ``eval_dataset`` of one run's weights, each with and without flip averaging.

    ``model``: the run's architecture (train form); ``checkpoints``: its last end-of-epoch training checkpoints
    (``gv3lite.train.fit``'s ``last.pth`` after each of the last epochs, oldest first; keys ``model`` and
    ``model_ema``). Keys of the result, ``<weights>_<center|flip>``: ``raw`` (final weights), ``ema`` (EMA
    weights), ``raw_pbn`` / ``ema_pbn`` (the same with `precise_bn` statistics from ``train_dataset``), ``avg_pbn``
    (mean of the raw weights of all ``checkpoints``, `average_states`, then precise BN). Evaluates on ``device``."""
    last = checkpoints[-1]
    weights = {"raw": (last["model"], False), "ema": (last["model_ema"], False), "raw_pbn": (last["model"], True),
               "ema_pbn": (last["model_ema"], True),
               "avg_pbn": (average_states([c["model"] for c in checkpoints]), True)}
    out = {}
    for name, (state, recompute) in weights.items():
        if state is None:
            continue
        m = copy.deepcopy(model)
        m.load_state_dict(state)
        if recompute:
            precise_bn(m, train_dataset, max_images=bn_images, device=device)
        out.update({f"{name}_{k}": v for k, v in evaluate_tta(m, eval_dataset, device=device).items()})
    return out
