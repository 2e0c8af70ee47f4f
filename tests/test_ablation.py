"""Presets, the ablation grids, `gv3lite reproduce` end to end (smoke budget, real Imagenette), resume, report logic,
and the figure-saving contract of `gv3lite.figures`."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gv3lite.budgets import BUDGETS
from gv3lite.recipe import PRESET_NOTES, PRESETS, Recipe, preset
from gv3lite.study.analysis import contrasts, differing_fields, verdicts
from gv3lite.study.grids import GRIDS, paper_key
from gv3lite.study.plan import plan
from gv3lite.study.records import CALL_COLUMNS, PREDICTIONS, append_call
from gv3lite.study.report import duration, write_report
from gv3lite.study.runner import reproduce
from gv3lite.utils import repo_root

from conftest import publish_toy_soft_labels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_presets_round_trip(tmp_path, name, suffix):
    recipe = preset(name)
    assert Recipe.load(recipe.save(tmp_path / f"r{suffix}")) == recipe


def test_presets_differ_in_the_papers_ingredients_and_every_choice_has_a_note():
    conv, gv3 = preset("conventional"), preset("ghostnetv3")
    assert (conv.num_conv_branches, conv.use_scale_branch, conv.teacher) == (1, False, None)
    # conventional = GhostNetV2's published recipe: RandAugment and random erasing 0.2, no Mixup/CutMix (issue 11)
    assert conv.mixup_alpha == conv.cutmix_alpha == 0 and conv.auto_augment == "randaugment"
    assert conv.random_erasing == 0.2
    # KD: KL * T^2 at T = 4; the unused KD fields of conventional equal ghostnetv3's (no spurious differences)
    assert (gv3.kd_loss, gv3.kd_temperature, gv3.kd_alpha) == ("kl", 4.0, 0.5)
    kd_fields = ("kd_loss", "kd_temperature", "kd_alpha", "kd_mode")
    assert [getattr(conv, f) for f in kd_fields] == [getattr(gv3, f) for f in kd_fields]
    assert (gv3.num_conv_branches, gv3.use_scale_branch, gv3.use_identity_branch) == (3, True, True)
    assert gv3.teacher is not None and gv3.ema and gv3.mixup_alpha == gv3.cutmix_alpha == 0
    # issue 22: the teacher saw only the student's training images; both presets (and every cell of the study, on
    # any budget) train on train/ minus the tuning split
    assert gv3.teacher == "imagenette_same_data" and conv.tuning == gv3.tuning == "exclude"
    assert {it["recipe"].tuning for b in BUDGETS for it in plan(b)} == {"exclude"}
    assert "outside data" in PRESET_NOTES["ghostnetv3"]["teacher"] and "3,791" in PRESET_NOTES["ghostnetv3"]["teacher"]
    for name in ("conventional", "ghostnetv3"):
        assert set(PRESETS[name]) - {"ema", "drop_rate", "label_smoothing"} <= set(PRESET_NOTES[name]) | {
            "use_scale_branch", "use_identity_branch", "kd_loss", "kd_alpha", "kd_temperature", "kd_mode", "sched"}
    with pytest.raises(KeyError, match="unknown preset"):
        preset("nope")


def test_soft_ce_with_a_temperature_is_refused():
    assert preset("ghostnetv3", kd_loss="soft_ce", kd_temperature=1.0).kd_loss == "soft_ce"
    with pytest.raises(ValueError, match="no T² factor.*kd_loss='kl'"):
        preset("ghostnetv3", kd_loss="soft_ce", kd_temperature=4.0)


def test_cli_train_preset():
    from gv3lite.cli import build_parser, recipe_from_args
    args = build_parser().parse_args(["train", "--preset", "conventional", "--epochs", "2"])
    assert recipe_from_args(args) == preset("conventional", epochs=2)


# --------------------------------------------------------------------------------------------------- grids
def test_every_cell_of_every_budget_validates_and_builds():
    from gv3lite.models import build_model
    built = set()
    for budget in BUDGETS:
        items = plan(budget, seeds=1)
        assert items, budget
        for it in items:
            recipe = it["recipe"].validate()
            assert recipe.img_size == BUDGETS[budget]["img_size"]
            key = (recipe.model, recipe.num_conv_branches, recipe.use_scale_branch, recipe.use_identity_branch)
            if key not in built:
                model = build_model(recipe, num_classes=10)
                assert sum(p.numel() for p in model.parameters()) > 0
                built.add(key)
    assert len(built) >= 8  # plain / branches / scale / n2 / n3 / n4 and three other architectures


def test_shared_configs_run_once_and_cells_differ():
    items = plan("quick")
    ids = {(it["grid"], it["cell"], it["seed"]): it["run_id"] for it in items}
    for seed in (0, 1):
        shared = {ids[("recipe", "ghostnetv3", seed)], ids[("reparam", "full", seed)], ids[("kd", "teacher", seed)],
                  ids[("schedule", "ema", seed)], ids[("augment", "basic", seed)], ids[("kd_control", "teacher", seed)]}
        assert len(shared) == 1  # every grid's GhostNetV3-recipe cell is one training
        assert ids[("augment", "mixup", seed)] != ids[("augment", "basic", seed)]
        # no EMA = the EMA run's raw weights; GhostNetV2 + a recipe = GhostNetV3's architecture with its switches
        assert ids[("schedule", "no_ema", seed)] == ids[("schedule", "ema", seed)]
        assert ids[("architectures", "ghostnetv2/conventional", seed)] == ids[("recipe", "conventional", seed)]
        assert ids[("architectures", "ghostnetv2/ghostnetv3", seed)] == ids[("recipe", "ghostnetv3", seed)]
    by_cell = {(it["grid"], it["cell"]): it for it in items if it["seed"] == 0}
    assert not by_cell[("schedule", "no_ema")]["recipe"].ema and by_cell[("schedule", "no_ema")]["trained_as"].ema
    # quick runs the other architectures at width x0.5, full at the paper's x1.0
    assert by_cell[("architectures", "mobilenetv2/ghostnetv3")]["recipe"].model == "mobilenetv2_050_rep"
    full = {(it["grid"], it["cell"]): it["recipe"] for it in plan("full", ["architectures"], seeds=1)}
    assert full[("architectures", "shufflenetv2/conventional")].model == "shufflenetv2_100"
    assert full[("architectures", "ghostnetv2/ghostnetv3")].model == "ghostnetv3_100"
    assert ids[("recipe", "ghostnetv3", 0)] != ids[("recipe", "ghostnetv3", 1)]
    assert ids[("kd", "none", 0)] != ids[("kd", "teacher", 0)]
    # every grid's baseline and cells have a row (maybe value unknown) in the paper table
    from gv3lite.paper import paper_results
    paper = paper_results()
    for grid, cells in GRIDS.items():
        for cell in cells:
            paper_cell, model = paper_key(grid, cell.name)
            rows = paper[(paper["grid"] == grid) & (paper["cell"] == paper_cell)]
            assert len(rows if model is None else rows[rows["model"] == model]), (grid, cell.name)


def test_plan_errors():
    with pytest.raises(KeyError, match="unknown grid"):
        plan("smoke", grids=["recipe", "nope"])
    with pytest.raises(ValueError, match="unknown budget"):
        plan("huge")
    with pytest.raises(ValueError, match="at least 1"):
        plan("smoke", seeds=0)


@pytest.mark.parametrize("grids, message", [
    ([], "no grid given; choose one or more of \\['recipe', 'reparam', 'kd', 'architectures'\\]"),
    (["kd", "kd"], "\\['kd'\\] listed more than once"),
    (["kd", "schedule"], "\\['schedule'\\] have no cells in the 'smoke' budget; grids with cells in it: \\['recipe'"),
])
def test_plan_rejects_empty_repeated_and_cell_less_grids(grids, message):
    with pytest.raises(ValueError, match=message):
        plan("smoke", grids=grids)
    with pytest.raises(ValueError, match=message):
        reproduce("smoke", grids=grids, data="/nonexistent")  # fails before data, training or pandas


@pytest.mark.parametrize("flag", ["", ",,", "kd,kd"])
def test_reproduce_cli_rejects_bad_grids(flag, capsys):
    from gv3lite.cli import main
    assert main(["reproduce", "--budget", "smoke", "--grids", flag, "--list"]) == 2
    assert capsys.readouterr().err.startswith("gv3lite reproduce: error: ")


# ------------------------------------------------------------------------------------------ report logic
def _synthetic(rows):
    return pd.DataFrame([{"grid": g, "cell": c, "seed": s, "top1": t, "top5": 90.0, "train_seconds": 1.0,
                          "run_id": f"{g}{c}{s}", "mixup_alpha": 0.8 if c == "mixup" else 0.0,
                          "teacher": "efficientnet_lite0" if c == "teacher" else None} for g, c, s, t in rows])


def test_verdicts_and_report_on_synthetic_results(tmp_path):
    top1 = {("kd", "none"): [50, 52, 54], ("kd", "teacher"): [60, 61, 65],  # +10, +9, +11: paper better -> agrees
            ("augment", "basic"): [50, 53, 51], ("augment", "mixup"): [57, 59, 58],  # +7 +6 +7: paper worse
            ("augment", "cutmix"): [49, 54, 51]}  # -1 +1 0
    runs = _synthetic([(g, c, s, float(v)) for (g, c), values in top1.items() for s, v in enumerate(values)])
    table = verdicts(runs).set_index(["grid", "cell"])
    assert len(table) == 3 and (table["baseline"] == ["none", "basic", "basic"]).all()
    assert table.loc[("kd", "teacher"), "diff"] == pytest.approx(10.0)
    assert table.loc[("augment", "mixup"), "diff"] == pytest.approx(20 / 3)
    assert table.loc[("kd", "teacher"), "per_seed"] == "+10.00 +9.00 +11.00"
    # 5 cells x 3 seeds, residual variance pooled (df 8), checked against an independent two-way ANOVA
    y = np.array(list(top1.values()), float)
    resid = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()
    assert table["df"].tolist() == [8, 8, 8]
    assert table.loc[("kd", "teacher"), "se"] == pytest.approx(math.sqrt((resid ** 2).sum() / 8 * 2 / 3))
    assert table.loc[("kd", "teacher"), "verdict"] == "agrees"
    assert table.loc[("augment", "mixup"), "verdict"] == "disagrees"
    assert table.loc[("augment", "cutmix"), "verdict"] in ("underpowered", "no effect >= 1 pp")
    assert table.loc[("augment", "mixup"), "differs"] == "mixup_alpha: 0 -> 0.8"
    assert table.loc[("kd", "teacher"), "differs"] == "teacher: None -> efficientnet_lite0"
    report = write_report(runs, table.reset_index(), tmp_path / "report.md", "quick").read_text()
    assert "| kd | teacher vs none | teacher: None -> efficientnet_lite0 | +10.00 +9.00 +11.00 | +10.00 |" in report
    assert "| augment | mixup vs basic | mixup_alpha: 0 -> 0.8 |" in report and "**disagrees**" in report


# the quick study committed at 4a61a24 (18 trainings, 2 seeds), kept as a fixed example of recorded results
OLD_QUICK_RUNS = Path(__file__).parent / "fixtures" / "quick_runs_4a61a24.csv"


def test_contrasts_of_the_4a61a24_quick_results():
    runs = pd.read_csv(OLD_QUICK_RUNS)
    by_cell = {(c.grid, c.cell): c for c in contrasts(runs)}
    assert by_cell[("recipe", "ghostnetv3")].paper_diff == (1.8, 2.2, 2.6)  # from paper_results.csv, not typed
    assert by_cell[("schedule", "ema")].within_run == ("top1_ema", "top1_raw")
    assert by_cell[("schedule", "ema")].paper_diff == pytest.approx((0.204,))
    assert by_cell[("architectures", "mobilenetv2/ghostnetv3")].baseline == "mobilenetv2/conventional"
    assert by_cell[("kd", "teacher")].within_run is None
    assert differing_fields(runs, "augment", "mixup", "basic") == {"mixup_alpha": (0.0, 0.8)}
    table = verdicts(runs).set_index("cell")
    assert table.loc["ema", "diff"] == pytest.approx(-0.317, abs=1e-3)
    assert table.loc["ema", "verdict"] == "no effect >= 1 pp"


# ------------------------------------------------------------------------------------- smoke end to end
@pytest.fixture(scope="module")
def smoke_run(data_root, tmp_path_factory):
    """`reproduce` under the smoke budget into a tmp dir (teacher cache and figures there too)."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("reproduce")
    mp.setenv("GV3LITE_FIGURES", str(tmp / "figures"))
    mp.setenv("GV3LITE_CACHE", str(tmp / "cache"))
    mp.setenv("OMP_NUM_THREADS", "2")
    # a stand-in for the same-data teacher's published soft labels, in the tmp dir (the repository's is not used)
    publish_toy_soft_labels(data_root, [it["trained_as"] for it in plan("smoke")], tmp / "soft_labels.pt", mp)
    first = reproduce("smoke", out=tmp / "results", data=data_root, command="pytest smoke", log=lambda *a: None)
    yield tmp, first, mp
    mp.undo()


