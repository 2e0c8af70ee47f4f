"""`reproduce_factorial`: the factorial study trained one block at a time until its claims are decided.

After each block (16 runs, block b with seed b, in the random order drawn from the seed) the results files are
written, and from the budget's first look on the claims are tested (``gv3lite.study.looks``). The study stops when
every claim is decided, at the budget's declared maximum of blocks, or when the wall time recorded in ``calls.csv``
(all sittings) reaches the budget's ``wall_minutes`` (``gv3lite.budgets.FACTORIAL_BLOCKS``). Re-running resumes: a
finished run is never retrained, an interrupted one continues from its checkpoint, and the looks are recomputed from
the recorded runs, so they are the same whatever the sittings were. ``design.json`` records the design; a folder
holding another design (the grids, or other generators / ``--set``) is refused.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from gv3lite.budgets import FACTORIAL_BLOCKS
from gv3lite.data import resolve_data_root
from gv3lite.recipe import Recipe
from gv3lite.study.factorial import effects_table
from gv3lite.study.factorial_report import DESIGN_FILE, check_design_file, design_record, write_factorial_report
from gv3lite.study.looks import analyse_looks, correct_of
from gv3lite.study.plan import FACTORIAL_GRID, factorial_plan
from gv3lite.study.records import (PREDICTIONS, append_call, collect, finished_run, gather_run_files, read_calls,
                                   recorded_results)
from gv3lite.study.workers import prepare_teachers, train_runs
from gv3lite.utils import git_commit


def check_changes(changes: dict) -> dict:
    """``--set`` fields must be `Recipe` fields (``ValueError`` naming the unknown ones and the fields)."""
    known = {f.name for f in dataclasses.fields(Recipe)} - {"seed"}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"--set {', '.join(unknown)}: not a recipe field; choose from {sorted(known)}")
    return changes


def check_folder(out_dir: Path, record: dict) -> None:
    """Refuse a results folder that holds the grid design or another factorial (nothing is written)."""
    file = out_dir / "runs.csv"
    if file.is_file():
        grids = set(pd.read_csv(file, usecols=["grid"])["grid"])
        if grids - {FACTORIAL_GRID}:
            raise ValueError(f"{out_dir} holds the grid design ({', '.join(sorted(grids - {FACTORIAL_GRID}))}); the "
                             "factorial cannot be mixed with it: give another --out (nothing was changed)")
    check_design_file(out_dir, record)


def reproduce_factorial(budget: str, out="runs/reproduce", data=None, jobs: int = 1, device: str = "cpu",
                        quiet: bool = True, command: str | None = None, log=print, changes: dict | None = None,
                        generators: dict | None = None, submitit: str | None = None,
                        submitit_options: dict | None = None) -> dict:
    """Train the factorial study of ``budget`` block by block into ``<out>/<budget>/`` (see the module docstring)
    and write runs.csv, history.csv, predictions.csv.gz, looks.csv, verdicts.csv, effects.csv, report.md,
    design.json and a row of calls.csv (also when interrupted). ``changes``: recipe fields set in every run
    (``--set``); ``generators``: the fraction's generators (default E = -ACD, F = -BCD). ``jobs``, ``device``,
    ``submitit``: as ``gv3lite.study.runner.reproduce``. Returns ``dict(trained, skipped, busy, blocks, stopped,
    reason, claims, out_dir)``. Raises ``ValueError`` for a singular design, an unknown factor or field, or a folder
    of another design, before anything is written or trained."""
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    changes = check_changes(dict(changes or {}))
    factorial_plan(budget, 1, changes, generators)  # bad generators / --set: refused before anything is written
    record, settings = design_record(budget, changes, generators), FACTORIAL_BLOCKS[budget]
    out_dir = Path(out) / budget
    check_folder(out_dir, record)
    root = resolve_data_root(data)
    command = command or " ".join(["gv3lite", *map(shlex.quote, sys.argv[1:])])
    calls = read_calls(out_dir)
    spent = 0.0 if calls is None else float(calls["wall_seconds"].sum())
    counts, commit, result = {"trained": 0, "skipped": 0, "busy": 0}, git_commit(), None
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / DESIGN_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

    def call_row(interrupted):
        return {"started": started.isoformat(timespec="seconds"), "command": command, "git_commit": commit,
                "wall_seconds": round(time.perf_counter() - t0, 1), "trained": counts["trained"],
                "skipped": counts["skipped"], "jobs": jobs, "cpu_count": os.cpu_count(), "interrupted": interrupted}
    try:
        for blocks in range(1, settings["max_blocks"] + 1):
            items = factorial_plan(budget, blocks, changes, generators)
            _train_block(items, blocks - 1, out_dir, root, command, budget, counts, log, jobs=jobs, device=device,
                         quiet=quiet, submitit=submitit, submitit_options=submitit_options)
            runs, predictions = _write_runs(items, out_dir, budget)
            if counts["busy"]:
                log(f"{counts['busy']} run(s) of block {blocks - 1} are trained by another process: stopping here")
                break
            if blocks >= settings["first_look"]:
                result = analyse_looks(runs, budget, predictions)
                claims = result["claims"]
                log(f"look after block {blocks - 1}: " + ", ".join(f"{c} {v}" for c, v in
                                                                  zip(claims["claim"], claims["verdict"])))
                if result["stopped"]:
                    break
            if settings["wall_minutes"] and spent + time.perf_counter() - t0 >= 60 * settings["wall_minutes"]:
                if result is not None:
                    result["reason"] = f"the budget's {settings['wall_minutes']} min of wall time spent"
                break
    except KeyboardInterrupt:
        append_call(out_dir, call_row(interrupted=True))
        raise
    calls = append_call(out_dir, call_row(interrupted=False))
    if result is not None:
        effects = effects_table(result["fit"], correct_of(predictions, result["fit"]["table"]["run_id"]))
        write_factorial_report(result, record, out_dir, budget, command, calls, effects)
    return {**counts, "out_dir": out_dir, "blocks": blocks, "stopped": bool(result and result["stopped"]),
            "reason": result["reason"] if result else "no look yet", "claims": result["claims"] if result else None}


def _train_block(items, block, out_dir, root, command, budget, counts, log, **options) -> None:
    """Train the runs of ``block`` not yet finished, in the block's random order."""
    recorded = recorded_results(out_dir)
    todo = {}
    for it in sorted((it for it in items if it["block"] == block), key=lambda it: it["order"]):
        finished = finished_run(out_dir / "runs" / it["run_id"]) or it["run_id"] in recorded
        if finished or it["run_id"] in todo:
            counts["skipped"] += it["run_id"] not in todo
        else:
            todo[it["run_id"]] = it["trained_as"]

    def done(k, rid, result):
        if result is None:
            counts["busy"] += 1
        elif not result.get("finished_elsewhere"):
            counts["trained"] += 1
            log(f"[block {block}: {k}/{len(todo)}] run {rid}: top-1 {result['top1']:.2f}%")
    prepare_teachers(list(todo.values()), root, log=log, quiet=options["quiet"])
    train_runs(todo, out_dir, root, command, budget, done, log=log, **options)


def _write_runs(items, out_dir: Path, budget: str) -> tuple:
    """runs.csv, history.csv and predictions.csv.gz of every finished run of ``items``."""
    runs = collect(items, out_dir, budget, recorded_results(out_dir))
    if len(runs):
        order = {(it["block"], it["cell"]): it["order"] for it in items}
        runs.insert(4, "order", [order[(s, c)] for s, c in zip(runs["seed"], runs["cell"])])
    runs.to_csv(out_dir / "runs.csv", index=False)
    run_ids = runs["run_id"].unique() if len(runs) else []
    gather_run_files(out_dir, run_ids, "metrics.csv", "history.csv").to_csv(out_dir / "history.csv", index=False)
    predictions = gather_run_files(out_dir, run_ids, "predictions.csv", PREDICTIONS)
    predictions.to_csv(out_dir / PREDICTIONS, index=False)
    return runs, (predictions if len(predictions) else None)
