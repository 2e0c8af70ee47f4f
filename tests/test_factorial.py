"""The factorial design (gv3lite.study.design), its model (gv3lite.study.factorial), the sequential runner
(gv3lite.study.blocks, with training replaced by a synthetic outcome so the test takes seconds) and its bad input:
one line, exit 2, nothing recorded lost."""
import json

import numpy as np
import pandas as pd
import pytest

from gv3lite import budgets
from gv3lite.cli import main
from gv3lite.study import blocks, design, progress, workers
from gv3lite.study.factorial import CLAIMS, claim_table, design_table, fit_model
from gv3lite.study.factorial_report import out_of_time
from gv3lite.study.plan import cell_recipe, factorial_plan
from gv3lite.utils import repo_root

WNIDS = ("n01440764", "n02102040", "n02979186")
from conftest import FACTORIAL_TRUE as TRUE  # pp: the synthetic study's true main effects


def test_the_fraction_its_relation_aliases_and_corners():
    runs = design.fraction()
    assert len(runs) == 16 and not runs.duplicated().any() and (runs.sum() == 0).all()
    assert (runs.T @ runs == 16 * np.eye(6)).all().all()  # orthogonal main effects
    assert design.relation_text() == "I = +ABEF = -ACDE = -BCDF" and design.resolution() == 4
    chains = [design.chain_text(c) for c in design.alias_chains()]
    assert chains[:6] == list("ABCDEF") and "AE + BF - CD" in chains and len(chains) == 13
    labels = {design.run_label(r) for r in runs.to_dict("records")}
    assert design.run_label(design.GHOSTNETV3_CORNER) in labels and design.run_label(design.CONVENTIONAL_CORNER) in labels
    assert design.block_order(1) == design.block_order(1) != design.block_order(2)  # the order is the seed's


def test_corners_are_the_recipe_grids_runs():
    items = {(it["cell"], it["seed"]): it for it in factorial_plan("quick", 2)}
    for seed in (0, 1):
        v3 = items[(design.run_label(design.GHOSTNETV3_CORNER), seed)]["recipe"]
        conv = items[(design.run_label(design.CONVENTIONAL_CORNER), seed)]["recipe"]
        assert v3 == cell_recipe("quick", "recipe", "ghostnetv3", seed)
        assert conv == cell_recipe("quick", "recipe", "conventional", seed)
    assert len({it["run_id"] for it in items.values()}) == 32


