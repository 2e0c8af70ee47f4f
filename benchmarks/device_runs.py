"""Train the regime pilot and the scope questions on a lent GPU, many trainings at once, within a wall-time limit.

Issue 22's two computations are ~150 CPU-hours' worth of short trainings on this project's 2-core machine
(``benchmarks/variance_pilot.py --regimes``: 3 regimes x 6 seeds; ``benchmarks/scope_questions.py``: 8 cells x 4-6
seeds, a third of them 4x longer). A GPU runs them in minutes: ``--workers`` processes (one CPU thread each) share
the GPU, each taking the next job of one ordered list: the pilot's runs first (seed by seed, every regime), then the
scope cells seed by seed (long cells first within a seed). A job is not started when the time it is expected to
take (the slowest seconds per unit of work seen so far, a long cell being `scope_questions.LONG` units) would end
after ``--seconds``; what did not run is listed in ``meta.json``. Rows are written as each job finishes, so a run cut
off at its limit keeps every finished training.

Writes to ``--out``: ``pilot_runs.csv`` (``variance_pilot.py``'s ``runs.csv`` columns), ``scope_runs.csv``
(``scope_questions.py``'s), ``meta.json`` (command, device, torch version, commit, code fingerprint, wall time, the
jobs done / skipped / failed with their errors) and ``log.txt``. The data is the small copy written by
``benchmarks/device_data.py`` (the device tool sends at most 64 MiB).

    python benchmarks/device_runs.py --data .device/imagenette2-96 --device cuda --workers 12 --seconds 480 \\
        --pilot-seeds 0 1 2 3 4 5 --scope-seeds 0 1 2 3 4 5 --out $OUT
    # then, here: merge pilot_runs.csv into results/variance_pilot/regimes/runs.csv and summarize it with
    # variance_pilot.py --cost-csv ... --provenance meta.json; scope_questions.py --analyse scope_runs.csv
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shlex
import shutil
import sys
import time
import traceback
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scope_questions as scope  # noqa: E402  (sibling scripts, not a package)
import variance_pilot as pilot  # noqa: E402

from gv3lite.utils import git_commit, write_atomic, write_csv  # noqa: E402

_STATE: dict = {}  # per worker process: the decoded datasets, the shared slowest seconds per unit, the options


def jobs(regimes: list[str], pilot_seeds: list[int], scope_seeds: list[int]) -> list[dict]:
    """The ordered job list: pilot (seed-major over ``regimes``), then scope cells seed by seed, long cells first."""
    out = [dict(kind="pilot", name=r, seed=s, units=1.2) for s in pilot_seeds for r in regimes]
    names = list(scope.cells(pilot.BASE))
    ordered = sorted(names, key=lambda c: not c.endswith("/long"))
    for s in scope_seeds:
        out += [dict(kind="scope", name=c, seed=s, units=scope.LONG if c.endswith("/long") else 1) for c in ordered]
    return out


def _init(slowest, options: dict) -> None:
    torch.set_num_threads(1)
    _STATE.update(slowest=slowest, options=options, pilot_datasets={}, scope_datasets={})


def _run_pilot(job: dict, o: dict) -> dict:
    changes, recipe = pilot.configurations(o["pilot_sets"], [], [job["name"]])[job["name"]]
    recipe = recipe.replace(seed=job["seed"])
    run_dir = Path(o["work"]) / job["name"] / f"seed{job['seed']}"
    result = pilot._train(recipe, o["data"], _STATE["pilot_datasets"], run_dir, tuning=True, device=o["device"])
    shutil.rmtree(run_dir, ignore_errors=True)
    return pilot.run_row(job["name"], changes, job["seed"], recipe, result, "tuning", o["commit"], o["fingerprint"],
                         o["command"])


def _run_scope(job: dict, o: dict) -> dict:
    recipe = scope.recipe_of(job["name"], job["seed"], o["scope_sets"])
    cache = _STATE["scope_datasets"]
    if recipe.img_size not in cache:
        cache[recipe.img_size] = scope.datasets_for(recipe, o["data"])
    result = scope.train_cell(recipe, o["data"], cache[recipe.img_size], o["device"])
    return {"cell": job["name"], "seed": job["seed"], **result, "git_commit": o["commit"],
            "code_fingerprint": o["fingerprint"], "command": o["command"]}


def work(job: dict) -> dict:
    """Run one job in a worker; ``{"job", "status": done|skipped|failed, "row" | "error", "seconds"}``."""
    o, slowest = _STATE["options"], _STATE["slowest"]
    if time.time() + slowest.value * job["units"] > o["end"]:
        return {"job": job, "status": "skipped"}
    t0 = time.time()
    try:
        row = (_run_pilot if job["kind"] == "pilot" else _run_scope)(job, o)
    except Exception as err:  # reported in meta.json; the other jobs go on
        return {"job": job, "status": "failed", "error": "".join(traceback.format_exception_only(err)).strip(),
                "trace": traceback.format_exc()[-2000:]}
    seconds = time.time() - t0
    with slowest.get_lock():
        slowest.value = max(slowest.value, seconds / job["units"])
    return {"job": job, "status": "done", "row": row, "seconds": seconds}


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return f"CPU (torch {torch.__version__})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="ImageFolder root (benchmarks/device_data.py's copy)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=480, help="no job starts that would end after this")
    parser.add_argument("--regimes", nargs="+", default=list(pilot.REGIMES))
    parser.add_argument("--pilot-seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--scope-seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change every job's base recipe (a smoke check: --set epochs=1 ...)")
    parser.add_argument("--work", default="/tmp/device_runs", help="the pilot's run folders (deleted per run)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    t0, out = time.time(), Path(args.out)
    options = dict(data=str(Path(args.data).resolve()), device=args.device, work=args.work, end=t0 + args.seconds,
                   pilot_sets=args.set, scope_sets={k: v[0] for k, v in pilot._parse(args.set, "--set")},
                   commit=git_commit(),
                   fingerprint=pilot.code_fingerprint(),
                   command="python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]))
    todo = jobs(args.regimes, args.pilot_seeds, args.scope_seeds)
    results, tables = [], {"pilot": [], "scope": []}
    ctx = mp.get_context("spawn")
    slowest = ctx.Value("d", 0.0)
    with ctx.Pool(args.workers, initializer=_init, initargs=(slowest, options)) as pool:
        for res in pool.imap_unordered(work, todo, chunksize=1):
            results.append(res)
            job = res["job"]
            if res["status"] == "done":
                tables[job["kind"]].append(res["row"])
                write_csv(pd.DataFrame(tables[job["kind"]]), out / f"{job['kind']}_runs.csv")
            print(f"[{time.time() - t0:6.0f} s] {job['kind']} {job['name']} seed {job['seed']}: {res['status']}"
                  + (f" {res['seconds']:.0f} s" if "seconds" in res else "")
                  + (f" {res['error']}\n{res['trace']}" if "error" in res else ""), flush=True)
            statuses = [r["status"] for r in results]
            if statuses.count("failed") >= 3 and "done" not in statuses:  # a broken setup: stop, keep the traces
                print("the first 3 finished jobs all failed: stopping", flush=True)
                pool.terminate()
                break
    meta = {"command": options["command"], "device": _device_name(args.device), "workers": args.workers,
            "git_commit": options["commit"], "code_fingerprint": options["fingerprint"], "data": args.data,
            "wall_seconds": time.time() - t0, "seconds_limit": args.seconds, "sets": args.set,
            "done": [r["job"] for r in results if r["status"] == "done"],
            "skipped": [r["job"] for r in results if r["status"] == "skipped"],
            "failed": [{**r["job"], "error": r["error"], "trace": r["trace"]} for r in results
                       if r["status"] == "failed"]}
    write_atomic(out / "meta.json", json.dumps(meta, indent=2) + "\n")
    print(f"done {len(meta['done'])}, skipped {len(meta['skipped'])}, failed {len(meta['failed'])} "
          f"in {meta['wall_seconds']:.0f} s on {meta['device']}")
    return 0 if not meta["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