def test_smoke_budget_end_to_end(smoke_run):
    tmp, first, _ = smoke_run
    items = plan("smoke")
    out = tmp / "results" / "smoke"
    assert first["trained"] == len({it["run_id"] for it in items}) and first["skipped"] == 0
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == len(items)
    for column in ("grid", "cell", "seed", "run_id", "top1", "top5", "train_seconds", "git_commit", "budget",
                   "command", "num_conv_branches", "teacher", "mixup_alpha", "ema", "img_size", "epochs"):
        assert column in runs.columns, column
    assert runs["top1"].between(0, 100).all() and runs["top5"].between(0, 100).all()
    assert (runs["top5"] >= runs["top1"]).all() and (runs["train_seconds"] > 0).all()
    assert set(runs["budget"]) == {"smoke"} and set(runs["command"]) == {"pytest smoke"}
    # runs shared by several cells report the same numbers
    assert runs.groupby(["run_id", "ema"])["top1"].nunique().max() == 1
    assert {"ghostnetv2/ghostnetv3", "mobilenetv2/ghostnetv3", "shufflenetv2/conventional"} <= set(runs["cell"])
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == len({(it["grid"], it["cell"]) for it in items})
    assert {"top1_mean", "top1_std", "n", "paper_claim"} <= set(summary.columns)
    assert "| recipe | conventional | 1 |" in (out / "summary.md").read_text()
    report = (out / "report.md").read_text()
    assert "ghostnetv3 vs conventional" in report and "teacher vs none" in report and "underpowered" in report
    # the call is logged: command, commit, wall time (also in the report's header), what it trained
    calls = pd.read_csv(out / "calls.csv")
    assert list(calls.columns) == list(CALL_COLUMNS) and len(calls) == 1
    call = calls.iloc[0]
    assert (call["command"], call["trained"], call["skipped"], call["jobs"]) == ("pytest smoke", first["trained"], 0, 1)
    assert call["git_commit"] == runs["git_commit"].iloc[0] and not call["interrupted"]
    assert call["wall_seconds"] >= runs.drop_duplicates("run_id")["train_seconds"].sum()
    assert (f"wall time of this call {duration(call['wall_seconds'])}; total wall time "
            f"{duration(call['wall_seconds'])} over 1 call of `gv3lite reproduce` (calls.csv)") in report
    for grid in [*sorted(set(runs["grid"])), "forest", "learning_curves"]:
        png = tmp / "figures" / f"ablation_{grid}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    assert json.loads((out / "runs" / runs["run_id"][0] / "result.json").read_text())["epochs"] == 1
    # every val image's prediction, per run and compactly beside the results; the report's intervals use them
    predictions = pd.read_csv(out / "predictions.csv.gz")
    val_images = 10 * BUDGETS["smoke"]["images_per_class_val"]
    assert len(predictions) == val_images * runs["run_id"].nunique()
    assert set(predictions.columns) >= {"run_id", "val_index", "target", "pred_raw", "correct_raw", "pred_ema"}
    one = predictions[predictions["run_id"] == runs["run_id"][0]]
    assert sorted(one["val_index"]) == list(range(val_images))
    top1_raw = runs.drop_duplicates("run_id").set_index("run_id")["top1_raw"]
    assert (predictions.groupby("run_id")["correct_raw"].mean() * 100).round(6).to_dict() == top1_raw.round(6).to_dict()
    assert (out / "runs" / runs["run_id"][0] / "predictions.csv").is_file()


