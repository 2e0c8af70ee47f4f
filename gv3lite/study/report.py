"""The study's report: Markdown (summary, verdict table, sizing note, what the study can and cannot say:
`scope_note`, report.md), the figures of a budget, and `report` (re-analysis of a recorded budget folder without
training).
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from gv3lite.budgets import BUDGETS, HALF_WIDTH_TARGETS
from gv3lite.fingerprint import recorded_fingerprints
from gv3lite.figures import plot_forest, plot_grid, plot_learning_curves, savefig
from gv3lite.paper import difference_kind, paper_results
from gv3lite.schemas import read_results
from gv3lite.verdicts import ALPHA, COMPOSITE_GRIDS, DELTA, POWER, contrast_label, seeds_for_half_width
from gv3lite.study.analysis import summarize, verdicts
from gv3lite.study.completeness import read_study
from gv3lite.study.grids import paper_key
from gv3lite.study.plan import plan, recorded_grids
from gv3lite.study.provenance import code_label, portable_command
from gv3lite.study.records import PREDICTIONS, design_of, read_calls, wall_time
from gv3lite.teacher import PRETRAINED_TEACHERS
from gv3lite.utils import write_atomic, write_csv


def duration(seconds: float) -> str:
    """``seconds`` as ``"45 s"``, ``"41 min 45 s"`` or ``"2 h 05 min"``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def calls_note(calls: pd.DataFrame | None) -> str:
    """``"total wall time X over N calls (calls.csv)"`` or ``"wall time not recorded (no calls.csv)"``."""
    if calls is None or calls.empty:
        return "wall time not recorded (no calls.csv)"
    n, interrupted = len(calls), int(calls["interrupted"].astype(str).eq("True").sum())
    union, summed = wall_time(calls), float(calls["wall_seconds"].sum())
    overlap = f"; calls overlapped: {duration(summed)} summed" if summed - union >= 1 else ""
    return (f"total wall time {duration(union)} over {n} call{'s' if n != 1 else ''} of `gv3lite reproduce`"
            + (f" ({interrupted} interrupted)" if interrupted else "") + f"{overlap} (calls.csv)")


def summary_markdown(summary: pd.DataFrame, budget: str) -> str:
    """The summary as a Markdown table (top-1 / top-5 as mean ± std in %)."""
    lines = [f"# Ablation summary ({budget} budget)", "",
             "top-1: of the EMA weights where the cell keeps an EMA, else of the raw weights; top-5: raw weights. "
             "Cells with the same run id (runs.csv) are one training.", "",
             "| grid | cell | n | top-1 (%) | top-5 (%) | paper claim | train s / run |", "|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        lines.append(f"| {r.grid} | {r.cell} | {r.n} | {_pm(r.top1_mean, r.top1_std)} | {_pm(r.top5_mean, r.top5_std)} "
                     f"| {r.paper_claim} | {r.train_seconds:.0f} |")
    return "\n".join(lines) + "\n"


def _pm(mean, std) -> str:
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std == std else " (1 seed)")


def _num(value, spec: str) -> str:
    """``value`` formatted with ``spec`` ("n/a" for NaN, never "-0.00")."""
    return "n/a" if value != value else format(value + 0.0, spec).replace("-0.00", "+0.00")


def _mde(value) -> str:
    """The minimum detectable effect (pp) for a table; above 100 pp (top-1 spans 100 pp) no effect is detectable."""
    return "none < 100 pp" if value == value and value > 100 else _num(value, ".1f")


def _ci(r) -> str:
    if r.low != r.low:
        return "n/a"
    return f"[{r.low:+.2f}, {r.high:+.2f}]"


def _paper(r) -> str:
    """The source's number or claim for a verdict row, labelled by what it is: a difference of two published values
    is ``derived: +1.8/+2.2/+2.6`` or ``checkpoint: +0.2`` (`gv3lite.paper.difference_kind`: the paper states
    neither), a direction is ``paper: better`` (stated by the paper), else ``unknown``."""
    if isinstance(r.paper_diff, str) and r.paper_diff:
        return f"{difference_kind(r.grid)}: {r.paper_diff}"
    return f"paper: {r.claim}" if r.claim in ("better", "worse") else str(r.claim)


