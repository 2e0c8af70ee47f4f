"""Does this machine reproduce the committed study? Retrain a few of its trainings and compare their top-1.

A committed factorial study (``results/<budget>/runs.csv``) records each training's run id, the hash of its recipe.
This script finds those run ids in the study's plan (``gv3lite.study.plan.factorial_plan``), trains each with the
current code into the git-ignored ``--out`` (``gv3lite.study.workers.run_one``, the study's own worker: same
recipe, seed, data and reading), and prints, per training, the committed and the new top-1 of the raw and EMA
weights and whether they are identical, with this machine's CPU (``gv3lite.utils.cpu_identity``) and the torch
threads per training (``--threads``, default 1: what ``make main`` gives each of its 2 jobs, ``OMP_NUM_THREADS=2``
split over ``--jobs 2``; a reduction split over other thread counts may round differently). It is a check of minutes
where ``make main`` takes from 40 min to 2 h, by the machine: identical top-1 means ``make main`` here reproduces the
committed runs to the last digit; a difference means this machine's arithmetic differs (another CPU, or other builds
of torch or of Pillow's JPEG decoder; see ``gv3lite.study.reproduction``), or ``--data`` is not the committed study's
data. Refuses, exit 2, when the committed study was trained by other training code (``gv3lite.fingerprint``), when a
training kept in ``--out`` was (delete it), or while another process trains it.

Usage::

    python benchmarks/rerun_committed.py --budget quick                         # the cheapest committed training
    python benchmarks/rerun_committed.py --budget quick --run-ids 3272d78d3b3c 8b4d06309762

Writes ``<out>/<budget>/rerun.csv`` (the table); the trainings stay in ``<out>/<budget>/runs/<run_id>/``, so a second
call retrains nothing (delete them to measure again).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import pandas as pd

from gv3lite.data import resolve_data_root
from gv3lite.fingerprint import code_fingerprint
from gv3lite.study.plan import factorial_plan
from gv3lite.study.records import finished_run
from gv3lite.study.workers import run_one
from gv3lite.utils import cpu_identity, git_commit, repo_root, set_torch_threads, write_csv


def committed_runs(budget: str, results=None) -> pd.DataFrame:
    """The committed study's ``runs.csv`` of ``budget`` (one row per run id). Raises ``FileNotFoundError`` when there
    is none."""
    file = Path(results or repo_root() / "results") / budget / "runs.csv"
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist: give a budget with a committed study (quick, medium)")
    return pd.read_csv(file).drop_duplicates("run_id").set_index("run_id")


def rerun(budget: str, run_ids: list[str] | None, out: Path, data=None, results=None, threads: int = 1
          ) -> pd.DataFrame:
    """Retrain ``run_ids`` (default: the committed training with the least ``train_seconds``) of the committed
    ``budget`` study into ``out/<budget>/runs/`` with ``threads`` torch threads and return one row each: ``run_id``,
    ``cell``, ``seed``, committed and new ``top1_raw`` / ``top1_ema`` (%), ``identical`` (both equal to the last
    digit), ``train_seconds`` (new), ``cpu``, ``threads``. Raises ``FileNotFoundError`` when there is no committed
    study and ``ValueError`` (one line, with the fix) for run ids the committed study or its plan lacks, for a study
    or a kept training of other training code, and for a training another process is training."""
    committed = committed_runs(budget, results)
    other = sorted(set(committed["code_fingerprint"].astype(str)) - {code_fingerprint()})
    if other:
        raise ValueError(f"the committed {budget} study was trained by other training code ({', '.join(other)}; "
                         f"current {code_fingerprint()}): differences are expected; regenerate it (make publish)")
    run_ids = list(dict.fromkeys(run_ids or [committed["train_seconds"].idxmin()]))  # each once
    missing = [r for r in run_ids if r not in committed.index]
    if missing:
        raise ValueError(f"run id(s) {', '.join(missing)} are not in results/{budget}/runs.csv: pick ids from its "
                         f"run_id column")
    blocks = int(committed["seed"].max()) + 1
    plan = {it["run_id"]: it for it in factorial_plan(budget, blocks)}
    unplanned = [r for r in run_ids if r not in plan]
    if unplanned:
        raise ValueError(f"run id(s) {', '.join(unplanned)} are not in today's plan of the {budget} factorial (the "
                         f"plan changed since the study): regenerate the study (make publish)")
    root, rows = resolve_data_root(data), []
    set_torch_threads(threads)
    for rid in run_ids:
        run_dir = out / budget / "runs" / rid
        kept = json.loads((run_dir / "result.json").read_text()) if finished_run(run_dir) else None
        if kept is not None and kept.get("code_fingerprint") != code_fingerprint():
            raise ValueError(f"{run_dir} was trained by other training code ({kept.get('code_fingerprint')}): "
                             f"delete it to train it again")
        result = kept or run_one(plan[rid]["trained_as"], run_dir, root)
        if result is None:
            raise ValueError(f"{run_dir} is being trained by another process: wait for it, then run this again")
        was = committed.loc[rid]
        rows.append({"run_id": rid, "cell": plan[rid]["cell"], "seed": plan[rid]["seed"],
                     "top1_raw_committed": float(was["top1_raw"]), "top1_raw": result["top1_raw"],
                     "top1_ema_committed": float(was["top1_ema"]), "top1_ema": result["top1_ema"],
                     "identical": result["top1_raw"] == float(was["top1_raw"])
                     and result["top1_ema"] == float(was["top1_ema"]),
                     "train_seconds": result["train_seconds"], "cpu": cpu_identity(), "threads": threads})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="quick", choices=["quick", "medium"])
    parser.add_argument("--run-ids", nargs="+", default=None, help="run ids of results/<budget>/runs.csv "
                                                                   "(default: its cheapest training)")
    parser.add_argument("--data", default=None, help="ImageFolder root (default: GV3LITE_DATA or the repo's data)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training (default 1: as each of "
                                                                  "make main's 2 jobs)")
    parser.add_argument("--out", type=Path, default=Path("runs/rerun"))
    args = parser.parse_args(argv)
    try:
        table = rerun(args.budget, args.run_ids, args.out, args.data, threads=args.threads)
    except (FileNotFoundError, ValueError) as err:
        print(f"rerun_committed: error: {err}", file=sys.stderr)
        return 2
    write_csv(table.assign(git_commit=git_commit(), code_fingerprint=code_fingerprint(),
                           command="python " + " ".join(shlex.quote(a) for a in sys.argv)),
              args.out / args.budget / "rerun.csv")
    print(table.to_string(index=False))
    same = int(table["identical"].sum())
    print(f"{same} of {len(table)} retrained top-1 identical to the committed study on {cpu_identity()}"
          + ("" if same == len(table) else ": this machine does not reproduce it to the last digit"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