def test_smoke_rerun_skips_finished_and_resumes_interrupted(smoke_run, data_root):
    tmp, first, _ = smoke_run
    out = tmp / "results"
    again = reproduce("smoke", out=out, data=data_root, figures=False, command="pytest smoke",
                               log=lambda *a: None)
    assert again["trained"] == 0 and again["skipped"] == first["trained"]
    assert again["runs"]["top1"].tolist() == first["runs"]["top1"].tolist()
    # --grids limits what is trained and returned; the results files keep every finished run of the budget
    only_kd = reproduce("smoke", out=out, grids=["kd"], data=data_root, figures=False, log=lambda *a: None)
    assert set(only_kd["runs"]["grid"]) == {"kd"}
    assert len(pd.read_csv(out / "smoke" / "runs.csv")) == len(first["runs"])
    # an interrupted run (checkpoint, no result.json) continues from its checkpoint instead of starting over
    rid = first["runs"]["run_id"].iloc[0]
    (out / "smoke" / "runs" / rid / "result.json").unlink()
    third = reproduce("smoke", out=out, data=data_root, figures=False, command="pytest smoke",
                               log=lambda *a: None)
    assert (third["trained"], third["resumed"]) == (1, 1)
    assert third["runs"]["top1"].tolist() == first["runs"]["top1"].tolist()
    # a run recorded in runs.csv whose directory is gone (committed results) is not retrained, and keeps its row,
    # its history and its place in the results files
    import shutil
    shutil.rmtree(out / "smoke" / "runs" / rid)
    fourth = reproduce("smoke", out=out, data=data_root, figures=False, command="pytest smoke",
                                log=lambda *a: None)
    assert fourth["trained"] == 0 and fourth["skipped"] == first["trained"]
    assert fourth["runs"]["top1"].tolist() == first["runs"]["top1"].tolist()
    history = pd.read_csv(out / "smoke" / "history.csv")
    assert set(history["run_id"]) == set(first["runs"]["run_id"]) and (history["epoch"] == 1).all()
    # one row in calls.csv per call that trained (the fixture's and the third); the calls with nothing to train only
    # re-rendered the files: a re-analysis adds nothing to the study's wall time. The report sums the rows
    calls = pd.read_csv(out / "smoke" / "calls.csv")
    assert calls["trained"].tolist() == [first["trained"], 1]
    assert calls["skipped"].tolist() == [0, first["trained"] - 1]
    total = duration(calls["wall_seconds"].sum())
    assert f"total wall time {total} over 2 calls" in (out / "smoke" / "report.md").read_text()


