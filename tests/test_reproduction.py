"""A user's study beside the committed one (`gv3lite compare`, ``reproduction.md``), the study's provenance checks
(`gv3lite.study.provenance`) and its live progress display. No training: studies are copies of the committed
one-factor quick study
(tests/fixtures/ofat_quick_542d4c2: the committed results/quick until the factorial replaced it), edited."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from gv3lite.cli import main
from gv3lite.fingerprint import code_fingerprint
from gv3lite.study import progress, provenance, records, reproduction
from gv3lite.utils import repo_root

COMMITTED = Path(__file__).parent / "fixtures" / "ofat_quick_542d4c2"  # a recorded one-factor study


def _study(tmp_path, name, fingerprint=None):
    folder = tmp_path / name / "quick"
    folder.mkdir(parents=True)
    for file in ("runs.csv", "verdicts.csv"):
        shutil.copy(COMMITTED / file, folder / file)
    if fingerprint:
        runs = pd.read_csv(folder / "runs.csv")
        runs.assign(code_fingerprint=fingerprint).to_csv(folder / "runs.csv", index=False)
    return folder


def test_the_same_code_reproduces_every_run_and_verdict(tmp_path, capsys):
    current = code_fingerprint()
    user, committed = _study(tmp_path, "user", current), _study(tmp_path, "committed", current)
    assert main(["compare", str(user), str(committed)]) == 0
    out = capsys.readouterr().out
    runs = pd.read_csv(user / "runs.csv")
    n, claims = runs["run_id"].nunique(), len(pd.read_csv(user / "verdicts.csv"))
    line = f"Top-1 reproduced exactly: all {n} trainings in common are identical; verdicts agree for {claims} of {claims}"
    assert line in out
    text = (user / "reproduction.md").read_text()
    assert line in text and "Same training code" in text and text.count("| identical |") == n


def test_the_comparison_names_both_cpus_and_expects_identical_top1_only_on_the_same_one(tmp_path):
    current = code_fingerprint()
    user, committed = _study(tmp_path, "user", current), _study(tmp_path, "committed", current)
    row = {"started": "2026-12-07T07:00:00+00:00", "command": "make main", "git_commit": "abc1234",
           "wall_seconds": 60.0, "trained": 1, "skipped": 0, "jobs": 2, "cpu_count": 2, "interrupted": False}
    old_log = pd.DataFrame([row])  # a log written before calls.csv had a cpu column
    old_log.to_csv(committed / "calls.csv", index=False)
    records.append_call(user, {**row, "cpu": "AMD EPYC, AVX512"})
    assert reproduction.recorded_cpus(user) == ["AMD EPYC, AVX512"] and reproduction.recorded_cpus(committed) == []
    text = reproduction.reproduction_text(user, committed)[0]
    assert "CPU: yours AMD EPYC, AVX512; the committed study's not recorded." in text
    assert "on another CPU (or one not recorded) torch's kernels may round differently" in text
    records.append_call(committed, {**row, "started": "2026-12-07T09:00:00+00:00", "cpu": "AMD EPYC, AVX512"})
    assert reproduction.recorded_cpus(committed) == ["AMD EPYC, AVX512"]  # the older row's empty cpu is not one
    text = reproduction.reproduction_text(user, committed)[0]
    assert "Same training code and CPU: with the same data every top-1 should be identical" in text


def test_differences_are_shown_run_by_run_and_claim_by_claim(tmp_path):
    user, committed = _study(tmp_path, "user"), _study(tmp_path, "committed")
    runs = pd.read_csv(user / "runs.csv")
    rid = runs["run_id"].iloc[0]
    runs.loc[runs["run_id"] == rid, ["top1_ema", "top1"]] += 0.25
    extra = runs[runs["run_id"] == rid].assign(run_id="0000newrun00")  # a training the committed plan lacks
    pd.concat([runs, extra]).to_csv(user / "runs.csv", index=False)
    table = pd.read_csv(user / "verdicts.csv")
    table.loc[0, "verdict"] = "agrees" if table.loc[0, "verdict"] != "agrees" else "underpowered"
    table.to_csv(user / "verdicts.csv", index=False)
    path, text, summary = reproduction.write_reproduction(user, committed)
    n = runs["run_id"].nunique()
    assert path == user / "reproduction.md" and path.read_text() == text
    assert (summary["runs"], summary["identical"], round(summary["max_abs_diff"], 6)) == (n, n - 1, 0.25)
    assert f"Top-1 not reproduced exactly: 1 of the {n} trainings in common differs (largest difference 0.25 pp)" in text
    assert f"| {rid} |" in text and "| +0.25 | differs |" in text and "| only in yours |" in text
    assert summary["agree"] == summary["claims"] - 1 and text.count("| no |") == 1
    # the committed study predates fingerprints: said so, and no exact reproduction is promised
    assert "older code whose fingerprint was not recorded" in text and not summary["same_code"]


def test_the_differences_are_sized_against_the_spread_a_change_of_seed_gives():
    # two recipes with two seeds each: committed top-1 10, 12 (variance 2) and 20, 21 (variance 0.5)
    # the user's cells name the recipes differently (a user study of other grids): the committed names group them
    runs = pd.DataFrame({"run_id": ["r1", "r2", "r3", "r4"], "cells": ["x/1", "y/1", "x/2", "y/2"],
                         "cells_committed": ["g/a", "g/a", "g/b", "g/b"], "status": ["differs"] * 4,
                         "top1_committed": [10.0, 12.0, 20.0, 21.0], "top1_user": [11.0, 11.0, 22.0, 21.0]})
    runs["diff"] = runs["top1_user"] - runs["top1_committed"]  # 1, -1, 2, 0
    line = reproduction.spread_line(runs)
    # mean 0.5, SD sqrt(5/3) = 1.29, t(0.975, 3) = 3.182: half-width 2.05;
    # pooled SD sqrt(1.25) = 1.12, x sqrt(2) = 1.58
    assert ("Differences over the 4 trainings in common: mean +0.50 pp (95% t interval [-1.55, +2.55]), SD 1.29 pp."
            in line)
    assert "differ with SD 1.58 pp (√2 × its pooled within-recipe SD 1.12 pp, 2 df)" in line
    one_seed_each = runs.assign(cells_committed=["g/a", "g/b", "g/c", "g/d"])
    assert reproduction.spread_line(one_seed_each).endswith("SD 1.29 pp.")
    assert reproduction.spread_line(runs.assign(status=["identical"] * 3 + ["differs"])) == ""


def test_compare_refuses_a_folder_that_is_not_a_study(tmp_path, capsys):
    committed = _study(tmp_path, "committed")
    assert main(["compare", str(tmp_path / "missing"), str(committed)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gv3lite compare: error: ") and "runs.csv does not exist" in err and err.count("\n") == 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "runs.csv").write_text("a,b\n1,2\n")
    assert main(["compare", str(bad), str(committed)]) == 2
    assert "lacks column(s)" in capsys.readouterr().err
    other = _study(tmp_path, "other")
    runs = pd.read_csv(other / "runs.csv")
    runs.assign(budget="smoke").to_csv(other / "runs.csv", index=False)
    assert main(["compare", str(other), str(committed)]) == 2
    assert "is a study of budget ['smoke']" in capsys.readouterr().err


def test_portable_command_records_no_machine_path():
    root = repo_root()
    cmd = f"gv3lite reproduce --budget quick --data /home/me/data/imagenette2-224 --out {root}/runs/study"
    assert provenance.portable_command(cmd) == "gv3lite reproduce --budget quick --data imagenette2-224 --out runs/study"
    assert provenance.portable_command("gv3lite train --data=/x/y/tiny") == "gv3lite train --data=tiny"


def _result(folder, rid, **fields):
    (folder / "runs" / rid).mkdir(parents=True, exist_ok=True)
    (folder / "runs" / rid / "result.json").write_text(json.dumps({"top1": 1.0, **fields}))


def test_check_study_refuses_foreign_or_damaged_folders_and_lets_interrupted_runs_resume(tmp_path):
    current = code_fingerprint()
    folder = tmp_path / "quick"
    provenance.check_study(folder, "quick")  # nothing there yet
    _result(folder, "aaa", code_fingerprint=current)
    (folder / "runs" / "bbb").mkdir()
    (folder / "runs" / "bbb" / "last.pth").write_bytes(b"x")  # interrupted: resumes
    provenance.check_study(folder, "quick")
    _result(folder, "ccc", code_fingerprint="0123456789ab")
    with pytest.raises(ValueError, match=r"holds 1 finished run\(s\) trained by other training code .*0123456789ab"
                                         r".*mv .*quick .*quick.old"):
        provenance.check_study(folder, "quick")
    (folder / "runs" / "ccc" / "result.json").write_text('{"top1": 4')  # cut off mid-write
    with pytest.raises(ValueError, match=r"ccc/result.json is damaged .*delete its folder"):
        provenance.check_study(folder, "quick")
    shutil.rmtree(folder / "runs" / "ccc")
    shutil.copy(COMMITTED / "runs.csv", folder / "runs.csv")  # rows of older code without their run folders
    with pytest.raises(ValueError, match=r"trained by other training code \(code fingerprint unknown"):
        provenance.check_study(folder, "quick")
    with pytest.raises(ValueError, match=r"holds a study of budget \['quick'\], not 'medium'"):
        provenance.check_study(folder, "medium")


def test_code_label_marks_runs_of_other_code():
    runs = pd.read_csv(COMMITTED / "runs.csv")
    label = provenance.code_label(runs)
    assert label.startswith("**Trained by older code: commit ") and "fingerprint not recorded" in label
    assert provenance.code_label(runs.assign(code_fingerprint=code_fingerprint())) == ""
    other = provenance.code_label(runs.assign(code_fingerprint="0123456789ab"))
    assert "other training code" in other and "0123456789ab" in other


def test_progress_counts_epochs_and_runs_from_the_run_folders(tmp_path):
    todo = {"aaa": SimpleNamespace(epochs=3), "bbb": SimpleNamespace(epochs=2), "ccc": SimpleNamespace(epochs=2)}
    (tmp_path / "runs" / "aaa").mkdir(parents=True)
    (tmp_path / "runs" / "aaa" / "metrics.csv").write_text("epoch,val_top1\n1,10\n2,11\n")
    _result(tmp_path, "bbb")
    with progress.StudyProgress(todo, tmp_path, finished=4, poll=60) as shown:
        assert shown.bar.total == 7 and shown.bar.n == 4
        assert shown.bar.desc.startswith("runs 5/7") and "aaa epoch 2/3" in shown.bar.postfix
        _result(tmp_path, "aaa")
        shown.refresh()
        assert shown.bar.n == 5 and shown.bar.desc.startswith("runs 6/7")
    table = pd.read_csv(COMMITTED / "verdicts.csv")
    lines = progress.claim_lines(table)
    r = table.iloc[0]
    assert len(lines) == len(table)
    assert r["grid"] == "recipe"  # a composite contrast: named so (gv3lite.verdicts.contrast_label)
    assert lines[0] == f"{r['grid']}: {r['cell']} vs {r['baseline']} (composite): {r['diff']:+.2f} pp " \
                       f"[{r['low']:+.2f}, {r['high']:+.2f}] -> {r['verdict']}"


def test_make_main_without_data_or_into_a_foreign_study_is_one_line_and_exit_2(tmp_path, make_image_root, capsys):
    args = ["reproduce", "--budget", "smoke", "--grids", "kd", "--out", str(tmp_path / "study")]
    assert main([*args, "--data", str(tmp_path / "no_data")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gv3lite reproduce: error: ") and "no_data" in err
    _result(tmp_path / "study" / "smoke", "ccc", code_fingerprint="0123456789ab")  # a study of other code
    assert main([*args, "--data", str(make_image_root())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gv3lite reproduce: error: ") and "trained by other training code" in err
    assert err.count("\n") == 1 and "mv " in err
    assert not (tmp_path / "study" / "smoke" / "calls.csv").exists()  # refused before anything was trained


def test_factorial_studies_are_compared_claim_by_claim_and_designs_never_mixed(tmp_path, factorial_study, capsys):
    """Same design: paired run by run and claim by claim. Different designs (a user's factorial study beside the
    committed one-factor study, what make main meets until a factorial study is published): not paired, said in one
    line and in reproduction.md with the user's own claims, exit 0 so that the main job ends. A runs.csv mixing
    designs: one-line error, exit 2."""
    user = factorial_study(tmp_path / "user")
    committed = tmp_path / "committed" / "smoke"
    shutil.copytree(user, committed)
    assert main(["compare", str(user), str(committed)]) == 0
    text = (user / "reproduction.md").read_text()
    claims = pd.read_csv(user / "verdicts.csv")
    assert f"all 16 trainings in common are identical; verdicts agree for {len(claims)} of {len(claims)}" in text
    assert "| claim | yours | committed |" in text and "| reparam | " in text and "Same training code" in text
    ofat = _study(tmp_path, "ofat")  # the committed one-factor study, as if of the smoke budget
    pd.read_csv(ofat / "runs.csv").assign(budget="smoke").to_csv(ofat / "runs.csv", index=False)
    capsys.readouterr()
    assert main(["compare", str(user), str(ofat)]) == 0
    out = capsys.readouterr().out
    text = (user / "reproduction.md").read_text()
    assert "Not compared: " in out and "holds the 2^(6-2) fractional factorial (--design factorial)" in text
    assert "the one-factor-at-a-time grids (--design ofat). Runs and claims of two designs do not pair up" in text
    assert "`gv3lite reproduce --design ofat ...`" in text and "| reparam | " in text
    assert text.count("\n| ") == len(claims) + 1  # the header and one row per declared claim
    mixed = pd.concat([pd.read_csv(user / "runs.csv"), pd.read_csv(ofat / "runs.csv")])
    mixed.to_csv(user / "runs.csv", index=False)
    assert main(["compare", str(user), str(committed)]) == 2
    assert "runs.csv mixes two designs" in capsys.readouterr().err
