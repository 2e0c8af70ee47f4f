"""benchmarks/rerun_committed.py without training: a committed training is found in today's plan and compared to the
last digit (a stand-in worker returns the committed or a shifted top-1), and bad input is refused in one line."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from gv3lite.study import records
from gv3lite.utils import repo_root

from cli_helpers import load_benchmark


@pytest.fixture(scope="module")
def rerun():
    return load_benchmark("rerun_committed")


@pytest.fixture(autouse=True)
def _threads_untouched(rerun, monkeypatch):  # the suite's torch thread count stays as conftest set it
    monkeypatch.setattr(rerun, "set_torch_threads", lambda threads: threads)


def test_a_committed_training_is_retrained_from_its_plan_and_compared(rerun, tmp_path, monkeypatch, capsys):
    committed = pd.read_csv(repo_root() / "results" / "quick" / "runs.csv").set_index("run_id")
    trained = []

    def run_one(recipe, run_dir, root):  # the committed top-1, or 0.25 pp more for the third training
        rid = run_dir.name
        trained.append((rid, recipe.seed))
        shift = 0.25 * (len(trained) == 3)
        return {"top1_raw": float(committed.loc[rid, "top1_raw"]) + shift,
                "top1_ema": float(committed.loc[rid, "top1_ema"]), "train_seconds": 1.0}
    monkeypatch.setattr(rerun, "run_one", run_one)
    monkeypatch.setattr(rerun, "resolve_data_root", lambda data: tmp_path)
    cheapest = committed["train_seconds"].idxmin()
    assert rerun.main(["--out", str(tmp_path)]) == 0
    assert trained == [(cheapest, int(committed.loc[cheapest, "seed"]))]  # the default: the cheapest training
    assert "1 of 1 retrained top-1 identical to the committed study" in capsys.readouterr().out
    one, two = committed.index[committed.index != cheapest][:2]
    assert rerun.main(["--run-ids", one, two, two, "--out", str(tmp_path / "b")]) == 0  # an id twice: once
    table = pd.read_csv(tmp_path / "b" / "quick" / "rerun.csv")
    assert table["run_id"].tolist() == [one, two] and table["identical"].tolist() == [True, False]
    assert table["cpu"].str.contains(",").all() and table["threads"].eq(1).all() and len(trained) == 3
    assert "1 of 2 retrained top-1 identical" in capsys.readouterr().out


def test_unknown_run_ids_and_other_training_code_are_refused(rerun, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rerun, "run_one", lambda *a: pytest.fail("nothing may train"))
    assert rerun.main(["--run-ids", "ffffffffffff", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ffffffffffff are not in results/quick/runs.csv" in err
    monkeypatch.setattr(rerun, "code_fingerprint", lambda: "0123456789ab")
    assert rerun.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained by other training code" in err and "current 0123456789ab" in err
    assert not (tmp_path / "quick").exists()


def test_a_kept_training_of_other_code_and_one_in_progress_are_refused(rerun, tmp_path, monkeypatch, capsys):
    cheapest = rerun.committed_runs("quick")["train_seconds"].idxmin()
    run_dir = tmp_path / "quick" / "runs" / cheapest
    run_dir.mkdir(parents=True)
    for name in records.RUN_FILES:
        (run_dir / name).write_text("")
    (run_dir / "result.json").write_text(json.dumps({"top1_raw": 1.0, "top1_ema": 1.0, "train_seconds": 1.0,
                                                     "code_fingerprint": "0123456789ab"}))
    monkeypatch.setattr(rerun, "run_one", lambda *a: pytest.fail("nothing may train"))
    assert rerun.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was trained by other training code (0123456789ab): delete it" in err
    monkeypatch.setattr(rerun, "run_one", lambda *a: None)  # another process holds the run's lock
    assert rerun.main(["--out", str(tmp_path / "b")]) == 2
    assert "is being trained by another process" in capsys.readouterr().err
