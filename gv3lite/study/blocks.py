"""`reproduce_factorial`: the factorial study trained one block at a time until its claims are decided.

After each block (16 runs, block b with seed b, in the random order drawn from the seed) the results files are
written, and from the budget's first look on the claims are tested (``gv3lite.study.looks``). The study stops when
every claim is decided, at the budget's declared maximum of blocks, or when the wall time recorded in ``calls.csv``
(all sittings) reaches the budget's ``wall_minutes`` (``gv3lite.budgets.FACTORIAL_BLOCKS``) or another block, at the
mean wall time per block so far, would end past it (``gv3lite.study.factorial_report.out_of_time``) -- the wall time
ends a study only from its first look on, so a slow machine still gets the blocks the first look needs. Re-running
resumes: a finished run is never retrained, an interrupted one continues from its checkpoint, and the looks are
recomputed from the recorded runs, so they are the same whatever the sittings were. ``design.json`` records the
design.

Before anything trains, the folder is checked as the one-factor path checks it (``gv3lite.study.provenance
.check_study``: another budget's study, a damaged ``result.json``, runs of other training code) and for its design
(`check_folder`: the one-factor grids, or a factorial with other generators / ``--set``, are refused). The command is
recorded without machine paths (``portable_command``). A call that trains has one row in ``calls.csv``
(``gv3lite.study.records.CallLog``, as the one-factor runner): written before its first training and brought up to date
after every run, every ``HEARTBEAT_SECONDS`` in between (a daemon thread, from the first training until the call's last
write) and when the trainings end (also on ``KeyboardInterrupt``), so a ``kill -9`` at any point keeps it (marked
interrupted) with at most one heartbeat of wall time lost; a call that trains nothing adds none.
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

from gv3lite.budgets import FACTORIAL_BLOCKS
from gv3lite.data import resolve_data_root
from gv3lite.launch import cap_jobs
from gv3lite.recipe import Recipe
from gv3lite.study.factorial import effects_table
from gv3lite.study.factorial_report import (check_design_file, design_record, out_of_time, plot_factorial, stop_state,
                                            write_factorial_report)
from gv3lite.study.looks import analyse_looks, correct_of
from gv3lite.study.plan import factorial_plan
from gv3lite.study.progress import StudyProgress
from gv3lite.study.provenance import check_study, portable_command
from gv3lite.study.records import (DESIGN_FILE, PREDICTIONS, CallLog, check_design, collect, finished_run,
                                   gather_run_files, read_calls, recorded_results)
from gv3lite.study.workers import prepare_teachers, train_runs
from gv3lite.utils import git_commit, write_atomic, write_csv


def check_changes(changes: dict) -> dict:
    """``--set`` fields must be `Recipe` fields (``ValueError`` naming the unknown ones and the fields)."""
    known = {f.name for f in dataclasses.fields(Recipe)} - {"seed"}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"--set {', '.join(unknown)}: not a recipe field; choose from {sorted(known)}")
    return changes


def check_folder(out_dir: Path, record: dict) -> None:
    """Refuse a results folder that holds the one-factor grids or another factorial (nothing is written)."""
    check_design(out_dir, "factorial")
    check_design_file(out_dir, record)


def reproduce_factorial(budget: str, out="runs/reproduce", data=None, jobs: int = 1, device: str = "cpu",
                        quiet: bool = True, command: str | None = None, log=print, changes: dict | None = None,
                        generators: dict | None = None, submitit: str | None = None,
                        submitit_options: dict | None = None, progress: bool = False,
                        figures_dir=None) -> dict:
    """Train the factorial study of ``budget`` block by block into ``<out>/<budget>/`` (see the module docstring)
    and write runs.csv, history.csv, predictions.csv.gz, looks.csv, verdicts.csv, effects.csv, report.md, the
    figures (into ``figures_dir``, default ``$GV3LITE_FIGURES``, else ``<out>/<budget>/figures``), design.json and a
    row of calls.csv (also when interrupted; none when nothing was trained). ``changes``: recipe fields set in every
    run (``--set``); ``generators``: the fraction's generators (default E = -ACD, F = -BCD). ``jobs``, ``device``,
    ``submitit``, ``progress``: as ``gv3lite.study.runner.reproduce`` (the live display shows one block at a time).
    Returns ``dict(trained, skipped, busy, resumed, blocks, stopped, reason, claims, out_dir, figures)``. Raises
    ``ValueError`` for a singular design, an unknown factor or field, or a folder of another design, budget or code,
    before anything is written or trained; ``KeyboardInterrupt`` passes through after the call is recorded."""
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    changes = check_changes(dict(changes or {}))
    factorial_plan(budget, 1, changes, generators)  # bad generators / --set: refused before anything is written
    record = design_record(budget, changes, generators)
    out_dir = Path(out) / budget
    check_folder(out_dir, record)
    check_study(out_dir, budget)  # another budget, a damaged result.json, runs of other code: refused here
    root = resolve_data_root(data)
    command = portable_command(command or " ".join(["gv3lite", *map(shlex.quote, sys.argv[1:])]))
    counts = {"trained": 0, "skipped": 0, "busy": 0, "resumed": 0, "todo": 0}
    # the call's row of calls.csv: written when its first block starts training, kept up to date after every run
    call = CallLog(out_dir, started, command, git_commit(), jobs, t0, counts)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / DESIGN_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")
    options = dict(jobs=jobs, device=device, quiet=quiet, submitit=submitit, submitit_options=submitit_options,
                   progress=progress)
    try:  # an interrupted call that trained is logged too: its time counts towards the budget's wall time
        result, blocks, runs, predictions = _run_blocks(budget, out_dir, root, command, counts, log, changes,
                                                        generators, options, call)
    except KeyboardInterrupt:
        call.write(interrupted=True, final=True)
        raise
    finally:
        call.stop()  # any other error: the heartbeat ends with the call, the row keeps its last update
    calls = call.calls if call.write(interrupted=False) else read_calls(out_dir)  # before the report and figures
    figures = []
    if result is not None:
        effects = effects_table(result["fit"], correct_of(predictions, result["fit"]["table"]["run_id"]))
        write_factorial_report(result, record, out_dir, budget, runs, calls, effects)
        history = gather_run_files(out_dir, runs["run_id"].unique(), "metrics.csv", "history.csv")
        folder = Path(figures_dir or os.environ.get("GV3LITE_FIGURES") or out_dir / "figures")
        figures = plot_factorial(result["claims"], runs, budget, history, folder=folder)
    stopped, reason = stop_state(result, budget, calls) if result else (False, "no look yet")
    return {**{k: v for k, v in counts.items() if k != "todo"}, "out_dir": out_dir, "blocks": blocks,
            "stopped": stopped, "reason": reason,
            "claims": result["claims"] if result else None, "figures": figures}


def _run_blocks(budget, out_dir, root, command, counts, log, changes, generators, options, call) -> tuple:
    """Train block after block until the study stops (``call``: the call's `CallLog`); returns ``(last look's
    result or None, blocks trained, runs.csv table, predictions or None)``."""
    settings = FACTORIAL_BLOCKS[budget]
    result, runs, predictions = None, None, None
    for blocks in range(1, settings["max_blocks"] + 1):
        items = factorial_plan(budget, blocks, changes, generators)
        _train_block(items, blocks - 1, settings["max_blocks"], out_dir, root, command, budget, counts, log, call,
                     **options)
        runs, predictions = _write_runs(items, out_dir, budget)
        if counts["busy"]:
            log(f"{counts['busy']} run(s) of block {blocks} are trained by another process: stopping here")
            break
        if blocks >= settings["first_look"]:
            result = analyse_looks(runs, budget, predictions)
            claims = result["claims"]
            log(f"look after block {blocks}: " + ", ".join(f"{c} {v}" for c, v in
                                                              zip(claims["claim"], claims["verdict"])))
            if result["stopped"]:
                break
        # the call's row brought up to date first (as its heartbeat does), so the records hold this sitting's time
        calls = call.calls if call.write(interrupted=True, final=False) else read_calls(out_dir)
        late = result is not None and out_of_time(budget, calls, blocks)
        if late:  # the wall time ends a study only once it has had its first look
            log(f"{late}: stopping after block {blocks}")
            break
    return result, blocks, runs, predictions


def _train_block(items, block, most, out_dir, root, command, budget, counts, log, call, progress=False, jobs=1,
                 **options) -> None:
    """Train the runs of ``block`` not yet finished, in the block's random order, with the live display; the
    call's row of calls.csv (``call``, a `CallLog`) is written before the first training (which starts its heartbeat)
    and brought up to date after each."""
    recorded = recorded_results(out_dir)
    recorded = {rid: r for rid, r in recorded.items() if not (out_dir / "runs" / rid).is_dir()}
    todo = {}
    for it in sorted((it for it in items if it["block"] == block), key=lambda it: it["order"]):
        finished = finished_run(out_dir / "runs" / it["run_id"]) or it["run_id"] in recorded
        if finished or it["run_id"] in todo:
            counts["skipped"] += it["run_id"] not in todo
        else:
            todo[it["run_id"]] = it["trained_as"]
    if not todo:
        return
    counts["todo"] += len(todo)
    counts["resumed"] += sum((out_dir / "runs" / rid / "last.pth").is_file() for rid in todo)
    jobs = cap_jobs(jobs, len(todo), log)  # not more workers than runs or memory holds
    with StudyProgress(todo, out_dir, finished=16 - len(todo), disable=not progress,
                       label=f"block {block + 1} of at most {most}: ") as shown:
        say = shown.write if progress else log

        def done(k, rid, result):
            if result is None:
                counts["busy"] += 1
            elif not result.get("finished_elsewhere"):
                counts["trained"] += 1
                say(f"[block {block + 1}: {k}/{len(todo)}] run {rid}: top-1 {result['top1']:.2f}%")
            call.write(interrupted=True)
        call.trains = True  # this call trains: from now on it has its row (also when killed)
        call.write(interrupted=True)
        prepare_teachers(list(todo.values()), root, log=say, quiet=options["quiet"])
        train_runs(todo, out_dir, root, command, budget, done, log=say, jobs=jobs, **options)


def _write_runs(items, out_dir: Path, budget: str) -> tuple:
    """runs.csv, history.csv and predictions.csv.gz of every finished run of ``items`` (atomic writes)."""
    runs = collect(items, out_dir, budget, recorded_results(out_dir))
    if len(runs):
        order = {(it["block"], it["cell"]): it["order"] for it in items}
        runs.insert(4, "order", [order[(s, c)] for s, c in zip(runs["seed"], runs["cell"])])
    write_csv(runs, out_dir / "runs.csv")
    run_ids = runs["run_id"].unique() if len(runs) else []
    write_csv(gather_run_files(out_dir, run_ids, "metrics.csv", "history.csv"), out_dir / "history.csv")
    predictions = gather_run_files(out_dir, run_ids, "predictions.csv", PREDICTIONS)
    write_csv(predictions, out_dir / PREDICTIONS)
    return runs, (predictions if len(predictions) else None)
