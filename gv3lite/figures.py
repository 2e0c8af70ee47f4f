"""Figures: where they are written, the footer every figure carries, and the per-grid ablation plot.

Owns:
* `figures_dir(budget=None)`: ``$GV3LITE_FIGURES`` if set; else ``<repo>/runs/figures/<budget>/`` (git-ignored,
  so notebooks and ad-hoc runs never overwrite the committed ``figures/``; only the documented study commands,
  ``make publish`` = ``gv3lite publish``, write there).
* `savefig(fig, name, *, budget=None, command=None)`: stamps a footer (budget, git commit, command) and writes
  ``<figures_dir>/<name>.png``. Notebooks and ``gv3lite reproduce`` both use it.
* `plot_grid(summary, runs, grid, paper)`: one ablation grid — our mean ± std per cell (error bar, each seed a
  dot) beside the direction the paper claims (``gv3lite.paper``; its ImageNet accuracies are not drawn beside ours);
* `plot_forest(table)`: all claims as paired differences with 95% intervals beside the source's differences, each
  labelled derived or checkpoint (``gv3lite.paper.difference_kind``) and the paper's directions;
* `plot_claims(claims, sources)`: the factorial's declared claims as model effects with their 95% intervals (and the
  wider interval at the look's strictest sequential Holm level: it excludes 0 only for a decided claim), beside the
  source's numbers by their kind.

Committed figures in ``figures/`` must come from real runs of the package's own commands.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np

from gv3lite import paper as paper_mod
from gv3lite.budgets import budget as env_budget
from gv3lite.utils import git_commit, repo_root
from gv3lite.utils import figure_bytes, write_atomic
from gv3lite.verdicts import DELTA, contrast_label, t_interval

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


def savefig(fig, name: str, *, budget: str | None = None, command: str | None = None, folder=None,
            commit: str | None = None) -> Path:
    """Stamp a footer (budget, commit, command) on ``fig`` and save it as ``<figures_dir(budget)>/<name>.png``.

    ``name``: a file stem of letters, digits, ``_``, ``-``, ``.`` (no folders, no suffix). ``budget`` defaults to
    ``GV3LITE_BUDGET`` (``smoke`` when unset); ``command`` defaults to the running command line (``"notebook"``
    inside Jupyter); ``folder`` (created if missing) replaces ``figures_dir(budget)``; ``commit`` replaces the
    checkout's ``git_commit()`` in the footer (a study's figures give the commits its runs were trained at). Written
    atomically (``gv3lite.utils.write_atomic``). Returns the written path. Raises ``ValueError`` for a bad ``name``.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name or "") or name.endswith(".png"):
        raise ValueError(f"figure name {name!r}: use a plain file stem such as 'kd_grid' (no folder, no .png)")
    budget = budget or env_budget()
    command = command if command is not None else _default_command()
    footer = f"gv3lite · budget {budget} · commit {commit or git_commit()} · {command}"
    fig.text(0.005, 0.005, footer, fontsize=FOOTER_FONTSIZE, color="0.4", ha="left", va="bottom")
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
    path = (Path(folder) if folder is not None else figures_dir(budget)) / f"{name}.png"
    return write_atomic(path, figure_bytes(fig, dpi=120, bbox_inches="tight"))  # never a half-written PNG