def synthetic_runs(blocks_: int, sd: float = 1.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for it in factorial_plan("smoke", blocks_):
        levels = design.parse_label(it["cell"])
        top1 = 40 + sum(TRUE.get(x, 0) / 2 * levels[x] for x in design.LETTERS) + it["seed"] + rng.normal(0, sd)
        rows.append({"grid": "factorial", "cell": it["cell"], "seed": it["seed"], "run_id": it["run_id"],
                     "top1": top1, "top5": 90.0, "top1_raw": top1, "top1_ema": top1, "train_seconds": 1.0,
                     "budget": "smoke"})
    return pd.DataFrame(rows)


def test_model_recovers_the_effects_with_intervals():
    fit = fit_model(design_table(synthetic_runs(3)))
    table = claim_table(fit).set_index("claim")
    assert fit["result"].df_resid == 15 * 3 - 13
    for claim, letter in zip(table.index[:4], "ABCD"):
        assert table.loc[claim, "low"] < TRUE[letter] < table.loc[claim, "high"]
    composite = 2 * (TRUE["A"] / 2 + TRUE["B"] / 2)  # corners differ in A, B (+) and E, F (no effect)
    assert abs(table.iloc[4]["diff"] - composite) < 3 * table.iloc[4]["se"]
    assert [c.direction for c in CLAIMS] == ["better", "better", "worse", "worse", "better"]


def test_sequential_study_end_to_end_resumes_and_reanalyses(tmp_path, make_image_root, fake_training, monkeypatch):
    monkeypatch.setitem(budgets.FACTORIAL_BLOCKS, "smoke", dict(first_look=1, max_blocks=3, wall_minutes=None))
    shown = []

    class Shown(progress.StudyProgress):  # the live display, as the one-factor path has it: one per block
        def __init__(self, todo, out_dir, **kw):
            shown.append((kw["label"], len(todo)))
            super().__init__(todo, out_dir, **kw)
    monkeypatch.setattr(blocks, "StudyProgress", Shown)
    root = make_image_root(classes=WNIDS, per_class=2, size=(24, 24))
    command = f"gv3lite reproduce --design factorial --data {root} --out {repo_root()}/runs/x"
    first = blocks.reproduce_factorial("smoke", out=tmp_path, data=root, command=command, log=lambda *a: None,
                                       progress=True)
    out = tmp_path / "smoke"
    assert first["trained"] == 16 * first["blocks"] and first["stopped"], first["reason"]
    assert shown == [(f"block {b} of at most 3: ", 16) for b in range(1, first["blocks"] + 1)]
    verdicts = pd.read_csv(out / "verdicts.csv")
    assert list(verdicts["verdict"][:4]) == ["agrees"] * 4  # large true effects, small noise: decided early
    report = (out / "report.md").read_text()
    assert "I = +ABEF = -ACDE = -BCDF" in report and "AE + BF - CD" in report and "recipe (composite" in report
    portable = "gv3lite reproduce --design factorial --data data --out runs/x"  # no machine path recorded
    assert f"Command: `{portable}`" in report and "Runs trained at commit test, code fingerprint" in report
    assert set(pd.read_csv(out / "runs.csv")["command"]) == {portable}
    assert {p.name for p in first["figures"]} == {"ablation_forest.png", "ablation_learning_curves.png"}
    looks = pd.read_csv(out / "looks.csv")
    assert set(looks["blocks"]) == set(range(1, first["blocks"] + 1))
    rendered = {name: (out / name).read_bytes() for name in ("report.md", "verdicts.csv", "looks.csv", "effects.csv")}
    again = blocks.reproduce_factorial("smoke", out=tmp_path, data=root, command="gv3lite reproduce",
                                       log=lambda *a: None)
    assert again["trained"] == 0 and again["skipped"] == 16 * first["blocks"]
    assert len(pd.read_csv(out / "calls.csv")) == 1  # a call that trains nothing adds no wall time
    assert {name: (out / name).read_bytes() for name in rendered} == rendered  # rendered from the records only
    assert main(["report", str(out), "--out", str(tmp_path / "re")]) == 0
    assert pd.read_csv(tmp_path / "re" / "verdicts.csv")["verdict"].tolist() == verdicts["verdict"].tolist()
    assert (tmp_path / "re" / "report.md").read_bytes() == rendered["report.md"]


def test_a_foreign_factorial_folder_is_refused_before_training(tmp_path, make_image_root, fake_training, capsys):
    root = make_image_root(classes=WNIDS, per_class=2, size=(24, 24))
    args = ["reproduce", "--design", "factorial", "--budget", "smoke", "--out", str(tmp_path), "--data", str(root)]
    run = tmp_path / "smoke" / "runs" / "aaa"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"top1": 1.0, "code_fingerprint": "0123456789ab"}))
    assert main(args) == 2
    assert "trained by other training code" in error_line(capsys)
    (run / "result.json").write_text('{"top1": 4')  # cut off mid-write
    assert main(args) == 2
    assert "aaa/result.json is damaged" in error_line(capsys)
    assert sorted(p.name for p in (tmp_path / "smoke").iterdir()) == ["runs"]  # nothing written
    assert main([*args, "--grids", "kd"]) == 2
    assert "--grids and --seeds apply to --design ofat" in error_line(capsys)


def test_ctrl_c_records_the_call_exits_130_and_the_same_command_resumes(tmp_path, make_image_root, fake_training,
                                                                        monkeypatch, capsys):
    monkeypatch.setitem(budgets.FACTORIAL_BLOCKS, "smoke", dict(first_look=1, max_blocks=1, wall_minutes=None))
    root = make_image_root(classes=WNIDS, per_class=2, size=(24, 24))
    stand_in, calls = workers._train_run, []

    def interrupted(*args):  # Ctrl-C during the fourth training
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return stand_in(*args)
    monkeypatch.setattr(workers, "_train_run", interrupted)
    argv = ["reproduce", "--design", "factorial", "--budget", "smoke", "--out", str(tmp_path), "--data", str(root)]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.endswith(f"To continue, run:\n  gv3lite {' '.join(argv)}\n")
    out = tmp_path / "smoke"
    log = pd.read_csv(out / "calls.csv")
    assert log["interrupted"].tolist() == [True] and log["trained"].tolist() == [3]
    assert main(argv) == 0  # resumes: the 3 finished runs are kept, the other 13 trained
    log = pd.read_csv(out / "calls.csv")
    assert log["trained"].tolist() == [3, 13] and len(pd.read_csv(out / "runs.csv")) == 16


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("args, message", [
    (["--generators", "E=-ACD,F=-ACD"], "inestimable"),
    (["--generators", "E=-ACD,G=-BCD"], "added factor"),
    (["--set", "teacher=null"], "singular"),
    (["--set", "mixup_alpha=0.2"], "singular"),
    (["--set", "no_such_field=1"], "unknown recipe keys"),
])
def test_bad_design_is_one_line_exit_2(tmp_path, capsys, args, message):
    assert main(["reproduce", "--design", "factorial", "--budget", "smoke", "--out", str(tmp_path / "o"), *args]) == 2
    assert message in error_line(capsys) and not (tmp_path / "o" / "smoke").exists()


