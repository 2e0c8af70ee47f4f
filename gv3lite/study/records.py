"""The study's results files: what a budget folder ``<out>/<budget>/`` holds and how it is read back.

Layout: ``runs/<run_id>/`` (``gv3lite.train.fit``'s run directory plus ``result.json``), ``runs.csv`` (one row per grid,
cell and seed: `collect`), ``history.csv`` and ``predictions.csv.gz`` (per-run files gathered: `gather_run_files`),
``verdicts.csv`` (`read_verdicts`), ``calls.csv`` (one row per ``reproduce`` call: command, commit, wall time;
`CALL_COLUMNS`, `append_call`, `read_calls`; `CallLog` keeps a call's row up to date, also every `HEARTBEAT_SECONDS`
while it trains), ``design.json`` (`DESIGN_FILE`: the factorial's design). `recorded_results` reads the finished
runs of a committed runs.csv, so a budget can be completed over several sittings without retraining what is recorded.
A folder holds one design (`DESIGNS`): `folder_design` says which, and `check_design` refuses a folder, or a pair of
folders, of another or mixed designs.

Top-1 of a run = val top-1 after the last epoch, of the EMA weights when the recipe keeps an EMA (as the paper
reports its EMA model), else of the raw weights; both are kept (``top1_raw``, ``top1_ema``).
"""
from __future__ import annotations

import json
import os
import threading
import time
import warnings
from pathlib import Path

import pandas as pd
from filelock import FileLock

from gv3lite.fingerprint import UNKNOWN, code_fingerprint
from gv3lite.schemas import FACTORIAL_VERDICTS, read_results, restore_it
from gv3lite.study.design import FACTORIAL_GRID
from gv3lite.utils import cpu_identity, repo_root, write_csv

PREDICTIONS = "predictions.csv.gz"  # per-image predictions of every run of a budget, beside its runs.csv
RESULT_FIELDS = ("top1_raw", "top1_ema", "top5", "train_seconds", "cpu_seconds", "git_commit", "code_fingerprint",
                 "command")


def notebook_runs(notebook: str) -> Path:
    """``runs/<notebook>/<code fingerprint>/`` under the repository (git-ignored): where a notebook that trains a
    study (``"nb06"``, ``"nb07"``) trains it by default. One folder per version of the training code
    (`gv3lite.fingerprint.code_fingerprint`): a study never mixes code versions, so trainings of older code (before a
    ``git pull``) stay in their own folder instead of stopping the notebook."""
    return repo_root() / "runs" / notebook / code_fingerprint()


CALLS = "calls.csv"  # one row per `reproduce` call, beside its runs.csv
DESIGN_FILE = "design.json"  # the design a factorial results folder was trained with
DESIGNS = {"factorial": "the 2^(6-2) fractional factorial (--design factorial)",
           "ofat": "the one-factor-at-a-time grids (--design ofat)"}
CALL_COLUMNS = ("started", "command", "git_commit", "wall_seconds", "trained", "skipped", "jobs", "cpu_count",
                "interrupted", "cpu")


def append_call(out_dir, row: dict, index: int | None = None) -> pd.DataFrame:
    """Append ``row`` (`CALL_COLUMNS`: ``started`` UTC ISO time, ``command``, ``git_commit``, ``wall_seconds``,
    ``trained``/``skipped`` runs, ``jobs``, ``cpu_count``, ``interrupted``, ``cpu``: `gv3lite.utils.cpu_identity`; empty
    in rows of older logs) to ``<out_dir>/calls.csv`` (created with its header) and return the whole log (`read_calls`);
    the row is line ``index`` of the log. Given the ``index`` an earlier append returned for the same call (same
    ``started`` and ``command``), that row is brought up to date instead: a call keeps its row current while it trains,
    so a ``kill -9`` leaves its row with the time until its last update (and ``interrupted`` True)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir / CALLS) + ".lock"):  # two calls ending at once: both rows kept
        before = read_calls(out_dir)
        new = pd.DataFrame([row], columns=list(CALL_COLUMNS), index=[0 if before is None else len(before)])
        if before is not None and index is not None and index < len(before) and all(
                str(before[c].iloc[index]) == str(row[c]) for c in ("started", "command")):
            before = before.drop(index=before.index[index])
            new.index = [index]  # back in its place
        table = new if before is None else pd.concat([before, new]).sort_index().reset_index(drop=True)
        write_csv(table, out_dir / CALLS)
    return table  # what was written (the file is not read back: it is validated at every read)


HEARTBEAT_SECONDS = 60.0  # a training call's row of calls.csv is rewritten at least this often (`CallLog`)


class CallLog:
    """One study call's row of calls.csv (`CALL_COLUMNS`: ``started``, a UTC ``datetime``; ``command``; ``commit``;
    ``jobs``; the machine's CPU count and `gv3lite.utils.cpu_identity`; the wall time since ``t0``
    (``time.perf_counter``) and the ``counts`` of trained and skipped runs at each write), shared by both runners
    (``gv3lite.study.runner.reproduce``, ``gv3lite.study.blocks.reproduce_factorial``): appended when the call's
    trainings start, brought up to date after every finished run and when they end (``interrupted`` False).

    Heartbeat: from its first write on, a daemon thread also rewrites the row every ``heartbeat`` seconds (default
    `HEARTBEAT_SECONDS`; ``interrupted`` True) until the call's last write (``final``) or `stop`. So a ``kill -9`` or
    a machine shutdown at any point leaves the row with the wall time up to at most one ``heartbeat`` (plus the
    time of one write) before the kill, marked interrupted; the last row of a call that ends is exactly what it would
    be without the heartbeat. Every write goes through `append_call` (atomic, under calls.csv's file lock; the row
    found by its line, ``started`` and ``command``), so calls writing rows of one folder at once keep each other's.
    A call that trains nothing (``trains`` False, until a runner sets it) writes no row and starts no thread: it only
    re-renders, adding nothing to the study's wall time. ``calls``: the whole log after the last write (None before
    one). Raises ``ValueError`` for a ``heartbeat`` that is not a positive number of seconds."""

    def __init__(self, out_dir, started, command: str, commit: str, jobs: int, t0: float, counts: dict,
                 trains: bool = False, heartbeat: float | None = None):
        self.fields = {"started": started.isoformat(timespec="seconds"), "command": command, "git_commit": commit,
                       "jobs": jobs, "cpu_count": os.cpu_count(), "cpu": cpu_identity()}
        self.out_dir, self.t0, self.counts, self.trains = Path(out_dir), t0, counts, trains
        self.heartbeat = HEARTBEAT_SECONDS if heartbeat is None else heartbeat
        if isinstance(self.heartbeat, bool) or not isinstance(self.heartbeat, (int, float)) or not self.heartbeat > 0:
            raise ValueError(f"heartbeat={heartbeat!r}: must be a positive number of seconds (how often a training "
                             "call's row of calls.csv is rewritten)")
        self.index, self.calls = None, None
        self._lock, self._stopped, self._beat = threading.Lock(), threading.Event(), None

    def write(self, interrupted: bool, final: bool | None = None) -> dict | None:
        """Write (or bring up to date) the row; returns it, or ``None`` for a call that trains nothing. ``final``
        (default: ``not interrupted``): the call's last write, which first stops the heartbeat (so nothing rewrites
        the row after it); any other write starts the heartbeat if it is not running."""
        if final if final is not None else not interrupted:
            self.stop()
        if not self.trains:
            return None
        row = self._write(interrupted)
        if self._beat is None and not self._stopped.is_set():
            self._beat = threading.Thread(target=self._beating, name=f"calls.csv heartbeat ({self.out_dir})",
                                          daemon=True)
            self._beat.start()
        return row

    def stop(self) -> None:
        """End the heartbeat and wait for a write it is making; writes nothing (the row keeps its last update). Called
        by the last write, and by the runners when a call ends in an error (no thread outlives its call)."""
        self._stopped.set()
        if self._beat is not None:
            self._beat.join()

    def _write(self, interrupted: bool) -> dict:
        with self._lock:  # the heartbeat and the call's own writes, one at a time (they share the row's line)
            row = {**self.fields, "wall_seconds": round(time.perf_counter() - self.t0, 1),
                   "trained": self.counts["trained"], "skipped": self.counts["skipped"], "interrupted": interrupted}
            self.calls = append_call(self.out_dir, {c: row[c] for c in CALL_COLUMNS}, self.index)
            self.index = len(self.calls) - 1 if self.index is None else self.index
        return row

    def _beating(self) -> None:
        while not self._stopped.wait(self.heartbeat):
            try:
                self._write(interrupted=True)
            except (OSError, ValueError) as error:  # disk full, a damaged calls.csv: the call's next write says so
                warnings.warn(f"{self.out_dir / CALLS}: the heartbeat of the call's row stopped: {error}",
                              stacklevel=1)
                return


def read_calls(folder) -> pd.DataFrame | None:
    """The call log ``<folder>/calls.csv`` written by `reproduce` (`append_call`), or ``None`` when there is none.
    Raises ``gv3lite.schemas.ResultsFileError`` (a ``ValueError``) naming the file, the problem (a missing column, a
    repeated header line, a wall time that is not a number...) and the fix."""
    file = Path(folder) / CALLS
    if not file.is_file():
        return None
    return read_results(file, fix=f"fix or move away {file} (a new one is started with the next call's row)")


def wall_time(calls: pd.DataFrame) -> float:
    """Seconds during which at least one recorded call ran: the union of the calls' ``[started, started +
    wall_seconds]`` intervals, so overlapping calls (two ``reproduce`` on one ``--out``) count once, not summed.
    ``started`` has 1 s resolution: an overlap under 1 s is none."""
    starts = pd.to_datetime(calls["started"], utc=True, format="ISO8601")
    spans = sorted(zip((starts - starts.min()).dt.total_seconds(), calls["wall_seconds"].astype(float)))
    total, end = 0.0, float("-inf")
    for start, seconds in spans:
        start = end if end - 1.0 <= start < end else start
        total += max(0.0, start + seconds - max(start, end))
        end = max(end, start + seconds)
    return total


def recorded_results(out_dir) -> dict:
    """``run_id -> result`` (``RESULT_FIELDS`` and ``seed``) of every training recorded in ``<out_dir>/runs.csv``.

    The committed results hold runs.csv but not the run directories, so a budget can be completed over several
    sittings (or on another machine) without retraining what is recorded: a run id is the hash of the trained
    recipe, so an equal id is the same training. Empty without runs.csv; raises ``ResultsFileError`` for a damaged
    one (``gv3lite.schemas``: a NaN or out-of-range top-1, a missing column, a truncated file...)."""
    file = Path(out_dir) / "runs.csv"
    if not file.is_file():
        return {}
    runs = read_results(file)
    rows = runs.drop_duplicates("run_id").to_dict("records")
    return {r["run_id"]: {k: r.get(k) for k in ("seed", *RESULT_FIELDS)} for r in rows}


def gather_run_files(out_dir, run_ids, name: str, combined: str) -> pd.DataFrame:
    """One table of the per-run file ``runs/<id>/<name>`` (e.g. ``metrics.csv``) of each of ``run_ids``, with a
    ``run_id`` column first. A run without its directory keeps its rows from ``<out_dir>/<combined>`` (the committed
    copy); a run in neither has no rows. Raises ``gv3lite.schemas.ResultsFileError`` for a damaged combined copy
    that a run needs, naming those runs (their rows are nowhere else: restoring the file is the fix)."""
    out_dir = Path(out_dir)
    gone = [rid for rid in run_ids if not (out_dir / "runs" / rid / name).is_file()]
    old = None  # the combined copy is read (and validated) only when a run needs it: a damaged one that every run
    parts = []  # directory replaces is simply rewritten
    for rid in run_ids:
        file = out_dir / "runs" / rid / name
        if file.is_file():
            parts.append(pd.read_csv(file).assign(run_id=rid))
            continue
        if old is None:
            where = out_dir / combined
            fix = (f"{restore_it(where)}: the rows of {len(gone)} run(s) whose folder runs/<id> is gone "
                   f"({', '.join(gone[:3])}{', ...' if len(gone) > 3 else ''}) are only there")
            old = read_results(where, fix=fix) if where.is_file() else pd.DataFrame(columns=["run_id"])
        parts.append(old[old["run_id"] == rid])
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=["run_id"])
    table = pd.concat(parts, ignore_index=True)
    return table[["run_id", *[c for c in table.columns if c != "run_id"]]]


def _fingerprint(result: dict) -> str:
    """The code fingerprint a result records (`UNKNOWN` for results of older versions, or an empty cell)."""
    value = result.get("code_fingerprint")
    return value if isinstance(value, str) and value else UNKNOWN


def collect(items: list[dict], out_dir: Path, budget: str, recorded: dict | None = None) -> pd.DataFrame:
    """One row per (grid, cell, seed): ``grid, cell, seed, run_id``, the result, ``budget`` and every recipe field
    (lists as JSON). The result comes from ``runs/<id>/result.json`` of a finished run (`finished_run`), else from
    ``recorded`` (`recorded_results`); rows of runs in neither are left out (they are not finished)."""
    rows = []
    for it in items:
        file = out_dir / "runs" / it["run_id"] / "result.json"
        if finished_run(file.parent):
            result = json.loads(file.read_text())
        elif it["run_id"] in (recorded or {}):
            result = recorded[it["run_id"]]
        else:
            continue
        config = {k: (json.dumps(v) if isinstance(v, list) else v) for k, v in it["recipe"].to_dict().items()
                  if k != "seed"}
        top1 = result["top1_ema"] if it["recipe"].ema else result["top1_raw"]  # see `trained_as`
        rows.append({"grid": it["grid"], "cell": it["cell"], "seed": it["seed"], "run_id": it["run_id"],
                     "top1": top1, "top5": result["top5"], "top1_raw": result["top1_raw"],
                     "top1_ema": result["top1_ema"], "train_seconds": result["train_seconds"],
                     "cpu_seconds": result["cpu_seconds"], "git_commit": result["git_commit"],
                     "code_fingerprint": _fingerprint(result), "budget": budget,
                     "command": result["command"], **config})
    return pd.DataFrame(rows)


RUN_FILES = ("result.json", "metrics.csv", "predictions.csv", "best.pth", "last.pth")  # a finished run's directory


def finished_run(run_dir) -> bool:
    """Whether ``run_dir`` holds a finished training: every file of `RUN_FILES` (``result.json`` alone is not enough:
    a run killed by an older gv3lite between its last.pth and its metrics.csv had it without the others)."""
    return all((Path(run_dir) / name).is_file() for name in RUN_FILES)


VERDICT_TEXT = ("grid", "cell", "baseline", "claim", "paper_diff", "seeds", "per_seed", "method", "same_as", "note",
                "family", "verdict", "differs")  # verdicts.csv columns that are text ("+0.2" or "0 1" must stay text)


def read_verdicts(file) -> pd.DataFrame:
    """``verdicts.csv`` as written by `reproduce` / `report`, its text columns as strings ("" for empty).
    Raises ``FileNotFoundError`` and ``ValueError`` (missing columns) with the command that writes it."""
    file = Path(file)
    fix = f"write it with `gv3lite report {file.parent} --out {file.parent}`"
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; {fix}")
    table = read_results(file, fix=fix, dtype={c: str for c in VERDICT_TEXT})
    missing = [c for c in ("paper_diff", "differs") if c not in table]
    if missing:
        raise ValueError(f"results file {file}: lacks column(s) {missing}; {fix}")
    return table.fillna({c: "" for c in VERDICT_TEXT if c in table})


def read_claims(file) -> pd.DataFrame:
    """A factorial study's ``verdicts.csv`` (one row per declared claim: ``claim``, ``direction``, ``diff``, ``se``,
    ``df``, ``low``/``high`` at the look's ``level``, ``verdict``, ...), validated; raises like `read_verdicts`."""
    file = Path(file)
    fix = f"write it with `gv3lite report {file.parent} --out {file.parent}`"
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; {fix}")
    return read_results(file, kind=FACTORIAL_VERDICTS, fix=fix, dtype={"claim": str, "direction": str,
                                                                        "verdict": str})