def plot_grid(summary, runs, grid: str, paper=None, title: str | None = None, paper_cells: dict | None = None):
    """One ablation grid as a figure; returns the matplotlib ``Figure`` (save it with `savefig`).

    ``summary``: rows of this grid with ``cell``, ``top1_mean``, ``top1_std``, ``n`` (``gv3lite.study.analysis.summarize``);
    ``runs``: per-run rows with ``grid``, ``cell``, ``seed``, ``top1``; ``paper``: the grid's rows of
    ``gv3lite.paper.paper_results`` (``None`` = look them up). Left axis: our top-1 (%) per cell, mean ± std with
    each seed as a dot. Right panel: per cell, the direction the paper claims against the baseline (not
    its ImageNet top-1: absolute accuracies of the two datasets are not comparable). ``paper_cells`` maps our cell name to ``(paper cell, paper model
    label or None)`` where the two differ (``gv3lite.study.grids.paper_key``). Raises ``ValueError`` when ``summary`` has no rows for ``grid``.
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
    ax_paper.set_title("paper (ImageNet; arXiv 2404.11202)", fontsize=9)
    ax_paper.text(0.0, 1.0, "\n".join(_paper_lines(cells, paper, paper_cells)), va="top", ha="left", fontsize=7,
                  family="monospace", transform=ax_paper.transAxes, wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def _paper_lines(cells, paper, paper_cells) -> list[str]:
    """Per cell the direction the paper claims against the grid's baseline -- never its absolute ImageNet top-1,
    which is not comparable with our Imagenette accuracies (the claimed differences are in the forest plot)."""
    lines = []
    for cell in cells:
        paper_cell, model = (paper_cells or {}).get(cell, (cell, None))
        rows = paper[(paper["cell"] == paper_cell) & (paper["metric"] == "top1")] if paper is not None else []
        if model is not None and len(rows):
            rows = rows[rows["model"] == model]
        if len(rows) == 0:
            lines.append(f"{cell}: not in the paper table")
            continue
        claim = next((c for c in rows["claim"] if isinstance(c, str)), "unknown")
        lines.append(f"{cell}: baseline" if claim == "baseline" else f"{cell}: claims {claim}")
    return lines


MARKERS = {"derived": "D", "checkpoint": "s"}  # forest plot: how a source's difference is drawn, by its kind


def _forest_legend(ax, delta: float, n_rows: int) -> None:
    """The forest plot's legend, below the axes: the +-``delta`` band, our intervals and seeds, the source's markers."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="0.88", lw=8, label=f"no practical effect (±{delta:g} pp)"),
               Line2D([], [], color="C0", lw=2, marker="o", label="ours: mean paired difference, 95% interval"),
               Line2D([], [], color="C1", ls="", marker=".", label="ours: each seed (EMA: each training)"),
               Line2D([], [], color="C3", ls="", marker=MARKERS["derived"], mfc="none",
                      label="derived: two published ImageNet top-1 subtracted by us (not an ablation)"),
               Line2D([], [], color="C3", ls="", marker=MARKERS["checkpoint"], mfc="none",
                      label="checkpoint: measured on the released model (not an ablation)"),
               Line2D([], [], color="C3", marker=">", label="paper's direction (value unknown)")]
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.3, -1.2 / (n_rows + 2)), ncol=2,
              frameon=False)


