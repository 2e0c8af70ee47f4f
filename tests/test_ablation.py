"""Presets, the ablation grids, `gv3lite reproduce` end to end (smoke budget, real Imagenette), resume, report logic,
and the figure-saving contract of `gv3lite.figures`."""
import json
import math

import pandas as pd
import pytest

from gv3lite import ablation
from gv3lite.recipe import PRESET_NOTES, PRESETS, Recipe, preset

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
    assert conv.mixup_alpha > 0 and conv.cutmix_alpha > 0 and conv.auto_augment == "randaugment"
    assert (gv3.num_conv_branches, gv3.use_scale_branch, gv3.use_identity_branch) == (3, True, True)
    assert gv3.teacher is not None and gv3.ema and gv3.mixup_alpha == gv3.cutmix_alpha == 0
    for name in ("conventional", "ghostnetv3"):
        assert set(PRESETS[name]) - {"ema", "drop_rate", "label_smoothing"} <= set(PRESET_NOTES[name]) | {
            "use_scale_branch", "use_identity_branch", "kd_loss", "kd_alpha", "kd_temperature", "kd_mode", "sched"}
    with pytest.raises(KeyError, match="unknown preset"):
        preset("nope")


def test_cli_train_preset():
    from gv3lite.cli import build_parser, recipe_from_args
    args = build_parser().parse_args(["train", "--preset", "conventional", "--epochs", "2"])
    assert recipe_from_args(args) == preset("conventional", epochs=2)


# --------------------------------------------------------------------------------------------------- grids
def test_every_cell_of_every_budget_validates_and_builds():
    from gv3lite.experiment import build_model
    built = set()
    for budget in ablation.BUDGETS:
        items = ablation.plan(budget, seeds=1)
        assert items, budget
        for it in items:
            recipe = it["recipe"].validate()
            assert recipe.img_size == ablation.BUDGETS[budget]["img_size"]
            key = (recipe.model, recipe.num_conv_branches, recipe.use_scale_branch, recipe.use_identity_branch)
            if key not in built:
                model = build_model(recipe, num_classes=10)
                assert sum(p.numel() for p in model.parameters()) > 0
                built.add(key)
    assert len(built) >= 8  # plain / branches / scale / n2 / n3 / n4 and three other architectures


def test_shared_configs_run_once_and_cells_differ():
    items = ablation.plan("quick")
    ids = {(it["grid"], it["cell"], it["seed"]): it["run_id"] for it in items}
    for seed in (0, 1):
        shared = {ids[("recipe", "ghostnetv3", seed)], ids[("reparam", "full", seed)], ids[("kd", "teacher", seed)],
                  ids[("schedule", "ema", seed)]}
        assert len(shared) == 1
        assert ids[("kd", "none", seed)] == ids[("augment", "basic", seed)]
        # no EMA = the EMA run's raw weights; GhostNetV2 + a recipe = GhostNetV3's architecture with its switches
        assert ids[("schedule", "no_ema", seed)] == ids[("schedule", "ema", seed)]
        assert ids[("architectures", "ghostnetv2/conventional", seed)] == ids[("recipe", "conventional", seed)]
        assert ids[("architectures", "ghostnetv2/ghostnetv3", seed)] == ids[("recipe", "ghostnetv3", seed)]
    by_cell = {(it["grid"], it["cell"]): it for it in items if it["seed"] == 0}
    assert not by_cell[("schedule", "no_ema")]["recipe"].ema and by_cell[("schedule", "no_ema")]["trained_as"].ema
    # quick runs the other architectures at width x0.5, full at the paper's x1.0
    assert by_cell[("architectures", "mobilenetv2/ghostnetv3")]["recipe"].model == "mobilenetv2_050_rep"
    full = {(it["grid"], it["cell"]): it["recipe"] for it in ablation.plan("full", ["architectures"], seeds=1)}
    assert full[("architectures", "shufflenetv2/conventional")].model == "shufflenetv2_100"
    assert full[("architectures", "ghostnetv2/ghostnetv3")].model == "ghostnetv3_100"
    assert ids[("recipe", "ghostnetv3", 0)] != ids[("recipe", "ghostnetv3", 1)]
    assert ids[("kd", "none", 0)] != ids[("kd", "teacher", 0)]
    # every grid's baseline and cells have a row (maybe value unknown) in the paper table
    from gv3lite.paper import paper_results
    paper = paper_results()
    for grid, cells in ablation.GRIDS.items():
        for cell in cells:
            paper_cell, model = ablation.paper_key(grid, cell.name)
            rows = paper[(paper["grid"] == grid) & (paper["cell"] == paper_cell)]
            assert len(rows if model is None else rows[rows["model"] == model]), (grid, cell.name)


