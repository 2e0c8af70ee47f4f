"""Class-balanced subsets: the same ``per_class`` images of every class for a seed (`balanced_subset`), and the tuning
split (`tuning_split`: a fixed slice of ``train/`` that settings are chosen on and nothing trains on; `check_disjoint`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import torch


def balanced_subset(targets: Sequence[int], per_class: int | None, seed: int = 0,
                    class_names: Sequence[str] | None = None) -> list[int]:
    """Indices of ``per_class`` samples of every class, drawn without replacement with a fixed ``seed``.

    Returned in increasing index order. ``per_class=None`` keeps everything. Raises ``ValueError`` when a class
    has fewer than ``per_class`` samples, naming it (``class_names[c]`` when given, e.g. the class folder) and the fix.
    """
    if per_class is None:
        return list(range(len(targets)))
    if per_class < 1:
        raise ValueError(f"images per class must be >= 1 (or None for all), got {per_class}")
    g = torch.Generator().manual_seed(seed)
    targets = torch.as_tensor(list(targets))
    chosen = []
    for c in targets.unique().tolist():
        idx = (targets == c).nonzero().flatten()
        if len(idx) < per_class:
            name = f"class {class_names[c]!r} (index {c})" if class_names is not None else f"class {c}"
            raise ValueError(f"{name} has only {len(idx)} images, fewer than the {per_class} per class asked for; "
                             f"lower images_per_class_train / images_per_class_val to at most {len(idx)}, or use "
                             "None for all images")
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return sorted(torch.cat(chosen).tolist())


TUNING_PER_CLASS = 100  # images per class of train/ held out for choosing settings (issue 22)
TUNING_SPLITS = ("include", "exclude", "only")


def tuning_split(paths: Sequence[str], targets: Sequence, per_class: int = TUNING_PER_CLASS) -> list[int]:
    """Indices (increasing) of the tuning split among the samples of ``train/``: per class, the ``per_class`` files
    whose names (basename, e.g. ``n01440764_10026.JPEG``) have the smallest SHA-256.

    A fixed hash of the file name, not a seed: the split is the same on every machine and data copy, for any
    subset or class order, and it never changes when images are added to other classes. Every setting is chosen on
    these images and nothing trains on them (students and teachers use ``tuning="exclude"``); the study
    reports on ``val/`` only. With Imagenette: 100 x 10 = 1,000 of the 9,469 train images. A class with fewer than
    ``per_class`` files gives all of them (``ImageFolderDataset`` then reports it has none left to train on).
    """
    ranked: dict = {}  # target (class index or name) -> [(hash, index)]
    for i, (path, target) in enumerate(zip(paths, targets)):
        ranked.setdefault(target, []).append((hashlib.sha256(Path(path).name.encode()).hexdigest(), i))
    return sorted(i for items in ranked.values() for _, i in sorted(items)[:per_class])


def check_disjoint(tuning_paths: Sequence[str], report_paths: Sequence[str]) -> None:
    """Raise ``ValueError`` (one line, with the fix) when a tuning image is also a reported image (same file
    name: a data root whose ``val/`` holds copies of ``train/`` images, or a tuning split taken from ``val/``)."""
    shared = sorted({Path(p).name for p in tuning_paths} & {Path(p).name for p in report_paths})
    if shared:
        raise ValueError(f"the tuning split overlaps the report split in {len(shared)} images (e.g. {shared[0]!r}); "
                         "take the tuning split from train/ (tuning_split='only') and report on val/ images that are "
                         "not in train/")
