"""benchmarks/scope_questions.py without training: a re-run resumes (recorded rows kept, their cells not trained
again), rows of other training code or of a changed recipe are refused in one line (exit 2), and the analysis pools
several runs.csv and finds a known interaction. The trainings are replaced by a stand-in with known effects."""
from __future__ import annotations

import pandas as pd
import pytest

from gv3lite.utils import repo_root

from cli_helpers import load_benchmark


@pytest.fixture(scope="module")
def scope():
    return load_benchmark("scope_questions")


def _stand_in(trained):
    """A train_cell with known effects: branches -2 pp at 10 epochs, +1 pp at 40 (interaction +3), a seed effect and
    a small fixed wobble per (cell, seed) so that the residual SD is not zero."""
    def train_cell(recipe, data, datasets, device="cpu"):
        trained.append((recipe.num_conv_branches, recipe.epochs, recipe.seed))
        branches, long = recipe.num_conv_branches > 1, recipe.epochs > 10
        top1 = 40 + recipe.seed + 5 * long + (branches * (1 if long else -2)) + 0.1 * ((len(trained) * 7) % 5 - 2)
        return {"top1_raw": top1, "top1_ema": top1, "train_seconds": 1.0, "train_images": 3000,
                "epochs": recipe.epochs, "model": recipe.model}
    return train_cell


def test_a_rerun_resumes_and_other_code_is_refused(scope, tmp_path, monkeypatch, capsys):
    trained = []
    monkeypatch.setattr(scope, "train_cell", _stand_in(trained))
    monkeypatch.setattr(scope, "datasets_for", lambda recipe, data: None)
    monkeypatch.setattr(scope, "resolve_data_root", lambda data: tmp_path)
    out = tmp_path / "a"
    four = ["branches/short", "plain/short", "branches/long", "plain/long"]
    assert scope.main(["--seeds", "0", "1", "--cells", *four[:2], "--out", str(out)]) == 0
    assert len(trained) == 4
    assert scope.main(["--seeds", "0", "1", "2", "--cells", *four, "--out", str(out)]) == 0
    assert len(trained) == 4 + 8  # the 4 recorded (cell, seed) pairs were not trained again
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 12 and not runs.duplicated(["cell", "seed"]).any()
    runs.assign(code_fingerprint="0123456789ab").to_csv(tmp_path / "other.csv", index=False)
    (tmp_path / "b").mkdir()
    (tmp_path / "other.csv").rename(tmp_path / "b" / "runs.csv")
    capsys.readouterr()
    assert scope.main(["--seeds", "0", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other training code (fingerprint 0123456789ab" in err and "move " in err
    assert len(trained) == 12  # nothing trained, and the recorded rows are as they were
    assert pd.read_csv(tmp_path / "b" / "runs.csv")["code_fingerprint"].eq("0123456789ab").all()
    runs.assign(run_id=["ffffffffffff"] + list(runs["run_id"][1:])).to_csv(out / "runs.csv", index=False)
    assert scope.main(["--seeds", "0", "--out", str(out)]) == 2  # a recipe changed since: refused, nothing trained
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"recipe is no longer this script's ({runs['cell'][0]} seed" in err
    assert len(trained) == 12


def test_the_analysis_pools_runs_and_finds_the_interaction(scope, tmp_path, monkeypatch, capsys):
    trained = []
    monkeypatch.setattr(scope, "train_cell", _stand_in(trained))
    monkeypatch.setattr(scope, "datasets_for", lambda recipe, data: None)
    monkeypatch.setattr(scope, "resolve_data_root", lambda data: tmp_path)
    four = ["branches/short", "plain/short", "branches/long", "plain/long"]
    assert scope.main(["--seeds", "0", "1", "2", "--cells", *four[:2], "--out", str(tmp_path / "x")]) == 0
    assert scope.main(["--seeds", "0", "1", "2", "--cells", *four[2:], "--out", str(tmp_path / "y")]) == 0
    pooled = pd.concat([pd.read_csv(tmp_path / d / "runs.csv") for d in "xy"], ignore_index=True)
    table = scope.analyse(pooled).set_index("contrast")
    assert table.loc["branches at long=0", "estimate"] == pytest.approx(-2, abs=0.3)
    assert table.loc["interaction branches x long", "estimate"] == pytest.approx(3, abs=0.5)
    assert table.loc["interaction branches x long", "seeds"] == 3
    capsys.readouterr()
    assert scope.main(["--analyse", str(tmp_path / "x" / "runs.csv"), str(tmp_path / "y" / "runs.csv")]) == 0
    assert "| 4a reparam x length | interaction branches x long | 3 |" in capsys.readouterr().out
    files = [str(tmp_path / d / "runs.csv") for d in "xy"]
    assert scope.main(["--analyse", *files, "--report", str(tmp_path / "report.md")]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "Trainings recorded: 12 of the declared 32" in text and "4a reparam x length 3" in text
    assert "| branches/short | 3 |" in text and "| mix/short | 0 | nan |" in text  # untrained cells stay visible
    assert scope.main(["--analyse", files[0], files[0]]) == 2  # a file given twice would count its runs twice
    assert "branches/short seed 0, " in capsys.readouterr().err


def test_the_committed_report_is_what_the_committed_runs_give(scope):
    folder = repo_root() / "results" / "scope_questions"
    runs = pd.read_csv(folder / "runs.csv")
    assert scope.report(runs, ["results/scope_questions/runs.csv"]) == (folder / "report.md").read_text()
