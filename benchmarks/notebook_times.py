"""Notebook times: how long Run All of each course notebook takes in JupyterLab at one budget, and whether it passes.

What a student meets (issue 25): every notebook opened in JupyterLab in headless Chromium and run with Run > Run All
Cells, with the kernel's environment set to ``GV3LITE_BUDGET=<budget>`` and ``OMP_NUM_THREADS=<threads>`` (default 1,
as ``make test`` runs the notebooks). The harness is the browser test's (``tests/browser.py``: Debian's chromium
through the PyPI playwright package, ``--no-sandbox --disable-gpu``; every notebook is a copy in a temporary folder
that JupyterLab serves, so nothing in the repository is saved over and the tracked tree stays clean).

Per notebook: the wall seconds of Run All (the click to the last cell's end; the kernel's start is not counted), and
whether it passed: every code cell ran, no error output, and the last cell printed its ``claim checked`` line (the
claim's asserts held). A failure records its first error (``ename: evalue``); stderr blocks (warnings) are recorded
too but do not fail a notebook here (the browser test fails them at smoke). A notebook still running after
``--timeout-s`` is interrupted, its kernel shut down, and recorded as ``timed out``.

Writes ``<out>/<budget>.csv`` (one row per notebook; a later call replaces the rows of the notebooks it runs and keeps
the others) and ``<out>/<budget>.json`` (one record per call: command, git commit, code fingerprint, date, wall time,
load average before and after, threads, chromium version). Screenshots go to the git-ignored
``runs/notebook_times/<budget>/``.

Usage:
    python benchmarks/notebook_times.py --budget quick                     # every notebook, 900 s each at most
    python benchmarks/notebook_times.py --budget smoke --notebooks 01 05   # by number or name
    python benchmarks/notebook_times.py --budget medium --timeout-s 600 --out /tmp/times
Wall times depend on the machine and its load: each call records the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from gv3lite.budgets import check_budget
from gv3lite.fingerprint import code_fingerprint
from gv3lite.utils import git_commit, write_atomic, write_csv

# the browser harness is test tooling (tests/browser.py), not part of the package: imported from its file's folder,
# as is machine.py from this script's
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser  # noqa: E402
from machine import load_average, machine, utc_now  # noqa: E402

COLUMNS = ["notebook", "budget", "threads", "seconds", "status", "cells_run", "code_cells", "error", "stderr",
           "started_utc", "git_commit"]


def select_notebooks(names: list[str] | None) -> list[Path]:
    """The notebooks named by number (``05``) or name (``05_training_recipe``, with or without ``.ipynb``); all of
    ``notebooks/`` when ``names`` is empty. Raises ``ValueError`` naming an unknown one and the choices."""
    if not names:
        return list(browser.NOTEBOOKS)
    chosen = []
    for name in names:
        stem = Path(name).name.removesuffix(".ipynb")
        hits = [nb for nb in browser.NOTEBOOKS if nb.stem == stem or nb.stem.split("_", 1)[0] == stem]
        if len(hits) != 1:
            raise ValueError(f"--notebooks {name!r} names no notebook; choose from "
                             f"{', '.join(nb.stem for nb in browser.NOTEBOOKS)} (or their numbers)")
        chosen += [nb for nb in hits if nb not in chosen]
    return chosen


def outcome(result: browser.RunAll) -> dict:
    """The row fields of a finished Run All: status, cells run, first error and first stderr block."""
    nb = result.notebook
    code = browser.code_cells(nb)
    errors = browser.error_outputs(nb)
    stderr = [p for p in browser.error_outputs(nb, stderr=True) if p not in errors]
    ran = sum(c.get("execution_count") is not None for c in code)
    passed = not errors and ran == len(code) and "claim checked" in browser.last_stdout(nb)
    first = errors[0] if errors else None
    return {"seconds": round(result.seconds, 1), "status": "passed" if passed else "failed", "cells_run": ran,
            "code_cells": len(code),
            "error": f"cell {first[0]}: {first[1]}: {first[2].splitlines()[0] if first[2] else ''}" if first else
            ("" if passed else "no 'claim checked' line in the last cell"),
            "stderr": f"cell {stderr[0][0]}: {' '.join(stderr[0][2].split())[:200]}" if stderr else ""}


def measure(notebooks: list[Path], budget: str, threads: int, timeout: float, shots: Path, commit: str,
            on_row) -> str:
    """Run All of every notebook in one JupyterLab and one Chromium; ``on_row(row)`` after each. Returns the
    browser's version."""
    from playwright.sync_api import sync_playwright
    with tempfile.TemporaryDirectory(prefix="notebook_times_") as tmp:
        root = Path(tmp) / "course"
        root.mkdir()
        browser.copy_notebooks(notebooks, root)
        lab = browser.Lab(root, Path(tmp) / "lab", Path(tmp) / "jupyterlab.log",
                          env={"GV3LITE_BUDGET": budget, "OMP_NUM_THREADS": str(threads)})
        try:
            with sync_playwright() as p:
                chromium = browser.launch(p, browser.missing_browser()[0])
                try:
                    for nb in notebooks:
                        row = {"notebook": nb.stem, "budget": budget, "threads": threads,
                               "started_utc": utc_now(), "git_commit": commit}
                        print(f"{nb.stem} ({budget}, {threads} thread(s)) ...", flush=True)
                        try:
                            row |= outcome(browser.run_notebook(lab, chromium, nb.name, timeout, shots))
                        except browser.RunAllTimeout as err:
                            ran = sum(p.strip("[]: ").isdigit() for p in err.prompts)
                            row |= {"seconds": float(timeout), "status": "timed out", "cells_run": ran,
                                    "code_cells": len(err.prompts), "error": f"no end within {timeout:.0f} s",
                                    "stderr": ""}
                        print(f"  {row['status']} in {row['seconds']:.1f} s {row['error']}", flush=True)
                        on_row(row)
                    return chromium.version
                finally:
                    chromium.close()
        finally:
            lab.close()


def _stop(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="smoke", help="smoke | quick | medium | full (the kernels' GV3LITE_BUDGET)")
    parser.add_argument("--notebooks", nargs="*", help="numbers or names (default: every notebook)")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="per notebook, Run All to its end")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the kernels")
    parser.add_argument("--out", default="results/notebook_times")
    args = parser.parse_args(argv)
    try:
        budget = check_budget(args.budget)
        notebooks = select_notebooks(args.notebooks)
        if args.timeout_s <= 0 or args.threads < 1:
            raise ValueError(f"--timeout-s {args.timeout_s:g} / --threads {args.threads}: give positive numbers")
        path, missing = browser.missing_browser()
        if missing:
            raise ValueError("Run All in a browser needs " + " and ".join(missing))
    except ValueError as err:
        print(f"notebook_times.py: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    table_path, calls_path = out / f"{budget}.csv", out / f"{budget}.json"
    old = pd.read_csv(table_path, keep_default_na=False) if table_path.is_file() else pd.DataFrame(columns=COLUMNS)
    rows = []

    def on_row(row):  # written after every notebook, so a stopped call keeps what it measured
        rows.append(row)
        done = {r["notebook"] for r in rows}
        table = pd.concat([old[~old["notebook"].isin(done)], pd.DataFrame(rows)], ignore_index=True)
        write_csv(table[COLUMNS].sort_values("notebook"), table_path)

    signal.signal(signal.SIGTERM, _stop)
    call = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "git_commit": git_commit(),
            "code_fingerprint": code_fingerprint(), "started_utc": utc_now(), "budget": budget,
            "threads": args.threads, "timeout_s": args.timeout_s, "notebooks": [nb.stem for nb in notebooks],
            "machine": machine(), "load_before": load_average()}
    t0, code = time.perf_counter(), 0
    try:
        call["chromium"] = measure(notebooks, budget, args.threads, args.timeout_s,
                                   browser.REPO / "runs" / "notebook_times" / budget, call["git_commit"], on_row)
    except KeyboardInterrupt as err:
        call["stopped"] = f"stopped early ({err or 'interrupted'}) after {len(rows)} notebook(s)"
        code = 130
    call |= {"wall_seconds": round(time.perf_counter() - t0, 1), "load_after": load_average(),
             "measured": [r["notebook"] for r in rows]}
    calls = json.loads(calls_path.read_text())["calls"] if calls_path.is_file() else []
    write_atomic(calls_path, json.dumps({"calls": calls + [call]}, indent=1) + "\n")
    for r in rows:
        print(f"{r['notebook']:32s} {r['seconds']:7.1f} s  {r['status']:9s} {r['error']}")
    print(f"{budget}, {args.threads} thread(s), load {call['load_before'][0]:.1f} -> {call['load_after'][0]:.1f}; "
          f"wrote {table_path} and {calls_path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
