"""Row counts of a study's results files against the plan and each other (``gv3lite.study.completeness``): a file
cut short at a line end, or edited, passes every schema but not these checks; ``gv3lite report`` / ``readme`` /
``publish`` then stop with one line naming the file, the problem and the fix (exit 2). Fixture: a smoke study
trained by the test suite's stand-in training (`fake_training`), then damaged."""
import re

import pandas as pd
import pytest

from gv3lite.cli import main
from gv3lite.schemas import ResultsFileError
from gv3lite.study.completeness import read_study
from gv3lite.utils import write_csv

from cli_helpers import no_debug  # noqa: F401 (an autouse fixture)


@pytest.fixture
def study(tmp_path, fake_training, make_image_root, monkeypatch):
    """A finished smoke study (8 trainings, 12 rows of runs.csv) in ``tmp_path/study/smoke``, without figures."""
    import gv3lite.study.runner as runner
    from gv3lite.study.runner import reproduce
    monkeypatch.setattr(runner, "git_commit", lambda: "test")
    root = make_image_root(classes=("n01440764", "n02102040", "n02979186"), per_class=2, size=(24, 24))
    reproduce("smoke", out=tmp_path / "study", data=root, log=lambda *a: None, figures=False,
              command="gv3lite reproduce --budget smoke")
    return tmp_path / "study" / "smoke"


def edit(folder, name, change):
    write_csv(change(pd.read_csv(folder / name)), folder / name)


def test_a_whole_study_passes_and_report_names_a_runs_csv_cut_short(study, capsys):
    found = read_study(study)
    assert (len(found["runs"]), found["runs"]["run_id"].nunique(), len(found["predictions"])) == (12, 8, 800)
    edit(study, "runs.csv", lambda runs: runs.iloc[:-3])  # cut at a line end: still a valid CSV
    assert main(["report", str(study)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"gv3lite report: error: results file {study / 'runs.csv'}: lacks the rows of 3 "
                          "training(s) that history.csv holds (run "), err
    assert err.endswith(f"it was cut short or edited; restore it (git checkout -- {study / 'runs.csv'} if it is "
                        "committed, or a backup) or, in a study whose run folders runs/<id>/ remain, move it away: "
                        "`gv3lite reproduce` with the same --out rebuilds it and re-trains what is missing\n")


@pytest.mark.parametrize("name, change, problem", [
    ("history.csv", lambda t: t[t["run_id"] != t["run_id"].iloc[0]],
     "history.csv: has no rows of 1 training(s) of runs.csv (run "),
    ("history.csv", lambda t: pd.concat([t, t.iloc[[0]].assign(epoch=2)]),
     "history.csv: holds 2 epoch(s) of run "),
    ("predictions.csv.gz", lambda t: t.iloc[:-10],
     "predictions.csv.gz: holds 90 val images of run "),
    ("runs.csv", lambda t: t[~(t["grid"].eq("kd") & t["cell"].eq("teacher"))],  # one row of a shared training
     "runs.csv: lacks 1 row(s) of trainings it records, e.g. kd/teacher seed 0 (run "),
], ids=["history lacks a run", "history has an extra epoch", "predictions cut short", "runs lacks a cell"])
def test_row_counts_that_do_not_add_up_are_named(study, name, change, problem):
    edit(study, name, change)
    with pytest.raises(ResultsFileError, match=re.escape(f"results file {study}/{problem}")):
        read_study(study)


def test_runs_csv_holds_whole_grids(study):
    """Every file edited alike (one training gone from all three): the plan still says a grid is not whole."""
    rid = pd.read_csv(study / "runs.csv").query("grid == 'architectures' and cell == 'mobilenetv2/ghostnetv3'")
    rid = rid["run_id"].iloc[0]
    for name in ("runs.csv", "history.csv", "predictions.csv.gz"):
        edit(study, name, lambda t: t[t["run_id"] != rid])
    with pytest.raises(ResultsFileError, match=r"runs.csv: holds 5 of the 6 cells of grid 'architectures' for seed 0 "
                                               r"\(missing: mobilenetv2/ghostnetv3\); `gv3lite reproduce` records "
                                               r"whole grids, so it was cut short or edited; restore it .* `gv3lite "
                                               r"reproduce --budget smoke` with the same --out trains the missing"):
        read_study(study)
