"""Issue 26, results files on read: every damaged runs.csv / history.csv / predictions.csv.gz / verdicts.csv /
calls.csv is one ``ResultsFileError`` naming the file, the problem (column, value, line) and the fix; the committed
results pass. The damaged files are made by the tests from small tables."""
import gzip

import pandas as pd
import pytest

from gv3lite.schemas import FACTORIAL_VERDICTS, ResultsFileError, read_results
from gv3lite.study.records import folder_design
from gv3lite.utils import repo_root, write_csv

RUNS = pd.DataFrame({"grid": ["kd", "kd", "kd"], "cell": ["none", "kd", "none"], "seed": [0, 0, 1],
                     "run_id": ["0123456789ab", "0123456789ac", "0123456789ad"], "top1": [40.0, 42.5, 41.0],
                     "top5": [80.0, 81.0, 79.5], "top1_raw": [39.0, 42.0, 40.0], "top1_ema": [40.0, 42.5, 41.0],
                     "train_seconds": [10.0, 11.0, 12.0], "command": ["gv3lite reproduce --budget smoke"] * 3})
CALLS = pd.DataFrame({"started": ["2026-12-02T11:52:19+00:00", "2026-12-02T12:52:19+00:00"],
                      "command": ["gv3lite reproduce"] * 2, "git_commit": ["542d4c2"] * 2,
                      "wall_seconds": [37.0, 31.5], "trained": [2, 1], "skipped": [0, 2], "jobs": [1, 2],
                      "cpu_count": [2, 2], "interrupted": [False, True]})


def problem(path) -> str:
    with pytest.raises(ResultsFileError) as err:
        read_results(path)
    message = str(err.value)
    assert message.startswith(f"results file {path}: ") and "\n" not in message
    assert message.endswith(f"restore it (git checkout -- {path} if it is committed, or a backup) or, in a study "
                            "whose run folders runs/<id>/ remain, move it away: `gv3lite reproduce` with the same "
                            "--out rebuilds it and re-trains what is missing")
    return message[len(f"results file {path}: "):].split("; restore it")[0]


@pytest.mark.parametrize("budget", ["quick", "medium"])
def test_the_committed_results_pass_their_schemas(budget):
    folder = repo_root() / "results" / budget
    for name in ("runs.csv", "history.csv", "calls.csv", "predictions.csv.gz"):
        assert len(read_results(folder / name)) > 0, name
    factorial = folder_design(folder) == "factorial"  # its verdicts.csv has a row per declared claim
    assert len(read_results(folder / "verdicts.csv", kind=FACTORIAL_VERDICTS if factorial else None)) > 0


@pytest.mark.parametrize("change, expected", [
    (lambda t: t.assign(top1=[40.0, float("nan"), 41.0]), "column 'top1' is empty (NaN) in line 3, where a value is "
                                                           "required"),
    (lambda t: t.drop(columns="grid"), "lacks column 'grid'"),
    (lambda t: t.assign(top1=[40.0, 500.0, 41.0]), "column 'top1' holds 500 in line 3, which fails in_range(0, 100)"),
    (lambda t: t.assign(top5=[-1.0, 80.0, 80.0]), "column 'top5' holds -1 in line 2, which fails in_range(0, 100)"),
    (lambda t: t.assign(seed=[0, 0, 0]), "line 2 has the same grid, cell, seed as another line (each must be "
                                         "unique)"),
    (lambda t: t.assign(run_id=["x", "0123456789ac", "0123456789ad"]), "column 'run_id' holds 'x' in line 2, which "
                                                                      "fails str_matches"),
])
def test_a_damaged_runs_csv_is_one_line_naming_file_problem_and_fix(tmp_path, change, expected):
    path = write_csv(change(RUNS.copy()), tmp_path / "runs.csv")
    assert problem(path).startswith(expected)


def test_truncated_files_and_files_that_are_not_csv(tmp_path):
    text = RUNS.to_csv(index=False)
    path = tmp_path / "runs.csv"
    path.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 20])  # cut inside the last line
    assert problem(path) == "is truncated (its last line, line 4, is incomplete)"
    path.write_bytes(b"\xff\xfe" + text.encode())
    assert problem(path).startswith("is not UTF-8 text")
    path.write_text("")
    assert problem(path) == "is empty (no header line)"
    predictions = pd.DataFrame({"run_id": ["0123456789ab"] * 500, "val_index": range(500), "target": [1] * 500,
                                "pred_raw": [1] * 500, "correct_raw": [1] * 500, "pred_ema": [1.0] * 500,
                                "correct_ema": [1.0] * 500})
    gz = write_csv(predictions, tmp_path / "predictions.csv.gz")
    assert len(read_results(gz)) == 500
    data = gz.read_bytes()
    gz.write_bytes(data[: len(data) // 2])
    assert problem(gz) == "is truncated (its compressed data ends early)"
    gz.write_bytes(gzip.decompress(data))
    assert problem(gz) == "is not a gzip file although its name ends in .gz"


def test_calls_csv_with_a_repeated_header_line_or_a_bad_wall_time(tmp_path):
    path = write_csv(CALLS, tmp_path / "calls.csv")
    assert read_results(path)["wall_seconds"].tolist() == [37.0, 31.5]
    path.write_text(CALLS.to_csv(index=False) * 2)  # two call logs appended into one
    assert problem(path) == "line 4 repeats the header line (two files appended into one?)"
    write_csv(CALLS.assign(wall_seconds=["37", "abc"]), path)
    assert problem(path).startswith("column 'wall_seconds' holds 'abc' in line 3, not of type")


def test_verdicts_need_their_numbers_and_a_missing_file_names_the_command(tmp_path):
    verdicts = pd.DataFrame({"grid": ["kd"], "cell": ["kd"], "baseline": ["none"], "claim": ["better"],
                             "diff": [float("nan")], "low": [-1.0], "high": [2.0], "p_holm": [0.5], "mde": [3.0],
                             "n": [3], "verdict": ["underpowered"], "per_seed": ["+1 +2 +3"]})
    path = write_csv(verdicts, tmp_path / "verdicts.csv")
    assert problem(path) == "column 'diff' is empty (NaN) in line 2, where a value is required"
    write_csv(verdicts.assign(diff=1.0, p_holm=1.5), path)
    assert problem(path) == "column 'p_holm' holds 1.5 in line 2, which fails in_range(0, 1)"
    with pytest.raises(FileNotFoundError, match=f"results file {tmp_path / 'none.csv'} does not exist; run `gv3lite "
                                                "reproduce` to write it"):
        read_results(tmp_path / "none.csv", "runs.csv")
