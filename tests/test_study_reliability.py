"""Issue 26, the study's results on read and on disk: damaged results files stop `readme` / `report` / `reproduce`
with one line naming the file (exit 2); `readme --check` recomputes the verdicts from runs.csv; a run with result.json
but not its other files is not finished (trained again, the old directory kept); calls.csv keeps each call's own
wall time and overlapping calls count once; ``--jobs`` is capped. Fixtures: copies of the committed results, edited."""
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

import gv3lite.study.workers as workers
from gv3lite.cli import main
from gv3lite.study.records import RUN_FILES, append_call, finished_run, folder_design, read_calls, wall_time
from gv3lite.study.report import calls_note
from gv3lite.utils import repo_root, write_csv

COMMITTED = repo_root() / "results"
OFAT_QUICK = Path(__file__).parent / "fixtures" / "ofat_quick_542d4c2"  # a recorded one-factor quick study


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("GV3LITE_DEBUG", raising=False)


def _call(started, wall_seconds):
    return {"started": started, "command": "gv3lite reproduce --budget smoke", "git_commit": "abc1234",
            "wall_seconds": wall_seconds, "trained": 1, "skipped": 0, "jobs": 1, "cpu_count": 2, "interrupted": False}


def test_overlapping_calls_count_once_and_each_keeps_its_own_wall_time(tmp_path):
    append_call(tmp_path, _call("2026-12-02T10:00:00+00:00", 37.0))
    calls = append_call(tmp_path, _call("2026-12-02T10:00:05+00:00", 31.0))  # ran alongside the first
    assert calls["wall_seconds"].tolist() == [37.0, 31.0] and wall_time(calls) == 37.0
    assert calls_note(calls) == ("total wall time 37 s over 2 calls of `gv3lite reproduce`; calls overlapped: 1 min "
                                 "08 s summed (calls.csv)")
    later = append_call(tmp_path, _call("2026-12-02T10:00:36+00:00", 10.5))  # after the first (1 s clock resolution)
    assert wall_time(later) == 47.5 and later["wall_seconds"].tolist() == [37.0, 31.0, 10.5]  # appended in order
    assert read_calls(tmp_path)["wall_seconds"].tolist() == [37.0, 31.0, 10.5]
    running = append_call(tmp_path, {**_call("2026-12-02T10:00:05+00:00", 40.0), "interrupted": True}, index=1)
    assert running["wall_seconds"].tolist() == [37.0, 40.0, 10.5]  # a call's own row brought up to date in place
    other = append_call(tmp_path, _call("2026-12-02T11:00:00+00:00", 1.0), index=0)  # not its row: appended
    assert other["wall_seconds"].tolist() == [37.0, 40.0, 10.5, 1.0] and read_calls(tmp_path).equals(other)
    one = pd.DataFrame([_call("2026-12-02T10:00:00+00:00", 12.0), _call("2026-12-02T10:00:12+00:00", 3.0)])
    assert wall_time(one) == 15.0 and "overlapped" not in calls_note(one)  # back to back: summed


def test_a_damaged_calls_csv_is_named_not_a_type_error(tmp_path):
    append_call(tmp_path, _call("2026-12-02T10:00:00+00:00", 37.0))
    text = (tmp_path / "calls.csv").read_text()
    (tmp_path / "calls.csv").write_text(text + text)  # a second log appended with its header
    with pytest.raises(ValueError, match=f"results file {tmp_path / 'calls.csv'}: line 3 repeats the header line"):
        read_calls(tmp_path)


def _results(tmp_path, study=COMMITTED / "quick"):
    root = tmp_path / "results"
    shutil.copytree(study, root / "quick")
    shutil.copy(repo_root() / "README.md", tmp_path / "README.md")
    assert main(["readme", "--results", str(root), "--readme", str(tmp_path / "README.md")]) == 0  # this root's block
    return root


def readme_check(tmp_path, root, capsys) -> tuple[int, str]:
    status = main(["readme", "--check", "--results", str(root), "--readme", str(tmp_path / "README.md")])
    return status, capsys.readouterr().err


