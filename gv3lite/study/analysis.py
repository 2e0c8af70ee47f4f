"""The study's analysis of recorded runs: summaries, contrasts and verdicts.

Owns `summarize` (mean ± std per cell), `contrasts` (each cell against its grid's baseline, with the paper's claim
and claimed differences: `paper_diffs`), `differing_fields` (what a contrast changes), and `verdicts` (the verdict
table of ``gv3lite.stats.contrast_table``).
"""
from __future__ import annotations

import dataclasses

import pandas as pd

from gv3lite.paper import paper_claim, paper_results
from gv3lite.recipe import Recipe
from gv3lite.stats import Contrast, contrast_table
from gv3lite.study.grids import GRIDS, paper_key


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std (sample std, ddof=1; NaN for one seed) of top-1 and top-5 per (grid, cell), in run order,
    with ``n`` (seeds) and the paper's claim for the cell."""
    if runs.empty:  # no finished run yet (e.g. all of them are being trained by another call)
        return pd.DataFrame(columns=["grid", "cell", "n", "top1_mean", "top1_std", "top5_mean", "top5_std",
                                     "train_seconds", "paper_claim"])
    grouped = runs.groupby(["grid", "cell"], sort=False)
    summary = grouped.agg(n=("top1", "size"), top1_mean=("top1", "mean"), top1_std=("top1", "std"),
                          top5_mean=("top5", "mean"), top5_std=("top5", "std"),
                          train_seconds=("train_seconds", "mean")).reset_index()
    summary["paper_claim"] = [_claim(g, c, paper_claim) for g, c in zip(summary["grid"], summary["cell"])]
    return summary


def _claim(grid, cell, paper_claim):
    paper_cell, _ = paper_key(grid, cell)
    try:
        return paper_claim(grid, paper_cell)
    except KeyError:
        return "unknown"


def contrasts(runs: pd.DataFrame) -> list[Contrast]:
    """The study's contrasts among the cells in ``runs``: every non-baseline cell against its grid's baseline (the
    grid's first cell in ``GRIDS`` that has runs; in the architectures grid each model's ``conventional`` cell), with
    the paper's claim and claimed differences (`paper_diffs`). A cell that differs from its baseline only in
    ``ema`` reads the same trainings, so it is compared within-run (EMA minus raw top-1 of every training)."""
    out = []
    present = runs.groupby("grid", sort=False)["cell"].unique() if len(runs) else {}
    for grid, cells in (present.items() if len(runs) else []):
        cells = list(cells)
        order = [c.name for c in GRIDS.get(grid, [])]
        base_name = next((c for c in order if c in cells), cells[0])
        for cell in cells:
            base = cell.split("/")[0] + "/conventional" if "/" in cell else base_name
            if cell == base or base not in cells:
                continue
            changed = set(differing_fields(runs, grid, cell, base))
            out.append(Contrast(grid, cell, base, _claim(grid, cell, paper_claim), paper_diffs(grid, cell, base),
                                ("top1_ema", "top1_raw") if changed == {"ema"} else None))
    return out


def paper_diffs(grid: str, cell: str, baseline: str) -> tuple:
    """The paper's top-1 differences cell − baseline (pp), one per model width that both rows of
    ``paper_results.csv`` report (e.g. the recipe: +1.8 / +2.2 / +2.6 at 1.0x / 1.3x / 1.6x); () when unknown."""
    (paper_cell, label), (paper_base, _) = paper_key(grid, cell), paper_key(grid, baseline)
    try:
        rows = paper_results(grid)
    except KeyError:
        return ()
    rows = rows[(rows["metric"] == "top1") & rows["value"].notna()]
    if label is not None:
        rows = rows[rows["model"] == label]
    width = rows["model"].str.split().str[-1]  # "GhostNetV2 1.3x" and "GhostNetV3 1.3x" pair by width
    a = dict(zip(width[rows["cell"] == paper_cell], rows.loc[rows["cell"] == paper_cell, "value"]))
    b = dict(zip(width[rows["cell"] == paper_base], rows.loc[rows["cell"] == paper_base, "value"]))
    return tuple(round(a[w] - b[w], 3) for w in a if w in b)


def differing_fields(runs: pd.DataFrame, grid: str, cell: str, baseline: str) -> dict:
    """``field -> (baseline value, cell value)`` for every recipe field (``gv3lite.recipe.Recipe``, seed excepted)
    in which the resolved recipes of ``cell`` and ``baseline`` differ, read from the recipe columns of ``runs``
    (what was trained). Raises ``KeyError`` when either cell has no rows."""
    rows = {}
    for name in (cell, baseline):
        part = runs[(runs["grid"] == grid) & (runs["cell"] == name)]
        if part.empty:
            raise KeyError(f"runs has no rows for {grid}/{name}")
        rows[name] = part.iloc[0]
    fields = [f.name for f in dataclasses.fields(Recipe) if f.name != "seed" and f.name in runs.columns]
    return {f: (rows[baseline][f], rows[cell][f]) for f in fields if not _same(rows[baseline][f], rows[cell][f])}


def _same(x, y) -> bool:
    return bool(pd.isna(x) and pd.isna(y)) or x == y  # a CSV reads None as NaN


def _fmt(value) -> str:
    return "None" if pd.isna(value) else f"{value:g}" if isinstance(value, float) else str(value)


def verdicts(runs: pd.DataFrame, pool: bool = True, predictions: pd.DataFrame | None = None) -> pd.DataFrame:
    """The verdict table (``gv3lite.stats.contrast_table`` on `contrasts`): per distinct contrast the paired per-seed
    differences, mean, 95% interval, Holm-adjusted p, minimum detectable effect and verdict, plus ``differs`` (the
    recipe fields that differ from the baseline, ``field: baseline -> cell``). ``predictions``: per-image predictions
    of the runs (``predictions.csv.gz``); where present the intervals include the image-sampling variance."""
    items = contrasts(runs)
    table = contrast_table(runs, items, pool=pool, predictions=predictions)
    table["differs"] = ["; ".join(f"{k}: {_fmt(a)} -> {_fmt(b)}" for k, (a, b) in
                                  differing_fields(runs, r.grid, r.cell, r.baseline).items())
                        if r.note[:6] != "no run" else "" for r in table.itertuples()]
    return table