VERDICT_HEADER = ("grid", "contrast", "differs in", "per seed (pp)", "diff (pp)", "95% CI", "half-width (pp)",
                  "Holm p", "MDE (pp)", "source's claim (pp)", "verdict")


def table_lines(rows: pd.DataFrame) -> list[str]:
    """A table of text cells (every value a ``str``) as Markdown lines: header, separator, one line per row."""
    return (["| " + " | ".join(rows.columns) + " |", "|" + "---|" * len(rows.columns)]
            + ["| " + " | ".join(row) + " |" for row in rows.itertuples(index=False)])


def verdict_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The verdict table (`verdicts`, or verdicts.csv read by `read_verdicts`) as text cells, one row per contrast
    (columns `VERDICT_HEADER`): contrast (named by ``gv3lite.verdicts.contrast_label``: composite ones marked),
    fields that differ, per-seed differences, diff, 95% interval and its half-width, Holm p, MDE, the source's
    number or claim, verdict (bold). What report.md and README's Results block show (`verdict_lines`), and what the
    notebooks display (``gv3lite.study.committed``)."""
    rows = []
    for r in table.itertuples():
        per_seed = str(r.per_seed)
        rows.append(tuple(str(x) for x in (
            r.grid, contrast_label(r.grid, r.cell, r.baseline), r.differs or "—",
            per_seed if len(per_seed) < 60 else per_seed[:57] + "...", _num(r.diff, "+.2f"), _ci(r),
            _num((r.high - r.low) / 2, ".2f"), _num(r.p_holm, ".3f"), _mde(r.mde), _paper(r), f"**{r.verdict}**")))
    return pd.DataFrame(rows, columns=list(VERDICT_HEADER), dtype=str)


def verdict_lines(table: pd.DataFrame) -> list[str]:
    """`verdict_rows` of ``table`` as Markdown lines (report.md's and README's verdict table)."""
    lines = table_lines(verdict_rows(table))
    if table.empty:
        lines.append("| – | no grid has both a baseline and another cell in this run | | | | | | | | | |")
    return lines


def sizing_note(table: pd.DataFrame, budget: str, runs: pd.DataFrame, calls: pd.DataFrame | None = None) -> str:
    """One Markdown sentence: the 95% half-widths the between-run contrasts of ``table`` (`verdicts`) reached
    against the budget's target (`HALF_WIDTH_TARGETS`); when one is wider, the seeds per cell that bring every
    contrast within the target at the spread measured here (the most any one needs, `gv3lite.verdicts
    .seeds_for_half_width`, with its standard error x sqrt(seeds) as the SD of a paired per-seed difference and its
    residual df growing with the seeds as in the table) and, given the call log ``calls`` (`read_calls`), the wall
    time that plan would take at the recorded wall time per training. ``""`` when the
    budget has no target or the table no between-run contrast with an interval (within-run EMA rows are left out:
    their width does not depend on the seeds)."""
    target = HALF_WIDTH_TARGETS.get(budget)
    between = table[~table["method"].astype(str).str.startswith("within-run") & table["high"].notna()
                    & table["low"].notna() & (table["n"] >= 2)] if len(table) else table
    if target is None or between.empty:
        return ""
    half = (between["high"] - between["low"]) / 2
    reached = f"{half.min():.2f}" if f"{half.min():.2f}" == f"{half.max():.2f}" else f"{half.min():.2f}–{half.max():.2f}"
    text = (f"95% half-width target of the {budget} budget: ±{target:g} pp; reached ±{reached} pp over "
            f"{len(between)} between-run contrast{'s' if len(between) != 1 else ''}")
    if (half <= target).all():
        return text + " (met)."

    def seeds_needed(row) -> int:  # the residual df grow with the seeds as in this table: df / (n - 1) per seed
        n = int(row["n"])
        return seeds_for_half_width(float(row["se"]) * math.sqrt(n), target,
                                    pooled_cells=1 + max(float(row["df"]), 1.0) / (n - 1))

    try:
        needs = between.apply(seeds_needed, axis=1)
    except ValueError:
        return text + " (not met; at the spread measured here one contrast needs more than 1000 seeds per cell)."
    worst = between.loc[needs.idxmax()]
    need = int(needs.max())
    text += (f" (not met): at the spread measured here ±{target:g} pp needs {need} seeds per cell (the most any "
             f"contrast needs: {worst['grid']}/{worst['cell']}, paired per-seed SD "
             f"{float(worst['se']) * math.sqrt(int(worst['n'])):.1f} pp)")
    trained = 0 if calls is None or calls.empty else int(calls["trained"].sum())
    if trained:
        per_training = float(calls["wall_seconds"].sum()) / trained
        planned = len({it["run_id"] for it in plan(budget, recorded_grids(runs, budget), seeds=need)})
        text += (f": {planned} trainings for the grids recorded here, about {duration(planned * per_training)} at "
                 f"the {duration(per_training)} of wall time per training recorded in calls.csv")
    return text + "."


def _values(runs: pd.DataFrame, column: str) -> str:
    """The distinct values of a recipe column of runs.csv as integers joined by "/" ("?" when not recorded)."""
    values = sorted({int(v) for v in runs[column].dropna()}) if column in runs else []
    return "/".join(map(str, values)) or "?"


def scope_note(runs: pd.DataFrame) -> str:
    """One Markdown paragraph: what the study of ``runs`` (runs.csv) can and cannot say about the paper's claims.
    Its training length, resolution, images and teachers are read from the runs' recipe columns (``epochs``,
    ``img_size``, ``images_per_class_train``, ``tuning``, ``teacher``, ``precise_bn``, ``flip_tta``: which images
    and which reading each top-1 comes from); the paper's setting is ImageNet-1k at 224 px for 600 epochs (the
    length iFormer's Table 3 lists for GhostNetV3, a secondary source: ../shared/paper/recipe.json; as in
    ``gv3lite.paper.DIFFERENCE_NOTES``); the Mixup remark follows the Imagenette README (fastai/imagenette, "Tips").
    Composite contrasts: ``gv3lite.verdicts.COMPOSITE_GRIDS`` in a one-factor study (named by its *differs in*
    column), the whole-recipe claim in a factorial one (its two corners; report.md's factor table)."""
    per_class = runs["images_per_class_train"] if "images_per_class_train" in runs else pd.Series([None])
    images = ("all training images" if per_class.isna().all()
              else f"{_values(runs, 'images_per_class_train')} training images per class")
    reading = ""
    if "tuning" in runs and runs["tuning"].eq("exclude").all():
        images += " (train/ minus the tuning split)"
        reading = (" Every top-1 is read on Imagenette's val/ images; the regime and its reading were chosen on the "
                   "tuning split (100 train/ images per class, `benchmarks/variance_pilot.py`), which no run trains "
                   "or is reported on.")
    if {"precise_bn", "flip_tta"} <= set(runs) and (runs["precise_bn"].eq(True) & runs["flip_tta"].eq(True)).all():
        reading += (" Each weights' top-1 (EMA and raw) is read with BatchNorm statistics recomputed over the run's "
                    "training images (precise BN) and the softmax averaged over each image and its mirror (flip).")
    teachers = sorted(set(runs["teacher"].dropna()) & set(PRETRAINED_TEACHERS)) if "teacher" in runs else []
    outside = (f" Its KD contrasts distil from {', '.join(teachers)}, an ImageNet-pretrained teacher (**outside "
               "data**: 1.28 M images, among them 3,791 of the 3,925 Imagenette val images): they measure transfer "
               "from far more data, not the paper's setting, where teacher and student share one training set."
               if teachers else "")
    if design_of(runs) == "factorial":
        composite = ("The claim marked *(composite)*, `recipe`, compares the design's two corners (the GhostNetV3 "
                     "recipe and the conventional one, report.md's factor table): it changes every factor at once, so "
                     "its verdict is about the whole bundle, not about any one ingredient.")
    else:
        composite = (f"Contrasts marked *(composite)* ({', '.join(f'`{g}`' for g in COMPOSITE_GRIDS)}) change several "
                     "fields at once (the *differs in* column): their verdict is about the whole bundle, not about any "
                     "one ingredient.")
    return (f"**What this study can and cannot say.** Its runs train for {_values(runs, 'epochs')} epochs at "
            f"{_values(runs, 'img_size')} px on {images} of Imagenette's 10 classes; the paper's claims are about "
            "compact models trained on ImageNet-1k (1.28 M images, 1,000 classes) at 224 px for 600 epochs (the "
            "length iFormer's Table 3 lists for GhostNetV3; not read in the paper itself). A verdict "
            "here is about short training of models that are still under-fitting: **agrees** does not confirm and "
            "**disagrees** does not refute a 600-epoch claim, and this study does not test whether an effect "
            "changes with the length of training. Mixup and CutMix are known to hurt under-fitted models (the "
            "Imagenette README, fastai/imagenette: Mixup-style augmentation tends to pay off only after about 80 "
            "epochs), so a penalty measured here may come from the short training rather than from the model being "
            "compact. Two such questions are tested outside the study, at 4x the training length and at width 1.3x "
            "(`benchmarks/scope_questions.py`, results/scope_questions/report.md: re-parameterization x length, "
            f"Mixup/CutMix x width and x length).{outside}{reading} {composite}")


def study_command(runs: pd.DataFrame) -> str:
    """The command(s) that trained the runs of ``runs`` (runs.csv), without machine paths
    (``gv3lite.study.provenance.portable_command``), joined by " and "; "unknown" when not recorded."""
    commands = runs["command"].dropna().astype(str) if "command" in runs else []
    return " and ".join(dict.fromkeys(portable_command(c) for c in commands)) or "unknown"


def study_commits(runs: pd.DataFrame) -> str:
    """The commits the runs of ``runs`` were trained at, sorted and comma-separated ("unknown" when not recorded)."""
    return ", ".join(sorted(set(runs["git_commit"].dropna().astype(str)))) if "git_commit" in runs else "unknown"


def write_report(runs: pd.DataFrame, table: pd.DataFrame, path, budget: str,
                 wall_seconds: float | None = None, counts: dict | None = None,
                 calls: pd.DataFrame | None = None) -> Path:
    """``report.md``: per contrast the fields that differ, the paired per-seed differences, the mean with its 95%
    interval, the Holm-adjusted p, the minimum detectable effect and the verdict (see `verdicts`, ``gv3lite.verdicts``).
    The header gives the study's command and the commits and code fingerprints its runs were trained with (and
    `code_label` when that is not the current code), ``wall_seconds`` and ``counts`` (of a ``reproduce`` call that
    trained) and, from the call log ``calls`` (`read_calls`), the total wall time over all recorded calls; then the
    analysis method and what the study can and cannot say about the paper's claims (`scope_note`). Written
    from its inputs only (no clock, no checkout state, no machine path): the same inputs give the same bytes.
    """
    path = Path(path)
    seeds = sorted(set(runs["seed"])) if len(runs) else []
    label = code_label(runs) if len(runs) else ""
    lines = [f"# gv3lite ablation report — {budget} budget", "",
             f"Command: `{study_command(runs)}`  ", f"Runs trained at commit {study_commits(runs)}, code fingerprint "
             f"{', '.join(recorded_fingerprints(runs)) or 'unknown'}  ", *([label, ""] if label else []),
             f"Seeds: {len(seeds)} ({', '.join(map(str, seeds))}); trainings: {runs['run_id'].nunique() if len(runs) else 0}"
             + (f"; this call trained {counts['trained']}, skipped {counts['skipped']}" if counts else "")
             + (f"; wall time of this call {duration(wall_seconds)}" if wall_seconds is not None else "")
             + (f"; {calls_note(calls)}" if calls is not None else "")
             + (f"; training time of all runs {runs.drop_duplicates('run_id')['train_seconds'].sum() / 60:.1f} min "
                "(summed over runs)" if len(runs) and "train_seconds" in runs else ""), "",
             f"Analysis (`gv3lite/stats.py`, fixed in code before the runs it is meant for; runs recorded by older "
             f"versions are re-analysed with it): the seed is the unit. diff = mean of the "
             f"paired per-seed differences cell − baseline (top-1, pp); its 95% interval comes from a seed-blocked "
             f"model (cell + seed) whose residual variance is pooled over the cells of one architecture, or from "
             f"the paired differences alone where pooling is not possible (see `method`). p is Holm-adjusted across "
             f"the paper's claims. Smallest effect of interest δ = {DELTA:g} pp. **agrees** / **disagrees**: "
             f"adjusted p < {ALPHA:g}, in / against the paper's direction; **no effect >= {DELTA:g} pp**: the "
             f"interval lies inside ±δ; **underpowered**: neither (MDE = the difference this design would detect "
             f"with {POWER:.0%} power at the strictest Holm level). EMA is judged within-run: EMA minus raw top-1 of every training. The "
             "source's claim (gv3lite/paper_results.csv) is labelled by what it is: `paper:` a direction the paper "
             "states; `derived:` two published ImageNet top-1 subtracted by us (GhostNetV3 minus GhostNetV2: two "
             "papers, 600 vs 450 epochs; not an ablation); `checkpoint:` a measurement of the released checkpoint. "
             "Ours are on Imagenette at this budget's size: compare directions, not magnitudes. Cells with the same "
             "run id in runs.csv are one training.",
             "", *([scope_note(runs), ""] if len(runs) else []), *verdict_lines(table)]
    notes = [f"- {r.grid}/{r.cell}: {r.method}" + (f"; {r.note}" if r.note else "")
             + (f"; same runs as {r.same_as}" if r.same_as else "") for r in table.itertuples()]
    sizing = sizing_note(table, budget, runs, calls)
    return write_atomic(path, "\n".join(lines + ([""] + [sizing] if sizing else []) + ["", "Method per contrast:", ""]
                                         + notes) + "\n")


FLOAT_FORMAT = "%.10g"  # summary.csv, verdicts.csv: 10 significant digits, so no float noise of the last bits shows


def write_analysis(runs: pd.DataFrame, budget: str, out_dir, pool: bool = True, predictions=None) -> tuple:
    """Write ``summary.csv``/``.md`` and ``verdicts.csv`` of ``runs`` into ``out_dir`` (atomically, floats with
    `FLOAT_FORMAT`); returns ``(summary, verdict table)``."""
    out_dir = Path(out_dir)
    summary = summarize(runs)
    write_csv(summary, out_dir / "summary.csv", float_format=FLOAT_FORMAT)
    write_atomic(out_dir / "summary.md", summary_markdown(summary, budget))
    table = verdicts(runs, pool=pool, predictions=predictions)
    write_csv(table, out_dir / "verdicts.csv", float_format=FLOAT_FORMAT)
    return summary, table


def report(results_dir, figures_dir=None, pool: bool = True, out_dir=None) -> dict:
    """Re-analyse recorded results without training: read ``<results_dir>/runs.csv`` (and ``history.csv``, and the
    call log ``calls.csv`` for the report's wall time, if there; it is never written here, so a re-analysis never adds
    to the study's wall time) and write ``summary.csv``/``.md``, ``verdicts.csv``, ``report.md`` into ``out_dir`` (default ``results_dir``) and
    the figures into ``figures_dir`` (default ``<out_dir>/figures``).

    The same inputs give the same bytes (`write_report`, `plot_grids`): ``make publish`` re-renders the committed
    results with it. Works on results of older versions too (their runs.csv lacks per-image predictions and histories: the analysis
    uses the per-seed top-1 it has). Returns ``dict(runs, summary, verdicts, figures)``. Raises
    ``FileNotFoundError`` when runs.csv is missing and ``ValueError`` when it has no rows.
    """
    results_dir = Path(results_dir)
    file = results_dir / "runs.csv"
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; give the folder `gv3lite reproduce` wrote (e.g. results/quick)")
    study = read_study(results_dir)  # each file validated, and their row counts against the plan and each other
    runs, history, predictions = study["runs"], study["history"], study["predictions"]
    if runs.empty:
        raise ValueError(f"{file} has no runs; train some with `gv3lite reproduce` first")
    budget = str(runs["budget"].iloc[0]) if "budget" in runs else results_dir.name
    out_dir = Path(out_dir or results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary, table = write_analysis(runs, budget, out_dir, pool=pool, predictions=predictions)
    write_report(runs, table, out_dir / "report.md", budget, calls=read_calls(results_dir))
    grids = recorded_grids(runs, budget) if budget in BUDGETS else list(dict.fromkeys(runs["grid"]))
    drawn = runs["grid"].isin(grids)  # as `reproduce` draws them: not a grid with only cells shared with another
    paths = plot_grids(runs[drawn], summary[summary["grid"].isin(grids)], budget, table=table, history=history,
                       folder=Path(figures_dir or out_dir / "figures"))
    return {"runs": runs, "summary": summary, "verdicts": table, "figures": paths}


def save_learning_curves(history, runs, budget: str, command: str, commit: str, folder) -> list:
    """``[path]`` of ``ablation_learning_curves.png`` (``gv3lite.figures.plot_learning_curves`` of ``history``, the
    per-epoch ``history.csv`` of ``runs``) saved into ``folder`` with the study's ``command`` and ``commit`` in its
    footer; ``[]`` when no run has a history. Used by both designs' figures."""
    import matplotlib.pyplot as plt  # lazy: pyplot is slow to import and only figures need it
    if history is None or not len(history):
        return []
    fig = plot_learning_curves(history, runs, title=f"learning curves — {budget} budget")
    path = savefig(fig, "ablation_learning_curves", budget=budget, command=command, commit=commit, folder=folder)
    plt.close(fig)
    return [path]


def plot_grids(runs: pd.DataFrame, summary: pd.DataFrame, budget: str, table: pd.DataFrame | None = None,
               history: pd.DataFrame | None = None, folder=None, command: str | None = None) -> list[Path]:
    """One figure per grid (``gv3lite.figures.plot_grid``), saved as ``ablation_<grid>.png`` by ``figures.savefig``;
    given the verdict ``table`` (`verdicts`), the forest plot of all claims as ``ablation_forest.png``
    (``gv3lite.figures.plot_forest``); given per-epoch ``history`` (``history.csv``), the learning curves per cell as
    ``ablation_learning_curves.png`` (``gv3lite.figures.plot_learning_curves``; skipped when no run has one).
    ``folder``: where they go (default ``gv3lite.figures.figures_dir(budget)``). Each footer gives the study's
    command (or ``command``, e.g. a notebook's) and the commits its runs were trained at (`study_command`,
    `study_commits`), not the current checkout's: the same runs give the same bytes."""
    import matplotlib.pyplot as plt  # lazy: pyplot is slow to import and only figures need it
    command, commit = command or study_command(runs), study_commits(runs)
    paths = save_learning_curves(history, runs, budget, command, commit, folder)
    if table is not None and len(table):
        seeds = int(runs["seed"].nunique())
        fig = plot_forest(table, title=f"the paper's claims — {budget} budget, {seeds} seed{'s' if seeds != 1 else ''}"
                                       " (Imagenette); paired differences with 95% intervals, Holm-adjusted verdicts")
        paths.append(savefig(fig, "ablation_forest", budget=budget, command=command, commit=commit,
                                     folder=folder))
        plt.close(fig)
    for grid in summary["grid"].unique():
        try:
            paper = paper_results(grid)
        except KeyError:
            paper = None
        seeds = int(summary[summary["grid"] == grid]["n"].max())
        title = f"{grid} — {budget} budget, {seeds} seed{'s' if seeds != 1 else ''}"
        if grid in COMPOSITE_GRIDS:
            title += " (composite: its cells differ in several fields)"
        if grid == "architectures":
            title += f"; our models at width x{int(BUDGETS[budget]['arch_width']) / 100:.1f}, the paper's at x1.0"
        fig = plot_grid(summary, runs, grid, paper, paper_cells={c: paper_key(grid, c) for c in summary["cell"]},
                        title=title)
        paths.append(savefig(fig, f"ablation_{grid}", budget=budget, command=command, commit=commit,
                                     folder=folder))
        plt.close(fig)
    return paths