@pytest.mark.parametrize("damage, problem", [
    (lambda t: t.assign(top1=[float("nan")] + list(t["top1"][1:])), "column 'top1' is empty (NaN) in line 2"),
    (lambda t: t.drop(columns="grid"), "lacks column 'grid'"),
    (lambda t: t.assign(top1=[500.0] + list(t["top1"][1:])), "column 'top1' holds 500 in line 2, which fails "
                                                              "in_range(0, 100)"),
])
def test_readme_check_fails_on_a_damaged_runs_csv(tmp_path, capsys, damage, problem):
    root = _results(tmp_path)
    write_csv(damage(pd.read_csv(root / "quick" / "runs.csv")), root / "quick" / "runs.csv")
    status, err = readme_check(tmp_path, root, capsys)
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"gv3lite readme: error: results file {root / 'quick' / 'runs.csv'}: {problem}"), err


def test_readme_check_recomputes_the_verdicts_from_runs_csv(tmp_path, capsys):
    root = _results(tmp_path, OFAT_QUICK)  # a one-factor study: its contrasts are recomputed
    assert readme_check(tmp_path, root, capsys)[0] == 0
    runs = pd.read_csv(root / "quick" / "runs.csv")
    write_csv(runs.iloc[:-18], root / "quick" / "runs.csv")  # truncated at a line end: 27 of 45 rows
    status, err = readme_check(tmp_path, root, capsys)  # caught by the row counts (gv3lite.study.completeness)
    assert status == 2 and err.startswith(f"gv3lite readme: error: results file {root / 'quick' / 'runs.csv'}: "
                                          "lacks the rows of "), err
    runs.loc[runs["grid"].eq("augment") & runs["cell"].eq("mixup"), "top1"] += 5.0  # edited, still in range
    write_csv(runs, root / "quick" / "runs.csv")
    status, err = readme_check(tmp_path, root, capsys)
    assert status == 2 and err.startswith(f"gv3lite readme: error: results file {root / 'quick' / 'verdicts.csv'}: "
                                          "contrast "), err
    assert "recomputed from runs.csv" in err and err.count("\n") == 1


def test_readme_check_recomputes_a_factorial_studys_claims_from_runs_csv(tmp_path, capsys):
    root = _results(tmp_path)
    assert folder_design(root / "quick") == "factorial"  # the committed quick study
    assert readme_check(tmp_path, root, capsys)[0] == 0
    runs = pd.read_csv(root / "quick" / "runs.csv")
    write_csv(runs.iloc[:-18], root / "quick" / "runs.csv")  # truncated at a line end
    status, err = readme_check(tmp_path, root, capsys)
    assert status == 2 and "runs.csv: lacks the rows of 18 training(s)" in err, err
    runs.loc[0, "top1"] += 5.0  # one training's top-1 edited, still in range
    write_csv(runs, root / "quick" / "runs.csv")
    status, err = readme_check(tmp_path, root, capsys)
    assert status == 2 and err.startswith(f"gv3lite readme: error: results file {root / 'quick' / 'verdicts.csv'}: "
                                          "claim "), err
    assert "recomputed from runs.csv" in err and err.count("\n") == 1


def test_a_run_with_result_json_but_not_its_other_files_is_trained_again(tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "0123456789ab"
    run_dir.mkdir(parents=True)
    for name in RUN_FILES:
        (run_dir / name).write_text("{}")
    assert finished_run(run_dir)
    (run_dir / "metrics.csv").unlink()  # killed by an older gv3lite between last.pth and metrics.csv
    assert not finished_run(run_dir)
    trained = []
    monkeypatch.setattr(workers, "_train_run", lambda recipe, d, *a: trained.append(d) or {"top1": 1.0})
    assert workers.run_one(None, run_dir, tmp_path) == {"top1": 1.0} and trained == [run_dir]
    kept = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("0123456789ab.incomplete-")]
    assert len(kept) == 1 and sorted(p.name for p in kept[0].iterdir()) == sorted(set(RUN_FILES) - {"metrics.csv"})


def test_report_names_a_truncated_predictions_file(tmp_path, capsys):
    root = _results(tmp_path)
    gz = root / "quick" / "predictions.csv.gz"
    gz.write_bytes(gz.read_bytes()[:5000])
    assert main(["report", str(root / "quick"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == (f"gv3lite report: error: results file {gz}: is truncated (its compressed data ends early); restore "
                   f"it (git checkout -- {gz} if it is committed, or a backup) or, in a study whose run folders "
                   "runs/<id>/ remain, move it away: `gv3lite reproduce` with the same --out rebuilds it and re-trains "
                   "what is missing\n")


def test_a_damaged_combined_copy_that_a_run_needs_names_those_runs_and_restoring_as_the_fix(tmp_path):
    """A run whose folder is gone (committed results) has its rows only in the combined copy: when that copy is
    damaged, running reproduce again cannot rebuild it, so the fix is to restore the file; a damaged copy that no run
    needs is rewritten from the run folders."""
    from gv3lite.study.records import gather_run_files
    (tmp_path / "runs" / "aaaaaaaaaaaa").mkdir(parents=True)
    (tmp_path / "runs" / "aaaaaaaaaaaa" / "metrics.csv").write_text("epoch,train_loss\n1,2.0\n")
    (tmp_path / "history.csv").write_text("run_id,epoch,train_loss,val_top1,ema_top1,lr,seconds\nbbbbbbbbbbbb,1,2.0,5")
    table = gather_run_files(tmp_path, ["aaaaaaaaaaaa"], "metrics.csv", "history.csv")
    assert table["run_id"].tolist() == ["aaaaaaaaaaaa"]
    with pytest.raises(ValueError, match=re.escape(
            f"results file {tmp_path / 'history.csv'}: is truncated (its last line, line 2, is incomplete); restore "
            f"it (git checkout -- {tmp_path / 'history.csv'} if it is committed, or a backup): the rows of 1 run(s) "
            "whose folder runs/<id> is gone (bbbbbbbbbbbb) are only there")):
        gather_run_files(tmp_path, ["aaaaaaaaaaaa", "bbbbbbbbbbbb"], "metrics.csv", "history.csv")


class _Deadline(Exception):
    """A test ran past its deadline: raised by SIGALRM in the main thread, where the call under test waits."""


@pytest.mark.parametrize("how, message", [
    ("raises", "cannot decode image /data/train/a/"),  # the training's own one-line error
    ("dies", "a worker process of --jobs ended without a result while training run "),
])
def test_a_failing_worker_of_jobs_2_ends_the_call_with_one_line_not_a_hang(tmp_path, make_image_root, fake_training,
                                                                          monkeypatch, capsys, how, message):
    """``reproduce --jobs 2`` whose spawned workers fail (a training error, or a worker process that dies) ends with one
    line and exit 2, the call's row kept (interrupted); with ``multiprocessing.Pool`` the call hung (in
    ``Pool.terminate`` after the training error; for ever on a dead worker's lost task). The deadline (SIGALRM, 600 s:
    spawning two workers imports torch twice, which takes minutes on a loaded 2-core machine) turns a hang into a
    failure."""
    import signal

    import worker_stand_ins

    monkeypatch.setattr(workers, "_worker_train", getattr(worker_stand_ins, how))  # reaches the spawned workers
    root = make_image_root(classes=("n01440764", "n02102040", "n02979186"), per_class=2, size=(24, 24))

    def deadline(signum, frame):
        raise _Deadline("reproduce --jobs 2 still running after 600 s: a hang")
    previous = signal.signal(signal.SIGALRM, deadline)
    signal.alarm(600)
    try:
        rc = main(["reproduce", "--budget", "smoke", "--grids", "reparam", "--jobs", "2", "--out", str(tmp_path),
                   "--data", str(root)])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err  # the live display's bar (carriage returns), then the error's one line
    line = err.rstrip("\n").split("\n")[-1]
    assert rc == 2 and "Traceback" not in err and err.count("gv3lite reproduce: error: ") == 1, err
    assert line.startswith("gv3lite reproduce: error: ") and message in line, err
    calls = read_calls(tmp_path / "smoke")
    assert calls["interrupted"].tolist() == [True] and calls["trained"].tolist() == [0]


def test_a_damaged_design_json_is_named_with_its_fix(tmp_path, make_image_root, capsys):
    """A factorial folder's design.json cut short: one line naming the file and the fix (it was json's own
    'Expecting property name enclosed in double quotes: line 56 column 5', naming no file); nothing is written."""
    from gv3lite.study.factorial_report import design_record

    root = make_image_root(classes=("n01440764", "n02102040", "n02979186"), per_class=2, size=(24, 24))
    folder = tmp_path / "smoke"
    folder.mkdir()
    text = json.dumps(design_record("smoke"), indent=2)
    (folder / "design.json").write_text(text[: len(text) // 2])
    assert main(["reproduce", "--design", "factorial", "--budget", "smoke", "--out", str(tmp_path), "--data",
                 str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"gv3lite reproduce: error: {folder / 'design.json'} is damaged "
                                                    "(JSONDecodeError: "), err
    assert "delete it (the next `gv3lite reproduce --design factorial` on this folder writes it again" in err
    assert sorted(p.name for p in folder.iterdir()) == ["design.json"]


_CTRL_C_DRIVER = """
import sys

import worker_stand_ins
from gv3lite.cli import main
from gv3lite.study import blocks, workers

if __name__ == "__main__":  # spawned workers import this file again: only the parent runs the command
    blocks.prepare_teachers = lambda *args, **kwargs: None  # no teacher pass: the trainings are stand-ins
    workers._worker_train = worker_stand_ins.sleeps         # each spawned worker 'trains' for 10 minutes
    sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_in_a_terminal_stops_reproduce_jobs_2_and_its_workers_at_once(tmp_path, make_image_root):
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group: the parent and its spawned workers.
    The workers ignore it (`workers._worker_init`), the parent kills them and ends with its resume line, exit 130,
    the call's row kept (interrupted); no worker is left training. Here the group is a new session of its own (so the
    signal reaches no test process) with SIGINT's default action, as in a terminal: a command started with ``&`` by a
    non-interactive shell ignores SIGINT, which is why ``kill -INT`` of such a call seemed to do nothing."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = make_image_root(classes=("n01440764", "n02102040", "n02979186"), per_class=2, size=(24, 24))
    markers, out = tmp_path / "markers", tmp_path / "out"
    markers.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(_CTRL_C_DRIVER)
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "GV3LITE_TEST_MARKERS": str(markers), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(tests), str(repo_root()), os.environ.get("PYTHONPATH", "")])}
    env.pop("GV3LITE_DEBUG", None)
    call = subprocess.Popen([sys.executable, str(driver), "reproduce", "--design", "factorial", "--budget", "smoke",
                             "--jobs", "2", "--out", str(out), "--data", str(root)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 600  # two spawned workers import torch: minutes on a loaded 2-core machine
        while len(list(markers.iterdir())) < 2 and call.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(list(markers.iterdir())) == 2, f"the workers did not start (exit {call.poll()}): {call.stderr.read() if call.poll() is not None else ''}"
        os.killpg(call.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        stopped = time.monotonic()
        _, err = call.communicate(timeout=120)
        seconds = time.monotonic() - stopped
    finally:
        if call.poll() is None:
            os.killpg(call.pid, signal.SIGKILL)
            call.wait()
    assert call.returncode == 130 and "Traceback" not in err, err
    assert "gv3lite reproduce: interrupted; finished epochs and runs are kept" in err, err
    assert "gv3lite reproduce --design factorial --budget smoke --jobs 2" in err.rstrip().splitlines()[-1], err
    assert seconds < 60, f"{seconds:.0f} s from Ctrl-C to the end of the call"
    for marker in markers.iterdir():  # each worker was killed, not left to finish its 10-minute training
        for _ in range(40):
            if not Path("/proc", marker.name).exists() or "Z" in _proc_state(marker.name):
                break
            time.sleep(0.25)
        else:
            pytest.fail(f"worker process {marker.name} still runs after Ctrl-C")
    calls = read_calls(out / "smoke")
    assert calls["interrupted"].tolist() == [True] and calls["trained"].tolist() == [0]


def _proc_state(pid: str) -> str:
    """The state letter of ``/proc/<pid>/stat`` (``Z``: a zombie, ended), or ``""`` when the process is gone."""
    try:
        return Path("/proc", pid, "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return ""
