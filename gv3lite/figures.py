"""Figures: where they are written, the footer every figure carries, and the per-grid ablation plot.

Owns:
* `figures_dir(budget=None)`: ``$GV3LITE_FIGURES`` if set; else ``<repo>/runs/figures/<budget>/`` (git-ignored,
  so notebooks and ad-hoc runs never overwrite the committed ``figures/``; only the documented study commands,
  e.g. ``make main`` = ``gv3lite reproduce ... --figures figures``, write there).
* `savefig(fig, name, *, budget=None, command=None)`: stamps a footer (budget, git commit, command) and writes
  ``<figures_dir>/<name>.png``. Notebooks and ``gv3lite reproduce`` both use it.
* `plot_grid(summary, runs, grid, paper)`: one ablation grid — our mean ± std per cell (error bar, each seed a
  dot) beside the paper's reported number or claimed direction (``gv3lite.paper``); unknown paper values are
  written as such on the figure, never filled in.

Committed figures in ``figures/`` must come from real runs of the package's own commands.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from gv3lite import paper as paper_mod
from gv3lite.utils import budget as env_budget
from gv3lite.utils import git_commit, repo_root

FOOTER_FONTSIZE = 6.5


def figures_dir(budget: str | None = None) -> Path:
    """The folder figures go to (created if missing); ``budget`` defaults to ``GV3LITE_BUDGET`` (see module doc)."""
    if os.environ.get("GV3LITE_FIGURES"):
        path = Path(os.environ["GV3LITE_FIGURES"]).expanduser()
    else:
        path = repo_root() / "runs" / "figures" / (budget or env_budget())
    path.mkdir(parents=True, exist_ok=True)
    return path


def _default_command() -> str:
    argv0 = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if "ipykernel" in argv0 or "ipykernel" in " ".join(sys.argv[1:2]) or "ipykernel" in sys.modules:
        return "notebook"
    return " ".join([argv0, *sys.argv[1:]]).strip() or "python"


def savefig(fig, name: str, *, budget: str | None = None, command: str | None = None) -> Path:
    """Stamp a footer (budget, commit, command) on ``fig`` and save it as ``<figures_dir(budget)>/<name>.png``.

    ``name``: a file stem of letters, digits, ``_``, ``-``, ``.`` (no folders, no suffix). ``budget`` defaults to
    ``GV3LITE_BUDGET`` (``smoke`` when unset); ``command`` defaults to the running command line (``"notebook"``
    inside Jupyter). Returns the written path. Raises ``ValueError`` for a bad ``name``.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name or "") or name.endswith(".png"):
        raise ValueError(f"figure name {name!r}: use a plain file stem such as 'kd_grid' (no folder, no .png)")
    budget = budget or env_budget()
    command = command if command is not None else _default_command()
    footer = f"gv3lite · budget {budget} · commit {git_commit()} · {command}"
    fig.text(0.005, 0.005, footer, fontsize=FOOTER_FONTSIZE, color="0.4", ha="left", va="bottom")
    path = figures_dir(budget) / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_grid(summary, runs, grid: str, paper=None, title: str | None = None, paper_cells: dict | None = None):
    """One ablation grid as a figure; returns the matplotlib ``Figure`` (save it with `savefig`).

    ``summary``: rows of this grid with ``cell``, ``top1_mean``, ``top1_std``, ``n`` (``gv3lite.ablation.summarize``);
    ``runs``: per-run rows with ``grid``, ``cell``, ``seed``, ``top1``; ``paper``: the grid's rows of
    ``gv3lite.paper.paper_results`` (``None`` = look them up). Left axis: our top-1 (%) per cell, mean ± std with
    each seed as a dot. Right panel: per cell, the paper's top-1 where known, else its claimed direction
    against the baseline and "value unknown". ``paper_cells`` maps our cell name to ``(paper cell, paper model
    label or None)`` where the two differ (``gv3lite.ablation.paper_key``). Raises ``ValueError`` when ``summary`` has no rows for ``grid``.
    """
    import matplotlib.pyplot as plt  # lazy: pyplot is slow to import; `import gv3lite.figures` stays light

    ours = summary[summary["grid"] == grid].reset_index(drop=True) if "grid" in summary else summary
    if ours.empty:
        raise ValueError(f"no summary rows for grid {grid!r}; run `gv3lite reproduce --grids {grid}` first")
    if paper is None:
        try:
            paper = paper_mod.paper_results(grid)
        except KeyError:
            paper = None
    cells = list(ours["cell"])
    fig, (ax, ax_paper) = plt.subplots(1, 2, figsize=(max(6.0, 1.3 * len(cells) + 4), 3.6),
                                       gridspec_kw={"width_ratios": [max(len(cells), 2), 2.2]})
    x = range(len(cells))
    ax.errorbar(x, ours["top1_mean"], yerr=ours["top1_std"].fillna(0), fmt="o", color="C0", ms=7, capsize=5,
                label="ours: mean ± std")
    mine = runs[runs["grid"] == grid] if "grid" in runs else runs
    for i, cell in enumerate(cells):
        seeds = mine[mine["cell"] == cell]["top1"]
        ax.plot([i + 0.12] * len(seeds), seeds, ".", color="C1", alpha=0.8, label="ours: each seed" if i == 0 else None)
    ax.set_xticks(list(x), cells, rotation=20, ha="right")
    ax.set_ylabel("val top-1 (%)")
    n = int(ours["n"].max())
    ax.set_title(title or f"{grid}: our small-scale runs (n = {n} seed{'s' if n != 1 else ''})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")

    ax_paper.axis("off")
    ax_paper.set_title("paper (GhostNetV3, arXiv 2404.11202)", fontsize=9)
    lines = []
    for cell in cells:
        paper_cell, model = (paper_cells or {}).get(cell, (cell, None))
        rows = paper[(paper["cell"] == paper_cell) & (paper["metric"] == "top1")] if paper is not None else []
        if model is not None and len(rows):
            rows = rows[rows["model"] == model]
        if len(rows) == 0:
            lines.append(f"{cell}: not in the paper table")
            continue
        for _, row in rows.iterrows():
            claim = row["claim"] if isinstance(row["claim"], str) else "unknown"
            value = "value unknown" if row["value"] != row["value"] else f"{row['value']:g}%"  # NaN check
            said = "baseline" if claim == "baseline" else f"claims {claim}"
            lines.append(f"{cell} ({row['model']}): {value}, {said}")
    ax_paper.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", fontsize=7, family="monospace",
                  transform=ax_paper.transAxes, wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig
