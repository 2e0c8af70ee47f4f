"""Scale-out of the study's independent trainings: one lock per run, one run per GPU, and a scheduler (submitit).

Owns:
* `claim_run` -- a ``filelock.FileLock`` on ``<run_dir>.lock``, held while a run trains, so two ``gv3lite reproduce``
  calls on one ``--out`` (on one machine, or on several machines that share the results folder) never train the same
  run twice: the second one skips it and collects its result once it is finished.
* `worker_devices` -- the device of each of ``jobs`` worker processes: one GPU each (round-robin) when the machine
  has several, else the device asked for.
* `submit_runs` -- every run as one job of an existing scheduler through submitit: ``cluster="slurm"`` (SLURM, one
  array with ``jobs`` runs at a time), ``"local"`` (submitit's LocalExecutor: subprocesses on this machine, ``jobs``
  at a time; what the tests use) or ``"debug"`` (in this process, for debugging); a failed job is reported with its
  own error line (`job_error`), not only its log path.
* `cap_jobs` -- ``--jobs`` lowered to the number of runs to train and to what the available memory holds, with the
  reason.

The callers (``gv3lite.study.workers``) pass the function that trains one task; nothing here knows a recipe.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import psutil
import torch
from filelock import FileLock, Timeout

CLUSTERS = ("local", "slurm", "debug")
# memory one training process takes at most, for `cap_jobs`: issue 26 measured 13 GB for `reproduce --jobs 12`
# (12 workers and the parent) on Imagenette; ~1 GiB per worker
JOB_MEMORY_BYTES = 1 << 30


def cap_jobs(jobs: int, runs: int, log=print, available: int | None = None,
             per_job: int = JOB_MEMORY_BYTES) -> int:
    """The number of trainings to run at once: ``jobs`` lowered to ``runs`` (the runs left to train; at least 1)
    and to the number of `JOB_MEMORY_BYTES` the machine's available memory holds (``available`` bytes; default
    ``psutil.virtual_memory().available``; at least 1). Each lowering is logged with its reason."""
    capped = min(jobs, max(runs, 1))
    if capped < jobs:
        log(f"--jobs {jobs} lowered to {capped}: only {runs} run{'s' if runs != 1 else ''} to train")
    available = psutil.virtual_memory().available if available is None else available
    fits = max(1, available // per_job)
    if fits < capped:
        log(f"--jobs {capped} lowered to {fits}: {available / 2**30:.1f} GiB of memory available and a training "
            f"takes up to ~{per_job / 2**30:.1f} GiB; free memory to run more at once")
        capped = fits
    return capped


def job_error(err: BaseException) -> str:
    """The line that says why a submitit job failed: the exception line (``ValueError: ...``) at the end of the
    job's traceback that submitit's ``FailedJobError`` carries between dashed lines (its message ends with the log
    paths), else the last line of an ``UncompletedJobError``'s error stream; at most 300 characters."""
    text = str(err)
    parts = text.split("----------------------")
    trace = parts[1] if len(parts) >= 3 else text
    lines = [line.rstrip() for line in trace.strip().splitlines() if line.strip() and not set(line.strip()) <= {"-"}]
    unindented = [line for line in lines if not line.startswith((" ", "\t"))]
    return ((unindented or lines or [type(err).__name__])[-1]).strip()[:300]


@contextlib.contextmanager
def claim_run(run_dir: str | Path):
    """Context manager: ``True`` while this process holds ``<run_dir>.lock`` (a ``filelock.FileLock``, taken without
    waiting), ``False`` when another process holds it (that process trains the run: skip it). The lock is released
    when the block ends, also on an error or Ctrl-C (and by the OS when the process dies)."""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def worker_devices(device: str, jobs: int) -> list[str]:
    """The device of each of ``jobs`` worker processes. ``"cuda"`` (or ``"auto"`` on a GPU machine) with G GPUs:
    worker k gets ``cuda:{k % G}`` -- one run per GPU when ``jobs == G``; anything else: ``device`` for every
    worker."""
    count = torch.cuda.device_count() if device in ("cuda", "auto") else 0
    if count == 0:
        return [device] * jobs
    return [f"cuda:{k % count}" for k in range(jobs)]


def submit_runs(train, tasks: dict, folder: str | Path, cluster: str = "local", jobs: int = 1, done=None,
                slurm_partition: str | None = None, timeout_min: int = 24 * 60, gpus_per_run: int = 0,
                cpus_per_run: int | None = None) -> dict:
    """Run ``train(task)`` for every ``tasks[run_id]`` as a submitit job and return ``{run_id: result}``.

    ``cluster``: ``"slurm"`` (all runs as one job array, at most ``jobs`` at a time, on ``slurm_partition``),
    ``"local"`` (subprocesses on this machine, ``jobs`` at a time) or ``"debug"`` (in this process). ``folder``
    receives submitit's job files and logs (``<job id>_0_log.out`` / ``.err``). ``gpus_per_run``, ``cpus_per_run`` and
    ``timeout_min`` are the scheduler's resources per run. ``done(k, run_id, result)`` is called as each run ends.

    Raises ``ValueError`` for an unknown ``cluster``, and ``ChildProcessError`` naming every failed run, its error
    line (`job_error`) and its log file (the other runs are finished first). Ctrl-C cancels the jobs still queued or
    running.
    """
    import submitit

    if cluster not in CLUSTERS:
        raise ValueError(f"unknown submitit cluster {cluster!r}; choose one of {CLUSTERS}")
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params = {"timeout_min": timeout_min, "gpus_per_node": gpus_per_run}
    if cpus_per_run:
        params["cpus_per_task"] = cpus_per_run
    if cluster == "slurm":
        params.update(slurm_array_parallelism=jobs, **({"slurm_partition": slurm_partition} if slurm_partition else {}))
    executor.update_parameters(**params)
    ids = list(tasks)
    waves = [ids] if cluster == "slurm" else [ids[i:i + jobs] for i in range(0, len(ids), jobs)]
    results, failed, submitted = {}, [], []
    try:
        for wave in waves:
            wave_jobs = executor.map_array(train, [tasks[rid] for rid in wave])
            submitted += wave_jobs
            for rid, job in zip(wave, wave_jobs):
                try:
                    results[rid] = job.result()
                except Exception as err:  # submitit's FailedJobError / UncompletedJobError carry the job's traceback
                    failed.append(f"run {rid} failed with {job_error(err)} (job {job.job_id}, log {job.paths.stderr})")
                    continue
                if done is not None:
                    done(len(results), rid, results[rid])
    except BaseException:
        for job in submitted:
            if not job.done():
                job.cancel(check=False)
        raise
    if failed:
        raise ChildProcessError(f"{len(failed)} of {len(ids)} runs failed: " + "; ".join(failed)
                                + ". Fix the cause and run the same command again: finished runs are kept")
    return results


__all__ = ["CLUSTERS", "JOB_MEMORY_BYTES", "cap_jobs", "job_error", "claim_run", "worker_devices", "submit_runs"]
