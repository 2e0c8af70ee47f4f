"""`reproduce`: the study of a budget, trained where it is missing and written as results, report and figures.

What a call does: plan the runs (``gv3lite.study.plan``), skip the finished ones (a ``result.json``, or a row of the
committed ``runs.csv``: `gv3lite.study.records.recorded_results`), compute the teacher outputs once, train the rest
(``gv3lite.study.workers.train_runs``: serial, a worker pool, or submitit jobs) while keeping its row of ``calls.csv``
up to date (``gv3lite.study.records.CallLog``: written before the first training, after every finished run, every
``HEARTBEAT_SECONDS`` in between and when the trainings end, also on ``KeyboardInterrupt``; a ``kill -9`` loses at most
one heartbeat of wall time: the wall time of a budget finished over several sittings comes from the rows), then write
``runs.csv``, ``history.csv``, ``predictions.csv.gz``, ``summary.csv``/``.md``, ``verdicts.csv``, the figures and
``report.md``. Every file is written atomically and a run's ``result.json`` last, so a kill at any point leaves
finished runs and results files that the next call completes (``tests/test_crash_safety.py``).
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from gv3lite.data import resolve_data_root
from gv3lite.study.plan import plan
from gv3lite.launch import cap_jobs
from gv3lite.teacher import check_teacher
from gv3lite.study.progress import StudyProgress
from gv3lite.study.provenance import check_study, portable_command
from gv3lite.study.records import (PREDICTIONS, CallLog, check_design, collect, finished_run, gather_run_files,
                                   read_calls, recorded_results)
from gv3lite.study.report import plot_grids, write_analysis, write_report
from gv3lite.study.workers import prepare_teachers, train_runs
from gv3lite.utils import git_commit, write_csv


def reproduce(budget: str, seeds: int | None = None, out="runs/reproduce", grids=None, data=None, figures: bool = True,
              quiet: bool = True, command: str | None = None, log=print, jobs: int = 1, figures_dir=None,
              device: str = "cpu", submitit: str | None = None, submitit_options: dict | None = None,
              progress: bool = False) -> dict:
    """Run (or resume) every cell of ``budget`` and write the results files, report.md and the figures.

    ``out``: results root, files go to ``<out>/<budget>/`` (default ``runs/reproduce``, git-ignored; ``make main`` /
    ``make medium`` train into ``runs/study``; only ``make publish`` writes the committed ``results/`` and
    ``figures/``). ``figures_dir``: where the figures go (default ``$GV3LITE_FIGURES``, else
    ``<out>/<budget>/figures``). ``data``: ImageFolder root (``gv3lite.data``'s resolution order). ``jobs``: trainings
    at once, each in its own process with ``torch.get_num_threads() // jobs`` threads (on a 2-core CPU ``jobs=2`` trains
    ~1.8x more images per second than one run with two threads). ``device``, ``submitit``, ``submitit_options``: see
    ``gv3lite.study.workers.train_runs``. Every call that trains has one row in ``calls.csv``
    (``records.CALL_COLUMNS``): written when its trainings start, brought up to date after each finished run and when
    they end (before the results files are written), so an interrupted call (Ctrl-C, SIGTERM with ``jobs`` > 1, or a
    ``kill -9``) keeps its row, marked interrupted; a call that had nothing to train adds none (it only re-renders the
    files: a re-analysis adds nothing to the study's wall time). Before anything is trained, ``<out>/<budget>`` is
    checked (``gv3lite.study.provenance.check_study``: another budget's study, a damaged ``result.json`` or finished
    runs of other training code are refused). ``progress``: a live display of the trainings
    (``gv3lite.study.progress.StudyProgress``: runs done / total, the epoch of each run in progress, elapsed and
    remaining time; a terminal bar, or an ipywidgets bar in a notebook). The command is recorded without machine paths
    (``portable_command``). Returns ``dict(trained, skipped, resumed, busy, out_dir, runs, summary, verdicts,
    figures)``: ``trained`` counts trainings started by this call (``resumed`` of them continued a checkpoint),
    ``skipped`` the unique runs already finished, ``busy`` those another process is training (their results join the
    files of whichever call ends last). ``grids`` limits what is trained (and drawn); the results files cover every
    finished run of the budget. Raises like `plan` for bad names and ``ValueError`` for ``jobs`` < 1. With ``jobs`` > 1
    a script must call this under ``if __name__ == "__main__":`` (worker processes are spawned and re-import the
    script).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r}: must be an integer >= 1 (trainings run at once)")
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    items = plan(budget, grids, seeds)
    command = portable_command(command or " ".join(["gv3lite", *map(shlex.quote, sys.argv[1:])]))
    out_dir = Path(out) / budget
    root = resolve_data_root(data)
    todo, recorded, counts = _pending(out_dir, budget, items)
    jobs = cap_jobs(jobs, len(todo), log) if todo else jobs  # not more workers than runs or memory holds
    commit = git_commit()  # the code this call trains with (results/ and figures/ do not count, see git_commit)
    for teacher in sorted({r.teacher for r in todo.values() if r.teacher}):
        check_teacher(teacher)  # a missing soft-label file stops the call before it is logged or trains
    call = CallLog(out_dir, started, command, commit, jobs, t0, counts, trains=bool(todo))
    call.write(interrupted=True)
    try:
        prepare_teachers(list(todo.values()), root, log=log, quiet=quiet)
        counts["resumed"] = sum((out_dir / "runs" / rid / "last.pth").is_file() for rid in todo)
        with StudyProgress(todo, out_dir, finished=counts["skipped"], disable=not progress) as shown:
            say = shown.write if progress else log
            done = _progress(items, todo, out_dir, counts, say)
            train_runs(todo, out_dir, root, command, budget, lambda *a: done(*a) or call.write(interrupted=True),
                       jobs=jobs, device=device, quiet=quiet, submitit=submitit, submitit_options=submitit_options,
                       log=say)
    except KeyboardInterrupt:
        call.write(interrupted=True, final=True)
        raise
    finally:
        call.stop()  # any other error: the heartbeat ends with the call, the row keeps its last update
    row = call.write(interrupted=False)  # before the results files, which the next call rewrites if killed
    written = write_results(budget, items, out_dir, recorded, figures=figures, figures_dir=figures_dir)
    write_report(written["all_runs"], written["table"], out_dir / "report.md", budget, counts=counts,
                 wall_seconds=row and row["wall_seconds"], calls=call.calls if row else read_calls(out_dir))
    return {**counts, "out_dir": out_dir, **{k: written[k] for k in ("runs", "summary", "verdicts", "figures")}}