def plot_forest(table, title: str | None = None, delta: float | None = None):
    """A forest plot of the study's claims; returns the matplotlib ``Figure`` (save it with `savefig`).

    ``table``: `gv3lite.study.analysis.verdicts` / `gv3lite.stats.contrast_table` rows (``grid``, ``cell``,
    ``baseline``, ``diff``, ``low``, ``high``, ``per_seed``, ``paper_diff``, ``claim``, ``verdict``). One row per
    contrast: the paired difference (pp) with its 95% interval, each seed's (or, within-run, each training's)
    difference as a dot, the +-``delta`` band of no practical effect (default ``gv3lite.verdicts.DELTA``), and the
    source's number, labelled by what it is (``gv3lite.paper.difference_kind``: a diamond per model width for a
    difference we derived from two published top-1, a square for a measurement of the released checkpoint; the paper
    states neither) or, when only the paper's direction is known, an arrow. Only differences are drawn: those are
    ImageNet differences, ours Imagenette ones at a small budget. Each row is named ``grid: cell vs baseline``, a
    composite contrast with ``(composite)`` (``gv3lite.verdicts.contrast_label``).
    Raises ``ValueError`` for an empty table.
    """
    import matplotlib.pyplot as plt

    if len(table) == 0:
        raise ValueError("no contrasts to draw; run `gv3lite reproduce` with at least a baseline and one other cell")
    delta = DELTA if delta is None else delta
    rows = table.reset_index(drop=True)
    seeds = [[float(v) for v in s.split()] if isinstance(s, str) else [] for s in rows["per_seed"]]
    claimed = [[float(v) for v in s.split("/") if v.strip()] if isinstance(s, str) else [] for s in rows["paper_diff"]]
    values = [v for r, d, c in zip(rows.itertuples(), seeds, claimed) for v in (r.low, r.high, r.diff, *d, *c)]
    finite = [abs(v) for v in values if np.isfinite(v)]
    span = max(finite + [2 * delta]) * 1.1
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(rows) + 1.8))
    ax.axvspan(-delta, delta, color="0.88")
    ax.axvline(0, color="0.4", lw=0.8)
    for i, r in rows.iterrows():
        y = len(rows) - 1 - i
        ax.plot(seeds[i], [y + 0.2] * len(seeds[i]), ".", color="C1", alpha=0.6, ms=4)
        if r["low"] == r["low"]:
            ax.plot([r["low"], r["high"]], [y, y], color="C0", lw=2)
        ax.plot([r["diff"]], [y], "o", color="C0", ms=6)
        if claimed[i]:
            ax.plot(claimed[i], [y - 0.2] * len(claimed[i]), MARKERS[paper_mod.difference_kind(r["grid"])],
                    color="C3", ms=5, mfc="none")
        if not claimed[i] and r["claim"] in ("better", "worse"):
            sign = 1 if r["claim"] == "better" else -1
            ax.annotate("", xy=(sign * 0.15 * span, y - 0.2), xytext=(0, y - 0.2),
                        arrowprops=dict(arrowstyle="->", color="C3", lw=1.2))
        ax.text(1.01, y, r["verdict"], transform=ax.get_yaxis_transform(), va="center", fontsize=8)
    labels = [f"{r.grid}: {contrast_label(r.grid, r.cell, r.baseline)}" for r in rows[::-1].itertuples()]
    ax.set_yticks(range(len(rows)), [t.replace(" vs ", "\nvs ") if len(t) > 48 else t for t in labels], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlim(-span, span)
    ax.set_xlabel("top-1 difference, cell − baseline (pp)")
    ax.set_title(title or "claims: paired differences with 95% intervals", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    _forest_legend(ax, delta, len(rows))
    fig.tight_layout(rect=(0, 0.04, 0.9, 1))
    return fig


def _claims_legend(ax, delta: float, n_rows: int, kinds: set) -> None:
    """The legend of `plot_claims`, below the axes: the band, our two intervals, and only the source markers drawn."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="0.88", lw=8, label=f"no practical effect (±{delta:g} pp)"),
               Line2D([], [], color="C0", lw=3, marker="o", label="ours: effect (OLS with block terms), 95% interval"),
               Line2D([], [], color="C0", lw=0.8, marker="|", alpha=0.7,
                      label="ours: interval at the look's strictest sequential Holm level")]
    if "derived" in kinds:
        handles.append(Line2D([], [], color="C3", ls="", marker=MARKERS["derived"], mfc="none",
                              label="derived: two published ImageNet top-1 subtracted by us (not stated by the paper)"))
    if "checkpoint" in kinds:
        handles.append(Line2D([], [], color="C3", ls="", marker=MARKERS["checkpoint"], mfc="none",
                              label="checkpoint: measured on the released model (not an ablation)"))
    if "paper" in kinds:
        handles.append(Line2D([], [], color="C3", marker=">",
                              label="paper: the direction it states (no value stated)"))
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.4, -1.2 / (n_rows + 2)), ncol=2,
              frameon=False)


def plot_claims(claims, sources: dict | None = None, title: str | None = None, delta: float | None = None):
    """A forest plot of the factorial study's declared claims; returns the matplotlib ``Figure`` (save it with
    `savefig`).

    ``claims``: one row per claim with ``claim``, ``diff``, ``se``, ``df`` (the model's effect, its standard error and
    degrees of freedom, pp), ``low``/``high`` (the interval at the look's strictest sequential Holm level) and ``verdict``
    (``gv3lite.study.looks.analyse_looks``' claims, or a factorial verdicts.csv). Drawn per claim: the effect with
    its 95% t interval (thick) and, just above, the sequential interval (thin), the +-``delta`` band of no practical
    effect (default ``gv3lite.verdicts.DELTA``), the verdict at the right, and the source's number from ``sources``
    (claim -> ``dict(kind, values)`` with ``kind`` ``"derived"`` or ``"checkpoint"``: markers labelled so, or
    ``dict(kind="paper", direction="better"|"worse")``: an arrow for the direction the paper states). A claim
    without a source has no marker: "paper" labels only what the paper states. Raises ``ValueError`` for no rows.
    """
    import matplotlib.pyplot as plt

    if len(claims) == 0:
        raise ValueError("no claims to draw; analyse a factorial study with at least its first look's blocks")
    delta, sources = DELTA if delta is None else delta, sources or {}
    rows = claims.reset_index(drop=True)
    ci = t_interval(rows["diff"], rows["se"], rows["df"])
    values = [*rows["low"], *rows["high"], *ci["low"], *ci["high"],
              *[v for s in sources.values() for v in s.get("values", ())]]
    span = max([abs(v) for v in values if np.isfinite(v)] + [2 * delta]) * 1.1
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(rows) + 1.9))
    ax.axvspan(-delta, delta, color="0.88")
    ax.axvline(0, color="0.4", lw=0.8)
    for i, r in rows.iterrows():
        y, source = len(rows) - 1 - i, sources.get(r["claim"], {})
        ax.plot([r["low"], r["high"]], [y + 0.18, y + 0.18], "|-", color="C0", lw=0.8, ms=5, alpha=0.7)
        ax.plot([ci["low"][i], ci["high"][i]], [y, y], color="C0", lw=3)
        ax.plot([r["diff"]], [y], "o", color="C0", ms=6)
        if source.get("values"):
            ax.plot(source["values"], [y - 0.25] * len(source["values"]), MARKERS[source["kind"]], color="C3", ms=5,
                    mfc="none")
        elif source.get("kind") == "paper":
            sign = 1 if source["direction"] == "better" else -1
            ax.annotate("", xy=(sign * 0.15 * span, y - 0.25), xytext=(0, y - 0.25),
                        arrowprops=dict(arrowstyle="->", color="C3", lw=1.2))
        ax.text(1.01, y, r["verdict"], transform=ax.get_yaxis_transform(), va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), list(rows["claim"][::-1]), fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlim(-span, span)
    ax.set_xlabel("top-1 effect, high minus low level (pp)")
    ax.set_title(title or "declared claims: model effects with 95% intervals", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    _claims_legend(ax, delta, len(rows), {s.get("kind") for s in sources.values()})
    fig.tight_layout(rect=(0, 0.04, 0.88, 1))
    return fig


def plot_learning_curves(history, runs, title: str | None = None):
    """Learning curves per cell; returns the matplotlib ``Figure`` (save it with `savefig`), or ``None`` when
    ``history`` holds no run of ``runs`` (e.g. results recorded before histories were kept).

    ``history``: per-epoch rows with ``run_id``, ``epoch``, ``train_loss`` and ``val_top1`` / ``ema_top1`` (%, NaN on
    epochs without evaluation) -- ``history.csv`` beside a budget's results; ``runs``: ``runs.csv`` rows (``grid``,
    ``cell``, ``seed``, ``run_id``). One column per grid: top, the training loss per epoch (one colour per cell, one
    line per seed); bottom, the evaluated val top-1 of the EMA weights (raw weights where a run keeps none).
    """
    import matplotlib.pyplot as plt

    rows = runs[["grid", "cell", "seed", "run_id"]].merge(history, on="run_id")
    if rows.empty:
        return None
    grids = list(dict.fromkeys(rows["grid"]))
    fig, axes = plt.subplots(2, len(grids), figsize=(3.6 * len(grids), 5.4), squeeze=False, sharex="col")
    for j, grid in enumerate(grids):
        part = rows[rows["grid"] == grid]
        for k, (cell, cell_rows) in enumerate(part.groupby("cell", sort=False)):
            for i, (seed, r) in enumerate(cell_rows.groupby("seed")):
                label = cell if i == 0 else None
                axes[0, j].plot(r["epoch"], r["train_loss"], ".-", color=f"C{k}", ms=3, lw=1, alpha=0.8, label=label)
                top1 = r["ema_top1"].where(r["ema_top1"].notna(), r["val_top1"]) if "ema_top1" in r else r["val_top1"]
                axes[1, j].plot(r["epoch"], top1, "o-", color=f"C{k}", ms=3, lw=0.8, alpha=0.8)
        axes[0, j].set_title(grid, fontsize=9)
        axes[0, j].legend(fontsize=6)
        axes[1, j].set_xlabel("epoch")
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("training loss")
    axes[1, 0].set_ylabel("val top-1 (%), EMA weights")
    fig.suptitle(title or "learning curves (one line per seed)", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig
