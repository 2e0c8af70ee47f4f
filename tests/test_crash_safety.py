"""Issue 26, crash safety: a kill right after any file a training writes leaves a run that the same command (with
``--resume`` once a ``last.pth`` exists) finishes into exactly the files of an uninterrupted run; nothing is lost.
The kill is simulated by an exception raised right after the k-th atomic write (``os.replace``) of a tiny run.
A study call's row of calls.csv is also rewritten by a heartbeat while it trains: a real ``kill -9`` of a process
holding a `CallLog` loses at most one heartbeat of its wall time."""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
import torch

import gv3lite.utils as utils
from gv3lite.cli import main

TINY = ["--set", "img_size=40", "--set", "batch_size=4", "--epochs", "2", "--set", "eval_every=1",
        "--set", "teacher=null", "--set", "sched=cosine", "--set", "warmup_epochs=0", "--quiet"]


class Killed(BaseException):
    """Stands for kill -9: a BaseException, so no ``except Exception`` on the way tidies anything up."""


def train(out, root, resume=False):
    return main(["train", "--out", str(out), "--data", str(root), *TINY, *(["--resume"] if resume else [])])


def files_of(out) -> dict:
    """What a finished run holds, without wall times: metrics, predictions, and each checkpoint's epoch/weights."""
    metrics = pd.read_csv(out / "metrics.csv").drop(columns=["seconds"])
    found = {"metrics": metrics.to_csv(index=False), "predictions": (out / "predictions.csv").read_text()}
    for name in ("last.pth", "best.pth"):
        ckpt = torch.load(out / name, weights_only=True)
        found[name] = (ckpt["epoch"], ckpt["best_top1"], ckpt["model"]["classifier.weight"].sum().item())
    found["listing"] = sorted(p.name for p in out.iterdir())
    return found


def test_a_kill_after_any_write_of_a_training_loses_nothing(tmp_path, monkeypatch, make_image_root):
    root = make_image_root(per_class=4, size=(40, 40))
    monkeypatch.setattr("gv3lite.callbacks.git_commit", lambda: "test")  # git's index refresh: seconds per run
    real_replace, writes = os.replace, []

    def counting(src, dst):
        real_replace(src, dst)
        writes.append(os.path.basename(dst))
    monkeypatch.setattr(utils.os, "replace", counting)
    assert train(tmp_path / "clean", root) == 0
    clean = files_of(tmp_path / "clean")
    epoch2 = len(writes) - writes[::-1].index("run_info.json")  # first write of epoch 1
    epoch2 += writes[epoch2:].index("last.pth") + 1            # first write of epoch 2
    assert writes[-1] == "last.pth"  # the checkpoint is the epoch's last write: what resumes is complete
    assert writes[epoch2:] in (["predictions.csv", "metrics.csv", "best.pth", "last.pth"],
                               ["predictions.csv", "metrics.csv", "last.pth"])
    # after epoch 2's last write but one (best.pth or metrics.csv: resumes from epoch 1) and after its last.pth (the
    # run is finished: a resume trains nothing and must find every file; issue 26's lost run was this case)
    for k in [len(writes) - 1, len(writes)]:
        out, done = tmp_path / f"killed_after_{k}", []

        def killed_after_k(src, dst):
            real_replace(src, dst)
            done.append(dst)
            if len(done) == k:
                raise Killed(dst)
        monkeypatch.setattr(utils.os, "replace", killed_after_k)
        with pytest.raises(Killed):
            train(out, root)
        monkeypatch.setattr(utils.os, "replace", real_replace)
        assert train(out, root, resume=(out / "last.pth").is_file()) == 0, k
        assert files_of(out) == clean, (k, writes[k - 1])


# ------------------------------------------------------------------------------------------ the study (reproduce)
@contextlib.contextmanager
def snapshot_each_write(monkeypatch, out: Path):
    """While active, every atomic write (``gv3lite.utils``' ``os.replace``) is followed by a copy of the study root
    ``out`` to a sibling ``kill_<k>`` folder: the state a ``kill -9`` right after the k-th write leaves. Yields the
    list of ``(copy, the written file's path relative to <out>/smoke)``, filled as the writes happen."""
    real_replace, snapshots = os.replace, []

    def snapshot(src, dst):
        real_replace(src, dst)
        copy = out.parent / f"kill_{len(snapshots) + 1}"
        shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.lock"))
        snapshots.append((copy, os.path.relpath(dst, out / "smoke")))
    monkeypatch.setattr(utils.os, "replace", snapshot)
    try:
        yield snapshots
    finally:
        monkeypatch.setattr(utils.os, "replace", real_replace)


@pytest.fixture
def atomic_training(fake_training, monkeypatch):
    """`fake_training` writing a run's files as a real training does: each through ``write_atomic`` (one
    ``os.replace``) in the real order (predictions.csv, metrics.csv, best.pth, last.pth, then result.json, the run's
    commit point), the same files each time a run is trained (a resumed training ends where an uninterrupted one
    does). Used by both study runners' kill tests, which list every write: calls.csv's heartbeat is set to an hour,
    so none of its writes (timed, not tied to a training's) falls into a list."""
    import gv3lite.study.records as records
    import gv3lite.study.workers as workers

    monkeypatch.setattr(records, "HEARTBEAT_SECONDS", 3600.0)

    fake, trained = workers._train_run, {}

    def train(recipe, run_dir, *args):
        if run_dir.name not in trained:
            scratch = run_dir.with_name(run_dir.name + ".scratch")
            fake(recipe, scratch, *args)
            trained[run_dir.name] = {p.name: p.read_bytes() for p in scratch.iterdir()}
            shutil.rmtree(scratch)
        for name in RUN_ORDER:
            utils.write_atomic(run_dir / name, trained[run_dir.name][name])
        return json.loads(trained[run_dir.name]["result.json"])
    monkeypatch.setattr(workers, "_train_run", train)


RUN_ORDER = ["predictions.csv", "metrics.csv", "best.pth", "last.pth", "result.json"]  # a training's writes, in order


@pytest.fixture
def stand_in_study(atomic_training, monkeypatch):
    """`atomic_training`, with the analysis, figures and report.md replaced by stand-ins that write their files the
    same way (summary.csv and .md, verdicts.csv: per-cell means of runs.csv; one figure per grid; report.md: the rows
    and calls). What is left is the study's bookkeeping: which runs are finished, what is trained, the results files
    and calls.csv."""
    import gv3lite.study.runner as runner

    def analysis(runs, budget, out_dir, predictions=None):
        summary = runs.groupby(["grid", "cell"], sort=False)["top1"].agg(["mean", "count"]).reset_index()
        utils.write_csv(summary, out_dir / "summary.csv")
        utils.write_atomic(out_dir / "summary.md", summary.to_string())
        table = summary.assign(n_predictions=len(predictions), same_as="")
        utils.write_csv(table, out_dir / "verdicts.csv")
        return summary, table

    monkeypatch.setattr(runner, "git_commit", lambda: "test")  # git's index refresh: the slowest part of a call
    monkeypatch.setattr(runner, "write_analysis", analysis)
    monkeypatch.setattr(runner, "plot_grids", lambda runs, summary, budget, folder, **k: [
        utils.write_atomic(folder / f"ablation_{grid}.png", grid) for grid in sorted(set(runs["grid"]))])
    monkeypatch.setattr(runner, "write_report", lambda runs, table, path, budget, calls=None, **k: utils.write_atomic(
        path, f"{len(runs)} rows, {0 if calls is None else len(calls)} calls\n"))