def test_plan_errors():
    with pytest.raises(KeyError, match="unknown grid"):
        ablation.plan("smoke", grids=["recipe", "nope"])
    with pytest.raises(ValueError, match="unknown budget"):
        ablation.plan("huge")
    with pytest.raises(ValueError, match="at least 1"):
        ablation.plan("smoke", seeds=0)


@pytest.mark.parametrize("grids, message", [
    ([], "no grid given; choose one or more of \\['recipe', 'reparam', 'kd', 'architectures'\\]"),
    (["kd", "kd"], "\\['kd'\\] listed more than once"),
    (["kd", "schedule"], "\\['schedule'\\] have no cells in the 'smoke' budget; grids with cells in it: \\['recipe'"),
])
def test_plan_rejects_empty_repeated_and_cell_less_grids(grids, message):
    with pytest.raises(ValueError, match=message):
        ablation.plan("smoke", grids=grids)
    with pytest.raises(ValueError, match=message):
        ablation.reproduce("smoke", grids=grids, data="/nonexistent")  # fails before data, training or pandas


@pytest.mark.parametrize("flag", ["", ",,", "kd,kd"])
def test_reproduce_cli_rejects_bad_grids(flag, capsys):
    from gv3lite.cli import main
    assert main(["reproduce", "--budget", "smoke", "--grids", flag, "--list"]) == 2
    assert capsys.readouterr().err.startswith("gv3lite reproduce: error: ")


# ------------------------------------------------------------------------------------------ report logic
def test_judge():
    assert ablation.judge(+2.0, 1.0, "better") == "agrees"
    assert ablation.judge(-2.0, 1.0, "worse") == "agrees"
    assert ablation.judge(-2.0, 1.0, "better") == "disagrees"
    assert ablation.judge(+0.5, 1.0, "better") == "inconclusive"
    assert ablation.judge(+5.0, float("nan"), "better") == "inconclusive"  # one seed: no spread
    assert ablation.judge(+5.0, 1.0, "unknown") == "no paper claim"


def _synthetic(rows):
    return pd.DataFrame([{"grid": g, "cell": c, "seed": s, "top1": t, "top5": 90.0, "train_seconds": 1.0,
                          "run_id": f"{g}{c}{s}"} for g, c, s, t in rows])


def test_verdicts_and_report_on_synthetic_results(tmp_path):
    runs = _synthetic([
        ("kd", "none", 0, 50.0), ("kd", "none", 1, 52.0), ("kd", "teacher", 0, 60.0), ("kd", "teacher", 1, 62.0),
        ("augment", "basic", 0, 50.0), ("augment", "basic", 1, 52.0),
        ("augment", "mixup", 0, 57.0), ("augment", "mixup", 1, 59.0),  # paper: worse -> we disagree
        ("augment", "cutmix", 0, 49.0), ("augment", "cutmix", 1, 53.0),  # within the spread
    ])
    table = ablation.verdicts(runs).set_index(["grid", "cell"])
    assert table.loc[("kd", "teacher"), "verdict"] == "agrees"
    assert table.loc[("kd", "teacher"), "diff"] == pytest.approx(10.0)
    assert table.loc[("kd", "teacher"), "spread"] == pytest.approx(math.sqrt(2 + 2))
    assert table.loc[("augment", "mixup"), "verdict"] == "disagrees"
    assert table.loc[("augment", "cutmix"), "verdict"] == "inconclusive"
    assert table.loc[("augment", "cutmix"), "baseline"] == "basic"
    report = ablation.write_report(runs, ablation.verdicts(runs), tmp_path / "report.md", "quick", "cmd").read_text()
    assert "| kd | teacher vs none | +10.00 | 2.00 | 2 / 2 | better | agrees |" in report
    assert "| augment | mixup vs basic | +7.00 |" in report and "disagrees" in report
    assert "inconclusive" in report