def _pending(out_dir: Path, budget: str, items: list[dict]) -> tuple[dict, dict, dict]:
    """What a `reproduce` call has left to train in ``out_dir``, after `check_design` (a factorial study's folder)
    and `check_study` (another budget's study, a damaged ``result.json`` or finished runs of other training code are
    refused before anything trains).

    Returns ``(todo, recorded, counts)``: ``todo`` maps the run id of each unique run of ``items`` not yet finished to
    the recipe it is trained as; ``recorded``: the runs of the results files without a run directory (committed
    results), which count as finished; ``counts``: the call's counters, ``skipped`` = unique runs already finished.
    """
    check_design(out_dir, "ofat")  # a factorial study's folder: refused, its records are never rewritten here
    check_study(out_dir, budget)  # another budget, a damaged result.json, runs of other code: refused before training
    unique = {it["run_id"]: it["trained_as"] for it in items}
    # committed results hold runs.csv but not the run directories: a recorded run without a directory is finished
    recorded = {rid: r for rid, r in recorded_results(out_dir).items() if not (out_dir / "runs" / rid).is_dir()}
    todo = {rid: r for rid, r in unique.items() if not finished_run(out_dir / "runs" / rid) and rid not in recorded}
    return todo, recorded, {"trained": 0, "skipped": len(unique) - len(todo), "resumed": 0, "busy": 0}


def _progress(items: list[dict], todo: dict, out_dir: Path, counts: dict, log):
    """The ``done(k, run id, result)`` callback of `reproduce`: counts and logs each finished (or busy) run."""
    def describe(rid):
        return ", ".join(f"{it['grid']}/{it['cell']}" for it in items if it["run_id"] == rid)

    def done(k, rid, result):
        if result is None:  # another process holds the run's lock: it trains it
            counts["busy"] += 1
            log(f"[{k}/{len(todo)}] run {rid} ({describe(rid)}) is being trained by another process (lock "
                f"{out_dir / 'runs' / rid}.lock): skipped here")
            return
        if result.get("finished_elsewhere"):
            counts["skipped"] += 1
            return
        counts["trained"] += 1
        log(f"[{k}/{len(todo)}] run {rid} seed {todo[rid].seed} ({describe(rid)}): top-1 {result['top1']:.2f}%  "
            f"{result['train_seconds']:.0f} s train, {result['cpu_seconds']:.0f} s CPU")
    return done


def write_results(budget: str, items: list[dict], out_dir: Path, recorded: dict, figures: bool = True,
                  figures_dir=None) -> dict:
    """Write runs.csv, history.csv, predictions.csv.gz, summary.csv/.md, verdicts.csv and the figures of every
    finished run of ``budget`` in ``out_dir`` (every recorded seed, also when ``items`` asked for fewer). Returns
    ``dict(all_runs, table, runs, summary, verdicts, figures)``: the whole runs table and verdict table, and the parts
    of the grids in ``items`` (a contrast of those grids may be listed under another grid that compares the same
    runs: `same_as`)."""
    n_seeds = max(len({it["seed"] for it in items}), 1 + max((r["seed"] for r in recorded.values()), default=-1))
    runs = collect(plan(budget, None, n_seeds), out_dir, budget, recorded)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(runs, out_dir / "runs.csv")
    run_ids = runs["run_id"].unique() if len(runs) else []
    history = gather_run_files(out_dir, run_ids, "metrics.csv", "history.csv")
    write_csv(history, out_dir / "history.csv")
    predictions = gather_run_files(out_dir, run_ids, "predictions.csv", PREDICTIONS)
    write_csv(predictions, out_dir / PREDICTIONS)  # gzip: ~4 kB per run and 1,000 val images
    summary, table = write_analysis(runs, budget, out_dir, predictions=predictions if len(predictions) else None)
    mine = {it["grid"] for it in items}  # figures and returned tables: the grids asked for
    pick = (lambda df: df[df["grid"].isin(mine)].reset_index(drop=True)) if len(runs) else (lambda df: df)
    table_mine = table
    if len(table):
        shared = table["same_as"].map(lambda v: any(x.split("/")[0] in mine for x in v.split(", ") if x))
        table_mine = table[table["grid"].isin(mine) | shared].reset_index(drop=True)
    folder = Path(figures_dir or os.environ.get("GV3LITE_FIGURES") or out_dir / "figures")
    paths = plot_grids(pick(runs), pick(summary), budget, table=table_mine, history=history,
                       folder=folder) if figures else []
    return {"all_runs": runs, "table": table, "runs": pick(runs), "summary": pick(summary), "verdicts": table_mine,
            "figures": paths}