def test_a_kill_after_any_write_of_reproduce_loses_nothing(tmp_path, monkeypatch, make_image_root, stand_in_study):
    """Every state a ``kill -9`` of ``gv3lite reproduce --budget smoke --grids reparam`` can leave (a snapshot of the
    folder after each of its writes; two runs keep it fast) is finished by running the same command again: every run
    complete, every results file equal to an uninterrupted call's, and no row of calls.csv lost (the killed call's
    row keeps the time up to its last finished run)."""
    from gv3lite.study.plan import plan
    from gv3lite.study.records import finished_run, read_calls
    from gv3lite.study.runner import reproduce

    root = make_image_root(classes=("n01440764", "n02102040", "n02979186"), per_class=2, size=(24, 24))
    call = dict(budget="smoke", grids=["reparam"], data=root, log=lambda *a: None,
                command="gv3lite reproduce --budget smoke --grids reparam")
    with snapshot_each_write(monkeypatch, tmp_path / "clean") as snapshots:
        reproduce(out=tmp_path / "clean", **call)
    clean, runs = tmp_path / "clean" / "smoke", list(dict.fromkeys(it["run_id"] for it in plan("smoke", ["reparam"])))
    run_files = ["predictions.csv", "metrics.csv", "best.pth", "last.pth", "result.json"]
    assert [name for _, name in snapshots] == [  # the call's row first, kept up to date after every run and at the
        "calls.csv", *[name for rid in runs for name in [f"runs/{rid}/{f}" for f in run_files] + ["calls.csv"]],
        "calls.csv", "runs.csv", "history.csv", "predictions.csv.gz", "summary.csv", "summary.md",  # end, before the
        "verdicts.csv", "figures/ablation_reparam.png", "report.md"]  # results files
    files = ("runs.csv", "history.csv", "predictions.csv.gz", "summary.csv", "verdicts.csv")
    expected = {name: pd.read_csv(clean / name).drop(columns=["train_seconds", "seconds"], errors="ignore")
                for name in files}
    for copy, name in snapshots:
        calls_before = read_calls(copy / "smoke")
        reproduce(out=copy, **call)
        folder = copy / "smoke"
        assert all(finished_run(folder / "runs" / rid) for rid in runs), name
        for file in files:  # every row of every results file, as the uninterrupted call wrote them (wall times aside)
            found = pd.read_csv(folder / file).drop(columns=["train_seconds", "seconds"], errors="ignore")
            assert found.equals(expected[file]), (name, file)
        calls = read_calls(folder)  # the rows written before the kill are kept, the killed call's marked interrupted
        assert calls_before is None or calls.iloc[:len(calls_before)].equals(calls_before), name
        assert calls["interrupted"].astype(str).tolist()[:-1] == ["True"] * (len(calls) - 1), name
        listing = [sorted(p.name for p in f.iterdir() if p.suffix != ".lock") for f in (folder, clean)]
        assert listing[0] == listing[1], name


