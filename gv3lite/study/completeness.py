"""The study's results files against the plan and against each other: row counts.

Owns `read_study` (a study folder's ``runs.csv``, ``history.csv`` and ``predictions.csv.gz``, each validated by its
schema, then `check_counts`) and `check_counts`: every training of ``runs.csv`` has all its epochs in
``history.csv`` and the same number of val images as every other in ``predictions.csv.gz``, those two files hold no
training that ``runs.csv`` lacks, and -- for a one-factor study of a known budget -- ``runs.csv`` holds every row the
plan gives a recorded training (a run shared by several cells has a row per cell) and, per seed, whole grids only.
`reproduce` writes the three files from the same run directories and only whole grids, so a row count that breaks
these rules means a file was cut short, edited or mixed with another; the error (``gv3lite.schemas.ResultsFileError``,
one line: file, problem, fix; ``gv3lite`` exits 2) names the file, what is missing and an example.
Rows of trainings that the current plan no longer has (an earlier plan: other recipes or sizes) are checked against
the other files only.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from gv3lite.budgets import BUDGETS
from gv3lite.schemas import read_results, restore_it, results_error
from gv3lite.study.design import FACTORIAL_GRID
from gv3lite.study.plan import plan
from gv3lite.study.records import PREDICTIONS


def read_study(folder) -> dict:
    """``dict(runs, history, predictions)`` of the study in ``folder``: ``runs.csv`` (required), ``history.csv`` and
    ``predictions.csv.gz`` (``None`` when absent, as in results of older versions), each read and validated by
    ``gv3lite.schemas.read_results``, then `check_counts`. Raises ``FileNotFoundError`` without runs.csv and
    ``ResultsFileError`` (a ``ValueError``) for a damaged file or row counts that do not add up."""
    folder = Path(folder)
    runs = read_results(folder / "runs.csv")
    found = {name: read_results(folder / name) if (folder / name).is_file() else None
             for name in ("history.csv", PREDICTIONS)}
    check_counts(folder, runs, found["history.csv"], found[PREDICTIONS])
    return {"runs": runs, "history": found["history.csv"], "predictions": found[PREDICTIONS]}


def check_counts(folder, runs: pd.DataFrame, history: pd.DataFrame | None = None,
                 predictions: pd.DataFrame | None = None, budget: str | None = None) -> None:
    """Raise ``ResultsFileError`` naming the file of ``folder`` whose row count does not add up (see the module
    doc); ``budget`` defaults to runs.csv's ``budget`` column. Returns ``None`` when everything adds up."""
    folder = Path(folder)
    if runs.empty:
        return
    ids = set(runs["run_id"].astype(str))
    for name, table in (("history.csv", history), (PREDICTIONS, predictions)):
        if table is not None:
            _same_trainings(folder, name, ids, set(table["run_id"].astype(str)))
    if history is not None and "epochs" in runs:
        _all_epochs(folder / "history.csv", runs, history)
    if predictions is not None:
        _same_val_images(folder / PREDICTIONS, predictions)
    budget = budget or (str(runs["budget"].iloc[0]) if "budget" in runs else None)
    if budget in BUDGETS and FACTORIAL_GRID not in set(runs["grid"].astype(str)):
        _rows_of_the_plan(folder / "runs.csv", runs, budget)


def _examples(values) -> str:
    values = sorted(values)
    return ", ".join(values[:3]) + (", ..." if len(values) > 3 else "")


def _same_trainings(folder: Path, name: str, ids: set, theirs: set) -> None:
    if theirs - ids:
        raise results_error(folder / "runs.csv", f"lacks the rows of {len(theirs - ids)} training(s) that {name} "
                                                 f"holds (run {_examples(theirs - ids)}): it was cut short or edited")
    if ids - theirs:
        raise results_error(folder / name, f"has no rows of {len(ids - theirs)} training(s) of runs.csv (run "
                                           f"{_examples(ids - theirs)}): it was cut short or edited")


def _all_epochs(file: Path, runs: pd.DataFrame, history: pd.DataFrame) -> None:
    epochs = runs.drop_duplicates("run_id").set_index(runs.drop_duplicates("run_id")["run_id"].astype(str))["epochs"]
    found = history.groupby(history["run_id"].astype(str))["epoch"].agg(["nunique", "max"])
    for rid, want in epochs.items():
        have = found.loc[rid]
        if have["nunique"] != want or have["max"] != want:
            raise results_error(file, f"holds {have['nunique']} epoch(s) of run {rid} (up to epoch {have['max']}), "
                                      f"but runs.csv says it trained {int(want)}: it was cut short or edited")


def _same_val_images(file: Path, predictions: pd.DataFrame) -> None:
    sizes = predictions.groupby(predictions["run_id"].astype(str)).size()
    usual = int(sizes.mode().max())
    odd = sizes[sizes != usual]
    if len(odd):
        raise results_error(file, f"holds {int(odd.iloc[0])} val images of run {odd.index[0]} but {usual} of the "
                                  "other trainings (every training of a study is scored on the same val images): it "
                                  "was cut short or edited")


def _rows_of_the_plan(file: Path, runs: pd.DataFrame, budget: str) -> None:
    """Every row the plan gives a recorded training, and whole grids per seed (of the current plan's trainings)."""
    seeds = int(runs["seed"].max()) + 1
    items = plan(budget, None, seeds)
    have = set(zip(runs["grid"].astype(str), runs["cell"].astype(str), runs["seed"].astype(int)))
    ids = set(runs["run_id"].astype(str))
    missing = [it for it in items if it["run_id"] in ids and (it["grid"], it["cell"], it["seed"]) not in have]
    if missing:
        it = missing[0]
        raise results_error(file, f"lacks {len(missing)} row(s) of trainings it records, e.g. {it['grid']}/"
                                  f"{it['cell']} seed {it['seed']} (run {it['run_id']}, recorded under another cell): "
                                  "it was cut short or edited")
    for seed in sorted(set(runs["seed"].astype(int))):
        mine = [it for it in items if it["seed"] == seed]
        grids = dict.fromkeys(it["grid"] for it in mine)
        whole = {g for g in grids if all(it["run_id"] in ids for it in mine if it["grid"] == g)}
        covered = {it["run_id"] for it in mine if it["grid"] in whole}
        for grid in grids:
            planned = [it for it in mine if it["grid"] == grid]
            part = [it for it in planned if it["run_id"] in ids and it["run_id"] not in covered]
            if part:
                absent = [f"{it['cell']}" for it in planned if it["run_id"] not in ids]
                raise results_error(file, f"holds {len(planned) - len(absent)} of the {len(planned)} cells of grid "
                                          f"{grid!r} for seed {seed} (missing: {_examples(absent)}); `gv3lite "
                                          "reproduce` records whole grids, so it was cut short or edited",
                                    f"{restore_it(file)} or move it away: `gv3lite reproduce --budget {budget}` "
                                    "with the same --out trains the missing cells and rewrites it")
