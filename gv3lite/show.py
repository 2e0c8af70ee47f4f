"""Small plotting helpers for the notebooks: image grids, feature-map grids, kernel images, bar charts of
class probabilities. (Ablation figures live in ``gv3lite.figures``; save any figure with ``gv3lite.figures.savefig``.)

Owns: ``to_display``, ``show_images``, ``show_feature_maps``, ``show_kernels``, ``show_probabilities``.
Every function returns the ``matplotlib.figure.Figure`` it drew and never calls ``plt.show()``; matplotlib is
imported lazily so ``import gv3lite`` stays light.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from gv3lite.data import IMAGENET_MEAN, IMAGENET_STD


def _plt():
    import matplotlib.pyplot as plt  # lazy: pyplot is slow to import and sets up a backend
    return plt


def to_display(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Images ready for ``imshow``: (N, 3, H, W) or (3, H, W) -> float (N, H, W, 3) in [0, 1].

    uint8 input is divided by 255; float input is taken as normalized with ``mean``/``std`` (per channel) and
    un-normalized; pass ``mean=(0, 0, 0), std=(1, 1, 1)`` for float images already in [0, 1].
    Raises ``ValueError`` unless there are 3 channels.
    """
    x = images.detach().cpu()
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) or (3, H, W) images, got shape {tuple(images.shape)}")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    else:
        x = x.float() * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    return x.clamp(0, 1).permute(0, 2, 3, 1)


def show_images(images: torch.Tensor, titles: Sequence[str] | None = None, ncols: int = 5, size: float = 2.0,
                mean=IMAGENET_MEAN, std=IMAGENET_STD, suptitle: str | None = None):
    """A grid of RGB images with optional per-image titles.

    Args:
        images: (N, 3, H, W) uint8, or float normalized with ``mean``/``std`` (see ``to_display``).
        titles: N strings or None. ncols: images per row. size: inches per image.
    Returns the Figure. Raises ``ValueError`` for a wrong shape or a titles/images count mismatch.
    """
    x = to_display(images, mean, std)
    n = x.shape[0]
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {n} images but {len(titles)} titles")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = _plt().subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)),
                                squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(x[i].numpy())
            if titles is not None:
                ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_feature_maps(maps: torch.Tensor, ncols: int = 8, size: float = 1.2, titles: Sequence[str] | None = None,
                      highlight: Sequence[int] = (), cmap: str = "viridis", suptitle: str | None = None):
    """Feature maps of one image as a grid of grey-level pictures, each scaled to its own min/max.

    Args:
        maps: (C, H, W) activations (e.g. one image's output of a conv layer).
        ncols: maps per row; size: inches per map; titles: C strings (default: the channel index).
        highlight: channel indices framed in red (e.g. a near-duplicate pair).
    Returns the Figure. Raises ``ValueError`` unless ``maps`` is 3-D.
    """
    m = maps.detach().float().cpu()
    if m.ndim != 3:
        raise ValueError(f"expected (C, H, W) feature maps, got shape {tuple(maps.shape)}")
    c = m.shape[0]
    ncols = min(ncols, c)
    nrows = math.ceil(c / ncols)
    fig, axes = _plt().subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)),
                                squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= c:
            ax.axis("off")
            continue
        ax.imshow(m[i].numpy(), cmap=cmap)
        ax.set_title(titles[i] if titles is not None else str(i), fontsize=7)
        if i in highlight:
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2.5)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_kernels(kernels: Sequence[torch.Tensor], titles: Sequence[str] | None = None, size: float = 1.8,
                 annotate: bool = True, suptitle: str | None = None):
    """2-D conv kernels side by side on one shared, zero-centred colour scale (red > 0 > blue).

    Args:
        kernels: a list of (kh, kw) tensors (e.g. one output/input channel slice of each branch's fused kernel).
        titles: one string per kernel. annotate: write each weight's value in its cell.
    Returns the Figure. Raises ``ValueError`` if a kernel is not 2-D or the titles count differs.
    """
    ks = [k.detach().float().cpu() for k in kernels]
    if any(k.ndim != 2 for k in ks):
        raise ValueError(f"expected 2-D (kh, kw) kernels, got shapes {[tuple(k.shape) for k in ks]}")
    if titles is not None and len(titles) != len(ks):
        raise ValueError(f"got {len(ks)} kernels but {len(titles)} titles")
    vmax = max(float(k.abs().max()) for k in ks) or 1.0
    fig, axes = _plt().subplots(1, len(ks), figsize=(size * len(ks), size + 0.5), squeeze=False)
    for i, (ax, k) in enumerate(zip(axes.flat, ks)):
        ax.imshow(k.numpy(), cmap="coolwarm", vmin=-vmax, vmax=vmax)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
        if annotate and k.numel() <= 49:
            for (r, c), v in zip(((r, c) for r in range(k.shape[0]) for c in range(k.shape[1])), k.flatten()):
                ax.text(c, r, f"{float(v):.2f}", ha="center", va="center", fontsize=7)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_probabilities(probs: torch.Tensor, class_names: Sequence[str], labels: Sequence[str] | None = None,
                       ax=None, title: str | None = None):
    """Grouped bar chart of one or more class distributions over the same classes.

    Args:
        probs: (K,) or (M, K) probabilities (rows sum to 1). class_names: K names.
        labels: M legend entries (e.g. ``["T=1", "T=4"]``). ax: draw into this Axes (default: a new figure).
    Returns the Figure. Raises ``ValueError`` if K differs from ``len(class_names)``.
    """
    p = probs.detach().float().cpu()
    p = p.unsqueeze(0) if p.ndim == 1 else p
    m, k = p.shape
    if k != len(class_names):
        raise ValueError(f"probabilities have {k} classes but {len(class_names)} class names were given")
    if ax is None:
        fig, ax = _plt().subplots(figsize=(max(4.0, 0.6 * k), 2.8))
    else:
        fig = ax.figure
    width = 0.8 / m
    for i in range(m):
        ax.bar([c + (i - (m - 1) / 2) * width for c in range(k)], p[i].numpy(), width,
               label=labels[i] if labels is not None else None)
    ax.set_xticks(range(k))
    ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("probability")
    if title:
        ax.set_title(title, fontsize=10)
    if labels is not None:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["to_display", "show_images", "show_feature_maps", "show_kernels", "show_probabilities"]
