"""Class-balanced subsets: the same ``per_class`` images of every class for a seed (`balanced_subset`)."""
from __future__ import annotations

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