# --------------------------------------------------------------------------------------------- figures
def test_figures_dir_and_savefig(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gv3lite import figures
    from gv3lite.utils import repo_root
    monkeypatch.delenv("GV3LITE_FIGURES", raising=False)
    # notebooks write to the git-ignored runs/figures/<budget> at every budget; figures/ only when asked for
    assert figures.figures_dir("smoke") == repo_root() / "runs" / "figures" / "smoke"
    assert figures.figures_dir("quick") == repo_root() / "runs" / "figures" / "quick"
    monkeypatch.setenv("GV3LITE_FIGURES", str(tmp_path / "f"))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = figures.savefig(fig, "unit_test", budget="quick", command="pytest")
    assert path == tmp_path / "f" / "unit_test.png" and path.read_bytes()[:8] == PNG_MAGIC
    footer = [t.get_text() for t in fig.texts]
    assert any("budget quick" in t and "pytest" in t and "commit" in t for t in footer)
    with pytest.raises(ValueError, match="plain file stem"):
        figures.savefig(fig, "../escape")
    plt.close(fig)


def test_parallel_jobs_train_the_same_runs(data_root, tmp_path, monkeypatch):
    """--jobs 2: two trainings at once in their own processes give the runs (and top-1) of the sequential run. The
    spawned workers import gv3lite afresh, so a teacher published for this test only would not reach them: both calls
    distil from the offline EfficientNet-Lite0 instead (the plan, made here, hands the workers their recipes)."""
    monkeypatch.setenv("GV3LITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(PRESETS["ghostnetv3"], "teacher", "efficientnet_lite0")
    first = reproduce("smoke", out=tmp_path / "sequential", grids=["kd"], data=data_root, figures=False,
                      command="pytest jobs", log=lambda *a: None)
    result = reproduce("smoke", out=tmp_path, grids=["kd"], data=data_root, figures=False, jobs=2,
                                command="pytest jobs", log=lambda *a: None)
    assert result["trained"] == 2 and result["skipped"] == 0
    sequential = first["runs"].set_index(["grid", "cell"])["top1"]
    for row in result["runs"].itertuples():
        assert abs(row.top1 - sequential[(row.grid, row.cell)]) <= 2.5  # at most one of 40 val images differs
    with pytest.raises(ValueError, match="jobs"):
        reproduce("smoke", out=tmp_path, grids=["kd"], data=data_root, jobs=0)


def test_forest_plot_of_the_4a61a24_quick_results(tmp_path, monkeypatch):
    from gv3lite.figures import plot_forest, savefig
    monkeypatch.setenv("GV3LITE_FIGURES", str(tmp_path))
    table = verdicts(pd.read_csv(OLD_QUICK_RUNS))
    fig = plot_forest(table)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[-1] == "recipe: ghostnetv3 vs conventional (composite)" and len(labels) == len(table) == 7
    assert [t.get_text() for t in fig.axes[0].texts].count("underpowered") == 6
    png = savefig(fig, "forest", budget="quick", command="pytest")
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    with pytest.raises(ValueError, match="no contrasts"):
        plot_forest(table.iloc[:0])


def test_report_reanalyses_the_4a61a24_quick_results(tmp_path):
    from gv3lite.cli import main
    import shutil
    shutil.copy(OLD_QUICK_RUNS, tmp_path / "runs.csv")
    for wall, hour in ((1500.0, 10), (1200.0, 14)):  # a budget finished over two sittings
        append_call(tmp_path, {"started": f"2025-01-01T{hour}:00:00+00:00", "command": "gv3lite reproduce",
                               "git_commit": "abc1234", "wall_seconds": wall, "trained": 9, "skipped": 0,
                               "jobs": 2, "cpu_count": 2, "interrupted": False})
    calls = (tmp_path / "calls.csv").read_bytes()
    assert main(["report", str(tmp_path), "--out", str(tmp_path), "--figures", str(tmp_path / "fig")]) == 0
    report = (tmp_path / "report.md").read_text()
    # the report reads the call log for its header, and never writes it (no call of reproduce)
    assert (tmp_path / "calls.csv").read_bytes() == calls
    assert "; total wall time 45 min 00 s over 2 calls of `gv3lite reproduce` (calls.csv)" in report
    assert "wall time of this call" not in report
    assert "| schedule | ema vs no_ema | ema: False -> True |" in report and "**no effect >= 1 pp**" in report
    assert "| augment | mixup vs basic | mixup_alpha: 0 -> 0.8 | -2.30 -2.70 | -2.50 |" in report
    verdicts = pd.read_csv(tmp_path / "verdicts.csv")
    assert len(verdicts) == 7 and set(verdicts["verdict"]) == {"underpowered", "no effect >= 1 pp"}
    assert (tmp_path / "fig" / "ablation_forest.png").stat().st_size > 5000
    assert not (tmp_path / "fig" / "ablation_learning_curves.png").exists()  # old results: no histories
    assert main(["report", str(tmp_path / "nope")]) == 2
    # by default the re-analysis goes to the git-ignored runs/report/<name>, never into the recorded folder
    (tmp_path / "rec").mkdir()
    shutil.copy(tmp_path / "runs.csv", tmp_path / "rec" / "runs.csv")
    assert main(["report", str(tmp_path / "rec")]) == 0
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == ["runs.csv"]
    assert (repo_root() / "runs" / "report" / "rec" / "report.md").is_file()


def test_one_factor_quick_verdicts_are_the_analysis_of_its_runs():
    """A one-factor study's verdicts.csv (the quick study committed at 542d4c2, kept in tests/fixtures) is what
    gv3lite.stats makes of its runs.csv and predictions.csv.gz: re-analysing them gives the same differences,
    intervals and verdicts (the committed studies of either design: tests/test_publish.py)."""
    folder = Path(__file__).parent / "fixtures" / "ofat_quick_542d4c2"
    runs = pd.read_csv(folder / "runs.csv")
    predictions = pd.read_csv(folder / PREDICTIONS)
    fresh = verdicts(runs, predictions=predictions).set_index(["grid", "cell"])
    committed = pd.read_csv(folder / "verdicts.csv").set_index(["grid", "cell"])
    assert list(fresh.index) == list(committed.index)
    for column in ("diff", "low", "high", "p_holm"):
        assert np.allclose(fresh[column], committed[column], rtol=1e-9, atol=1e-9), column
    assert list(fresh["verdict"]) == list(committed["verdict"])
    # the paired differences behind them come straight from the per-seed top-1 of runs.csv
    top1 = runs.set_index(["grid", "cell", "seed"])["top1"]
    d = top1["augment", "mixup"] - top1["augment", "basic"]
    assert fresh.loc[("augment", "mixup"), "diff"] == pytest.approx(d.mean())