def test_missing_run_and_mixed_designs_are_refused_without_loss(tmp_path, capsys, make_image_root, fake_training):
    folder = tmp_path / "study"
    folder.mkdir()
    runs = synthetic_runs(2)
    runs.drop(index=5).to_csv(folder / "runs.csv", index=False)
    assert main(["report", str(folder), "--out", str(tmp_path / "r")]) == 2
    assert "block 0 lacks run(s)" in error_line(capsys)
    grids = pd.concat([runs, runs.head(2).assign(grid="recipe", cell="conventional", seed=[0, 1])])
    grids.to_csv(folder / "runs.csv", index=False)
    before = (folder / "runs.csv").read_bytes()
    assert main(["report", str(folder), "--out", str(tmp_path / "r")]) == 2
    assert "runs.csv mixes two designs" in error_line(capsys)
    root = make_image_root(classes=WNIDS, per_class=2, size=(24, 24))
    (tmp_path / "g" / "smoke").mkdir(parents=True)
    grids[grids["grid"] == "recipe"].to_csv(tmp_path / "g" / "smoke" / "runs.csv", index=False)
    recorded = (tmp_path / "g" / "smoke" / "runs.csv").read_bytes()
    assert main(["reproduce", "--design", "factorial", "--budget", "smoke", "--out", str(tmp_path / "g"),
                 "--data", str(root)]) == 2
    assert "holds a study of the one-factor-at-a-time grids (--design ofat)" in error_line(capsys)
    factorial = tmp_path / "f" / "smoke"
    factorial.mkdir(parents=True)
    runs.to_csv(factorial / "runs.csv", index=False)
    assert main(["reproduce", "--design", "ofat", "--budget", "smoke", "--grids", "kd", "--out", str(tmp_path / "f"),
                 "--data", str(root)]) == 2  # the one-factor path never rewrites a factorial study's runs.csv
    assert "holds a study of the 2^(6-2) fractional factorial (--design factorial)" in error_line(capsys)
    assert (folder / "runs.csv").read_bytes() == before
    assert (tmp_path / "g" / "smoke" / "runs.csv").read_bytes() == recorded
    assert pd.read_csv(factorial / "runs.csv").equals(runs)


def test_a_block_that_would_end_past_the_wall_time_is_not_started(monkeypatch):
    monkeypatch.setitem(budgets.FACTORIAL_BLOCKS, "quick", dict(first_look=2, max_blocks=3, wall_minutes=60))

    def calls(*minutes):  # two sittings of the given wall minutes, an hour apart (no overlap)
        return pd.DataFrame({"started": ["2026-12-07T07:00:00+00:00", "2026-12-07T09:00:00+00:00"][:len(minutes)],
                             "wall_seconds": [60.0 * m for m in minutes]})
    assert out_of_time("quick", calls(38), 2) is None  # 38 min + 19 per block: the third block ends at 57 min
    assert out_of_time("quick", calls(20, 22), 2) == ("another block would end past the budget's 60 min of wall "
                                                       "time (42 min 00 s spent over 2 blocks, calls.csv)")
    assert out_of_time("quick", calls(45), 3) is None  # ends exactly at 60 min: it fits
    assert out_of_time("quick", calls(61), 2) == "the budget's 60 min of wall time spent (calls.csv)"
    assert out_of_time("quick", None, 2) is None and out_of_time("quick", calls(38).iloc[:0], 2) is None
    monkeypatch.setitem(budgets.FACTORIAL_BLOCKS, "quick", dict(first_look=2, max_blocks=3, wall_minutes=None))
    assert out_of_time("quick", calls(500), 2) is None  # no wall time: only the claims and max_blocks end it


def test_the_wall_time_ends_a_study_only_from_its_first_look_on(tmp_path, factorial_study, monkeypatch):
    monkeypatch.setitem(budgets.FACTORIAL_BLOCKS, "smoke", dict(first_look=2, max_blocks=3, wall_minutes=1e-6))
    out = factorial_study(tmp_path)
    assert pd.read_csv(out / "runs.csv")["seed"].nunique() == 2  # the first look's blocks, then the time is spent
    assert "stopped: True (the budget's 1e-06 min of wall time spent (calls.csv))" in (out / "report.md").read_text()