def test_a_kill_after_any_write_of_the_factorial_loses_nothing(tmp_path, monkeypatch, make_image_root,
                                                               atomic_training):
    """The factorial runner (``gv3lite reproduce --design factorial --budget smoke``: one block of 16 runs, its look,
    the report) killed right after one of its writes -- the design, the first row, the first run's result.json and row,
    the last run's result.json and row, and every write after it (the results files, the call's last row, the report,
    the figure) -- is finished by the same command: every run complete, runs/history/predictions/verdicts/looks/effects
    equal to an uninterrupted call's, and the call's calls.csv row kept from its first training on (it used to be
    appended only at the end, so a kill lost it)."""
    from gv3lite import budgets
    from gv3lite.study import blocks
    from gv3lite.study.records import finished_run, read_calls

    monkeypatch.setitem(budgets.FACTORIAL_BLOCKS, "smoke", dict(first_look=1, max_blocks=1, wall_minutes=None))
    monkeypatch.setattr(blocks, "git_commit", lambda: "test")  # git's index refresh: the slowest part of a call
    monkeypatch.setattr(blocks, "plot_factorial", lambda claims, runs, budget, history=None, folder=None, **k: [
        utils.write_atomic(folder / "ablation_forest.png", "forest")])  # matplotlib: seconds per call
    root = make_image_root(classes=("n01440764", "n02102040", "n02979186"), per_class=2, size=(24, 24))
    call = dict(data=root, log=lambda *a: None, command="gv3lite reproduce --design factorial --budget smoke")
    with snapshot_each_write(monkeypatch, tmp_path / "clean") as snapshots:
        blocks.reproduce_factorial("smoke", out=tmp_path / "clean", **call)
    clean, names = tmp_path / "clean" / "smoke", [name for _, name in snapshots]
    runs = [name.split("/")[1] for name in names if name.endswith("/result.json")]
    assert len(set(runs)) == 16
    assert names[:2] == ["design.json", "calls.csv"]  # the call's row before its first training, then after each run
    assert names[2:98] == [name for rid in runs for name in [*(f"runs/{rid}/{f}" for f in RUN_ORDER), "calls.csv"]]
    assert names[98:] == ["runs.csv", "history.csv", "predictions.csv.gz", "calls.csv", "verdicts.csv", "looks.csv",
                          "effects.csv", "report.md", "figures/ablation_forest.png"]
    files = ("runs.csv", "history.csv", "predictions.csv.gz", "verdicts.csv", "looks.csv", "effects.csv")
    expected = {name: pd.read_csv(clean / name) for name in files}
    for k in [1, 2, 7, 8, 97, 98, *range(99, len(snapshots) + 1)]:
        copy, name = snapshots[k - 1]
        folder = copy / "smoke"
        calls_before = read_calls(folder)
        assert calls_before is not None or k == 1, name  # a kill after the first write keeps the call's row
        if calls_before is not None:
            assert calls_before["trained"].iloc[-1] >= sum(finished_run(p) for p in (folder / "runs").glob("*")) - 1
        blocks.reproduce_factorial("smoke", out=copy, **call)
        assert all(finished_run(folder / "runs" / rid) for rid in runs), name
        for file in files:  # every row of every results file, as the uninterrupted call wrote them
            assert pd.read_csv(folder / file).equals(expected[file]), (name, file)
        calls = read_calls(folder)  # the rows written before the kill are kept, the killed call's marked interrupted
        assert calls_before is None or calls.iloc[:len(calls_before)].equals(calls_before), name
        assert calls["interrupted"].astype(str).tolist()[:-1] == ["True"] * (len(calls) - 1), name
        assert calls["trained"].sum() in (15, 16), name  # every run counted once (a kill may lose the last one)


# ------------------------------------------------------------------------------- calls.csv's heartbeat (CallLog)
def _row(folder, command):
    from gv3lite.study.records import read_calls

    calls = read_calls(folder)
    return calls[calls["command"] == command].iloc[0].to_dict()


def test_a_training_call_s_row_grows_on_disk_between_its_writes_until_its_last(tmp_path):
    """With a 0.2 s heartbeat, the row of calls.csv read back from disk grows while the call runs and nothing else
    writes it (``interrupted`` True); two calls of one folder keep their own rows; the last write sets the true
    values and nothing rewrites the row after it. A call that trains nothing writes no row and starts no thread."""
    from gv3lite.study.records import CallLog, read_calls

    def log(command, trains=True):
        return CallLog(tmp_path, datetime.now(timezone.utc), command, "abc1234", 1, time.perf_counter(),
                       {"trained": 0, "skipped": 2}, trains=trains, heartbeat=0.2)

    idle = log("gv3lite reproduce --budget smoke", trains=False)
    assert idle.write(interrupted=True) is None and idle._beat is None and read_calls(tmp_path) is None
    first, second = log("gv3lite reproduce --grids reparam"), log("gv3lite reproduce --grids kd")
    first.write(interrupted=True)
    second.write(interrupted=True)
    seen = []
    for _ in range(4):
        time.sleep(0.5)
        seen.append([_row(tmp_path, c.fields["command"]) for c in (first, second)])
    for rows in zip(*seen):  # each call's own row, read from disk: growing, interrupted, its own started/command
        walls = [r["wall_seconds"] for r in rows]
        assert walls == sorted(walls) and walls[-1] - walls[0] >= 1.0, walls
        assert all(str(r["interrupted"]) == "True" for r in rows)
    assert len(read_calls(tmp_path)) == 2
    first.counts["trained"] = 2
    final = first.write(interrupted=False)  # the last write: the true values, the heartbeat stopped first
    assert not first._beat.is_alive() and str(final["interrupted"]) == "False"
    time.sleep(0.6)  # three heartbeats: the second call's row still grows, the first's is as its last write left it
    row = _row(tmp_path, first.fields["command"])
    assert (row["wall_seconds"], row["trained"], str(row["interrupted"])) == (final["wall_seconds"], 2, "False")
    assert _row(tmp_path, second.fields["command"])["wall_seconds"] > seen[-1][1]["wall_seconds"]
    second.write(interrupted=True, final=True)  # a KeyboardInterrupt's last write: interrupted, nothing after it
    assert not second._beat.is_alive() and len(read_calls(tmp_path)) == 2
    with pytest.raises(ValueError, match="heartbeat=0: must be a positive number of seconds"):
        CallLog(tmp_path, datetime.now(timezone.utc), "c", "abc1234", 1, 0.0, {}, heartbeat=0)


def test_a_heartbeat_that_cannot_write_warns_once_naming_the_file_and_the_call_goes_on(tmp_path, monkeypatch):
    """A full disk while the heartbeat rewrites the row: one warning naming calls.csv and the error, the thread ends
    (no retry loop, nothing raised into the training), and the call's own next write still reaches the disk."""
    import errno
    import warnings

    from gv3lite.study import records
    from gv3lite.study.records import CallLog, read_calls

    call = CallLog(tmp_path, datetime.now(timezone.utc), "gv3lite reproduce", "abc1234", 1, time.perf_counter(),
                   {"trained": 0, "skipped": 0}, trains=True, heartbeat=0.1)
    call.write(interrupted=True)  # the first row, then the heartbeat starts
    real = records.append_call

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, f"No space left on device: {tmp_path / 'calls.csv'}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monkeypatch.setattr(records, "append_call", full_disk)
        call._beat.join(timeout=5)  # the heartbeat's first failed write ends its thread
        monkeypatch.setattr(records, "append_call", real)
    assert not call._beat.is_alive()
    messages = [str(w.message) for w in caught]
    assert messages == [f"{tmp_path / 'calls.csv'}: the heartbeat of the call's row stopped: [Errno 28] No space left on device: "
                        f"{tmp_path / 'calls.csv'}"], messages
    call.counts["trained"] = 1
    call.write(interrupted=False)  # the call's last write is not lost with the heartbeat
    assert read_calls(tmp_path)[["trained", "interrupted"]].values.tolist() == [[1, False]]


HOLDER = """
import sys, time
from datetime import datetime, timezone
from pathlib import Path
from gv3lite.study.records import CallLog
call = CallLog(sys.argv[1], datetime.now(timezone.utc), sys.argv[2], "abc1234", 1, time.perf_counter(),
               {"trained": 0, "skipped": 0}, trains=True, heartbeat=float(sys.argv[3]))
call.write(interrupted=True)
print("written", flush=True)
time.sleep(600)
"""


def test_a_kill_9_of_a_call_loses_at_most_one_heartbeat_of_its_wall_time(tmp_path):
    """Two processes hold a `CallLog` of one folder (a 0.5 s heartbeat), each killed with SIGKILL after ~3 s: both
    rows are on disk, interrupted, each with the wall time its process ran, less at most one heartbeat (and one
    write: the machine's cores may be busy)."""
    heartbeat, env = 0.5, {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holders = {}
    for command in ("gv3lite reproduce --grids reparam", "gv3lite reproduce --grids kd"):
        spawned = time.monotonic()  # CLOCK_MONOTONIC: the children's perf_counter clock on Linux
        child = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), command, str(heartbeat)],
                                 stdout=subprocess.PIPE, text=True, env=env)
        assert child.stdout.readline().strip() == "written"  # its first row is on disk, its heartbeat started
        holders[command] = (child, spawned, time.monotonic())
    time.sleep(3.0)
    for command, (child, spawned, written) in holders.items():
        child.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        assert child.wait(timeout=30) == -signal.SIGKILL
        row = _row(tmp_path, command)
        assert str(row["interrupted"]) == "True"
        ran_at_least, ran_at_most = killed - written, killed - spawned  # its t0 lies between spawn and first write
        assert ran_at_least - heartbeat - 0.5 <= row["wall_seconds"] <= ran_at_most, (row, ran_at_least, ran_at_most)
        child.stdout.close()