# ------------------------------------------------------------------------------------- smoke end to end
@pytest.fixture(scope="module")
def smoke_run(data_root, tmp_path_factory):
    """`reproduce` under the smoke budget into a tmp dir (teacher cache and figures there too)."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("reproduce")
    mp.setenv("GV3LITE_FIGURES", str(tmp / "figures"))
    mp.setenv("GV3LITE_CACHE", str(tmp / "cache"))
    mp.setenv("OMP_NUM_THREADS", "2")
    first = ablation.reproduce("smoke", out=tmp / "results", data=data_root, command="pytest smoke", log=lambda *a: None)
    yield tmp, first, mp
    mp.undo()


def test_smoke_budget_end_to_end(smoke_run):
    tmp, first, _ = smoke_run
    items = ablation.plan("smoke")
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
    assert "ghostnetv3 vs conventional" in report and "teacher vs none" in report and "inconclusive" in report
    for grid in sorted(set(runs["grid"])):
        png = tmp / "figures" / f"ablation_{grid}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    assert json.loads((out / "runs" / runs["run_id"][0] / "result.json").read_text())["epochs"] == 1


def test_smoke_rerun_skips_finished_and_resumes_interrupted(smoke_run, data_root):
    tmp, first, _ = smoke_run
    out = tmp / "results"
    again = ablation.reproduce("smoke", out=out, data=data_root, figures=False, command="pytest smoke",
                               log=lambda *a: None)
    assert again["trained"] == 0 and again["skipped"] == first["trained"]
    assert again["runs"]["top1"].tolist() == first["runs"]["top1"].tolist()
    # --grids limits what is trained and returned; the results files keep every finished run of the budget
    only_kd = ablation.reproduce("smoke", out=out, grids=["kd"], data=data_root, figures=False, log=lambda *a: None)
    assert set(only_kd["runs"]["grid"]) == {"kd"}
    assert len(pd.read_csv(out / "smoke" / "runs.csv")) == len(first["runs"])
    # an interrupted run (checkpoint, no result.json) continues from its checkpoint instead of starting over
    rid = first["runs"]["run_id"].iloc[0]
    (out / "smoke" / "runs" / rid / "result.json").unlink()
    third = ablation.reproduce("smoke", out=out, data=data_root, figures=False, command="pytest smoke",
                               log=lambda *a: None)
    assert (third["trained"], third["resumed"]) == (1, 1)
    assert third["runs"]["top1"].tolist() == first["runs"]["top1"].tolist()


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


def test_parallel_jobs_train_the_same_runs(smoke_run, data_root, tmp_path):
    """--jobs 2: two trainings at once in their own processes give the runs (and top-1) of the sequential run."""
    _, first, _ = smoke_run
    result = ablation.reproduce("smoke", out=tmp_path, grids=["kd"], data=data_root, figures=False, jobs=2,
                                command="pytest jobs", log=lambda *a: None)
    assert result["trained"] == 2 and result["skipped"] == 0
    sequential = first["runs"].set_index(["grid", "cell"])["top1"]
    for row in result["runs"].itertuples():
        assert abs(row.top1 - sequential[(row.grid, row.cell)]) <= 2.5  # at most one of 40 val images differs
    with pytest.raises(ValueError, match="jobs"):
        ablation.reproduce("smoke", out=tmp_path, grids=["kd"], data=data_root, jobs=0)
