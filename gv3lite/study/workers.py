"""Training the study's runs: one run under its lock (`run_one`), the teacher pass before them
(`prepare_teachers`), and the three ways to train many (`train_runs`): in this process, in a pool of spawned worker
processes (one per GPU on a multi-GPU machine), or as submitit jobs (SLURM, local).

Each run trains under a file lock (``gv3lite.launch.claim_run``), so a second call on the same folder skips the runs
the first one is training. A run with ``result.json`` is finished; one with only ``last.pth`` continues from it
(``gv3lite.experiment.run(resume=True)``).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch

from gv3lite.data import ImageFolderDataset
from gv3lite.teacher_outputs import make_kd
from gv3lite.experiment import check_names, recipe_datasets, run
from gv3lite.fingerprint import code_fingerprint
from gv3lite.launch import claim_run, submit_runs, worker_devices
from gv3lite.recipe import Recipe
from gv3lite.study.records import finished_run
from gv3lite.utils import git_commit, write_atomic


def dataset_key(r: Recipe) -> tuple:
    return (r.img_size, tuple(r.classes or ()), r.images_per_class_train, r.images_per_class_val, r.data_seed,
            r.tuning, r.auto_augment, r.random_erasing, r.min_crop_scale, r.cache)


def run_one(recipe: Recipe, run_dir: Path, data_root, datasets=None, quiet: bool = True, command: str = "",
            device: str = "cpu") -> dict | None:
    """Train one recipe into ``run_dir`` on ``device`` (resuming ``last.pth`` if there) and write
    ``run_dir/result.json``, holding the run's lock (``gv3lite.launch.claim_run``) meanwhile.

    Returns the result dict: ``top1`` (EMA weights if ``recipe.ema``), ``top1_raw``, ``top1_ema`` (NaN without
    EMA), ``top5``, ``train_seconds`` (wall time of all epochs incl. evaluation, summed over resumes),
    ``cpu_seconds`` (process CPU time of this call only), ``epochs``, ``git_commit``, ``code_fingerprint`` (of the
    training code, ``gv3lite.fingerprint``), ``command``; the stored result
    (with ``finished_elsewhere: True``) when another process finished the run meanwhile; ``None`` (nothing trained) while another process trains it.
    """
    with claim_run(run_dir) as claimed:
        if not claimed:
            return None
        if finished_run(run_dir):
            return {**json.loads((run_dir / "result.json").read_text()), "finished_elsewhere": True}
        if (run_dir / "result.json").is_file():  # result.json without the run's other files: train it again
            kept = run_dir.with_name(f"{run_dir.name}.incomplete-{int(time.time())}")
            run_dir.rename(kept)  # kept, never deleted
        return _train_run(recipe, Path(run_dir), data_root, datasets, quiet, command, device)


def _train_run(recipe: Recipe, run_dir: Path, data_root, datasets, quiet: bool, command: str, device: str) -> dict:
    resume = (run_dir / "last.pth").is_file()
    cpu0 = time.process_time()
    history = run(recipe, data_root, run_dir, device=device, resume=resume, quiet=quiet, datasets=datasets)
    last = history.iloc[-1]
    result = {"top1_raw": float(last.val_top1), "top1_ema": float(last.ema_top1), "top5": float(last.val_top5),
              "train_seconds": float(history["seconds"].sum()), "cpu_seconds": time.process_time() - cpu0,
              "epochs": int(last.epoch), "resumed": resume, "git_commit": git_commit(),
              "code_fingerprint": code_fingerprint(), "command": command}
    result["top1"] = result["top1_ema"] if recipe.ema else result["top1_raw"]
    write_atomic(run_dir / "result.json", json.dumps(result, indent=2) + "\n")  # last: the run's commit point
    return result


def prepare_teachers(recipes: list[Recipe], root, log=print, quiet: bool = True) -> None:
    """Compute (or find on disk) the cached teacher outputs of every cached-KD recipe in ``recipes``, once per
    (teacher, training images), so that trainings, possibly running in parallel, only read them. Logs the time of
    each teacher pass (the one-off cost of cached KD). Every recipe's names are checked first
    (``gv3lite.experiment.check_names``), so a missing same-data teacher file stops the study at once, before any
    teacher pass or training."""
    for r in recipes:
        check_names(r)
    seen = set()
    for r in recipes:
        key = (r.teacher, tuple(r.classes or ()), r.images_per_class_train, r.data_seed, r.tuning)
        if r.teacher is None or r.kd_mode != "cached" or key in seen:
            continue
        seen.add(key)
        train = ImageFolderDataset(root, "train", r.img_size, classes=r.classes, per_class=r.images_per_class_train,
                                   seed=r.data_seed, cache=False, tuning=r.tuning)  # file list only
        t0 = time.perf_counter()
        make_kd(r.teacher, train, mode="cached", progress=not quiet)
        log(f"teacher {r.teacher}: outputs for {len(train)} training images ready ({time.perf_counter() - t0:.0f} s)")


_DATASETS: dict = {}  # per process: decoded datasets by data root and `dataset_key`, reused by the runs that share them


def _datasets_for(recipe: Recipe, root, keep_one: bool = False):
    key = (str(root), dataset_key(recipe))  # the root too: one process may train on two roots (the tests do)
    if key not in _DATASETS:
        if keep_one:
            _DATASETS.clear()  # full-size datasets: keep one in memory at a time
        _DATASETS[key] = recipe_datasets(recipe, root, return_crop_info=True)
    return _DATASETS[key]


def _threads_per_job(jobs: int, log) -> int:
    cores = os.cpu_count() or 1
    if jobs > cores:
        log(f"warning: --jobs {jobs} is more than the {cores} CPU cores; trainings will slow each other down")
    return max(1, torch.get_num_threads() // jobs)


def _run_parallel(todo: dict, jobs: int, threads: int, out_dir: Path, root, command: str, keep_one: bool, done,
                  device: str = "cpu"):
    """Train ``todo`` (run id -> recipe) in ``jobs`` spawned worker processes, each on its device of
    ``gv3lite.launch.worker_devices`` (one GPU per worker on a multi-GPU machine). Ctrl-C or SIGTERM stops the workers
    at once (finished runs stay finished, interrupted ones resume on the next call) and re-raises. A training that
    raises in a worker stops the others the same way and raises its error here (its own type and one-line message);
    a worker that dies without a result (killed, out of memory, a crash in native code) raises ``ChildProcessError``
    naming the run. Neither can hang the call: ``concurrent.futures`` notices a dead worker (``multiprocessing.Pool``
    hung in ``terminate`` after a worker's error, and waited for ever for a dead worker's task)."""
    context = multiprocessing.get_context("spawn")
    devices = context.Queue()
    for d in worker_devices(device, jobs):
        devices.put(d)
    pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init, initargs=(threads, devices))
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        futures = {pool.submit(_worker_train, _task(rid, r, out_dir, root, command, keep_one, None, threads)): rid
                   for rid, r in todo.items()}
        for k, future in enumerate(as_completed(futures), 1):
            done(k, *_worker_result(future, futures[future], out_dir))
    except BaseException:
        for process in list((getattr(pool, "_processes", None) or {}).values()):  # stop the other trainings now
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        pool.shutdown()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _worker_result(future, rid: str, out_dir: Path) -> tuple[str, dict | None]:
    """``(run id, result)`` of a worker's training; re-raises the training's own error, and a worker that died
    without a result as ``ChildProcessError`` (one line: the run, what is kept, what to run)."""
    try:
        return future.result()
    except BrokenProcessPool as err:
        raise ChildProcessError(f"a worker process of --jobs ended without a result while training run {rid} "
                                f"({err}): it was killed, ran out of memory, crashed, or raised an error that could "
                                f"not be passed back. Finished runs are kept in {out_dir / 'runs'}: run the same "
                                "command again, with --jobs 1 to see the training's own error") from err


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


_WORKER_DEVICE = {"device": "cpu"}  # per worker process: its device (set by `_worker_init`)


def _worker_init(threads: int, devices=None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent alone handles it
    torch.set_num_threads(threads)
    if devices is not None:
        _WORKER_DEVICE["device"] = devices.get()


def _task(rid: str, recipe: Recipe, out_dir: Path, root, command: str, keep_one: bool, device, threads: int) -> dict:
    """What a worker process or a submitit job needs to train one run (plain values: it is pickled)."""
    return {"rid": rid, "recipe": recipe.to_dict(), "run_dir": str(out_dir / "runs" / rid), "root": str(root),
            "command": command, "keep_one": keep_one, "device": device, "threads": threads}


def _worker_train(task: dict) -> tuple[str, dict | None]:
    if task["threads"]:
        torch.set_num_threads(task["threads"])
    recipe, root = Recipe.from_dict(task["recipe"]), task["root"]
    device = task["device"] or _WORKER_DEVICE["device"]
    return task["rid"], run_one(recipe, Path(task["run_dir"]), root, _datasets_for(recipe, root, task["keep_one"]),
                                quiet=True, command=task["command"], device=device)


def _worker_train_result(task: dict) -> dict | None:
    """`_worker_train` for a submitit job (which returns the result alone)."""
    return _worker_train(task)[1]


def train_runs(todo: dict, out_dir: Path, root, command: str, budget: str, done, jobs: int = 1, device: str = "cpu",
               quiet: bool = True, submitit: str | None = None, submitit_options: dict | None = None,
               log=print) -> None:
    """Train ``todo`` (run id -> recipe) into ``<out_dir>/runs/<run id>``, calling ``done(k, run id, result)`` as
    each ends (`run_one`'s result). ``jobs``: trainings at once (worker processes, or submitit jobs at once);
    ``submitit``: ``"local"``, ``"slurm"`` or ``"debug"`` runs each training as a job of that executor
    (``submitit_options``: ``slurm_partition``, ``timeout_min``, ``gpus_per_run``, ``cpus_per_run``; logs under
    ``<out_dir>/submitit/``). The full budget keeps one decoded dataset in memory at a time."""
    keep_one = budget == "full"
    if submitit is not None and todo:
        options = dict(submitit_options or {})
        # slurm gives each job its own GPU(s) (cuda:0 inside the job); local jobs see every GPU: pick one per job
        devices = worker_devices(device, jobs) if submitit == "local" else [device]
        if submitit == "local" and devices[0].startswith("cuda"):
            options["gpus_per_run"] = torch.cuda.device_count()
        tasks = {rid: _task(rid, r, out_dir, root, command, keep_one, devices[k % len(devices)], 0)
                 for k, (rid, r) in enumerate(todo.items())}
        log(f"{len(todo)} trainings as submitit jobs ({submitit}, {jobs} at once); logs in {out_dir / 'submitit'}")
        submit_runs(_worker_train_result, tasks, out_dir / "submitit", submitit, jobs, done, **options)
    elif jobs == 1:
        for k, (rid, recipe) in enumerate(todo.items(), 1):
            datasets = _datasets_for(recipe, root, keep_one=keep_one)
            done(k, rid, run_one(recipe, out_dir / "runs" / rid, root, datasets, quiet=quiet, command=command,
                                 device=worker_devices(device, 1)[0]))
    elif todo:
        threads = _threads_per_job(jobs, log)
        log(f"{len(todo)} trainings, {jobs} at once with {threads} thread{'s' if threads > 1 else ''} each")
        _run_parallel(todo, jobs, threads, out_dir, root, command, keep_one, done, device)