def design_of(runs: pd.DataFrame, where="runs.csv") -> str | None:
    """The design of a runs.csv table: ``"factorial"`` (rows of the factorial's grid), ``"ofat"`` (rows of the
    one-factor grids) or ``None`` (no rows). Raises ``ValueError`` naming ``where`` and the fix when it mixes them."""
    grids = set(runs["grid"].astype(str)) if "grid" in runs and len(runs) else set()
    if not grids:
        return None
    if FACTORIAL_GRID in grids and len(grids) > 1:
        raise ValueError(f"{where} mixes two designs: the factorial's rows and the one-factor grids' "
                         f"({', '.join(sorted(grids - {FACTORIAL_GRID}))}); a study folder holds one design: keep "
                         "each in its own --out folder (move one set of rows away)")
    return "factorial" if FACTORIAL_GRID in grids else "ofat"


def folder_design(folder) -> str | None:
    """The design of the study in ``folder`` (`DESIGNS`): from its runs.csv (`design_of`), else ``"factorial"`` when
    it holds a ``design.json`` only, else ``None`` (nothing recorded yet). Raises like `design_of` and
    ``gv3lite.schemas.read_results`` (a damaged runs.csv)."""
    folder = Path(folder)
    if (folder / "runs.csv").is_file():
        found = design_of(read_results(folder / "runs.csv"), folder / "runs.csv")
        if found is not None:
            return found
    return "factorial" if (folder / DESIGN_FILE).is_file() else None


def check_design(folder, design: str, fix: str = "give another --out (nothing was changed)") -> None:
    """Refuse ``folder`` when it holds a study of another design than ``design`` (``ValueError``: one line naming
    both designs and ``fix``); a folder with nothing recorded passes."""
    found = folder_design(folder)
    if found is not None and found != design:
        raise ValueError(f"{folder} holds a study of {DESIGNS[found]}, not {DESIGNS[design]}; the two designs are "
                         f"never mixed in one folder: {fix}")
