"""README.md's generated Results block (`gv3lite readme`, `gv3lite.readme_results`) and the call log
(calls.csv) it reads the wall time from. No training: the blocks are rendered from the committed results."""
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats as sps

from gv3lite.cli import main
from gv3lite.study import runner
from gv3lite.study.plan import complete_grids, plan, recorded_grids
from gv3lite.study.provenance import portable_command
from gv3lite.study.readme import README_BEGIN, README_END, readme_results, render_readme, split_readme
from gv3lite.study.records import CALL_COLUMNS, append_call, read_calls, read_verdicts
from gv3lite.study.report import duration, sizing_note
from gv3lite.study.runner import reproduce
from gv3lite.utils import repo_root

COMMITTED = repo_root() / "results"
OFAT_QUICK = Path(__file__).parent / "fixtures" / "ofat_quick_542d4c2"  # a recorded one-factor quick study


def _call(wall_seconds, interrupted=False, trained=3, started="2025-01-01T10:00:00+00:00"):
    return {"started": started, "command": "gv3lite reproduce --budget medium",
            "git_commit": "abc1234", "wall_seconds": wall_seconds, "trained": trained, "skipped": 0, "jobs": 2, "cpu_count": 2,
            "interrupted": interrupted}


def _results(tmp_path, budgets):
    """A results root whose budget folders hold copies of a recorded one-factor quick study's runs.csv and
    verdicts.csv (the committed results/quick until the factorial replaced it)."""
    root = tmp_path / "results"
    for budget in budgets:
        (root / budget).mkdir(parents=True)
        for name in ("runs.csv", "verdicts.csv"):
            shutil.copy(OFAT_QUICK / name, root / budget / name)
    return root


def test_the_committed_readme_block_is_generated_from_the_committed_results():
    text = (repo_root() / "README.md").read_text()
    _, block, _ = split_readme(text)
    assert block == readme_results(COMMITTED), "README.md is stale: run `gv3lite readme` and commit it"
    assert render_readme(text, COMMITTED) == text, "README.md's forest caption is stale: run `gv3lite readme`"
    assert "**quick budget**" in block


def test_readme_results_gives_provenance_wall_time_and_the_verdict_table(tmp_path):
    root = _results(tmp_path, ["medium", "quick"])
    append_call(root / "medium", _call(3000.0, interrupted=True))
    calls = append_call(root / "medium", _call(4530.0, started="2025-01-01T11:00:00+00:00"))  # after the first
    assert len(calls) == 2 and list(calls.columns) == list(CALL_COLUMNS)
    text = readme_results(root)
    quick, medium = text.split("**medium budget**")  # quick first, then medium
    assert quick.startswith("**quick budget**")
    assert "wall time not recorded (no calls.csv)" in quick
    assert "total wall time 2 h 05 min over 2 calls of `gv3lite reproduce` (1 interrupted) (calls.csv)" in medium
    runs = pd.read_csv(root / "quick" / "runs.csv")
    table = pd.read_csv(root / "quick" / "verdicts.csv")
    commits = ", ".join(sorted(set(runs["git_commit"].astype(str))))
    assert f"code at commit {commits}; {runs['run_id'].nunique()} trainings, {runs['seed'].nunique()} seeds" in quick
    assert f"Command `{portable_command(runs['command'].iloc[0])}`" in quick and "--data imagenette2-224 " in quick
    complete = recorded_grids(runs, "quick")  # by run id, or by cell for a study of an earlier plan
    assert "architectures" not in complete  # make main leaves it out; only its cells shared with the recipe grid
    planned = len({it["run_id"] for it in plan("quick", complete)})
    assert "not in these results: the architectures grid(s)" in quick
    assert f"of the {planned} trainings the current plan has for its grids" in quick
    rows = [line for line in quick.splitlines() if line.startswith("| ") and "**" in line]
    assert len(rows) == len(table)
    # one row: diff, 95% interval, half-width and Holm p formatted from verdicts.csv, as in report.md
    r = table.iloc[0]
    assert (f"| {r['diff']:+.2f} | [{r['low']:+.2f}, {r['high']:+.2f}] | {(r['high'] - r['low']) / 2:.2f} "
            f"| {r['p_holm']:.3f} |") in rows[0]
    assert rows[0].endswith(f"| **{r['verdict']}** |")


def test_readme_results_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        readme_results(tmp_path / "nope")
    assert readme_results(tmp_path).startswith("No ablation results recorded")
    root = _results(tmp_path, ["quick"])
    (root / "quick" / "verdicts.csv").unlink()
    with pytest.raises(FileNotFoundError, match="verdicts.csv does not exist; write it with `gv3lite report"):
        readme_results(root)


def test_readme_command_replaces_the_block_and_check_detects_an_edit(tmp_path, capsys):
    head, _, tail = split_readme((repo_root() / "README.md").read_text())
    readme = tmp_path / "README.md"
    readme.write_text(head + "- hand-typed: 41 min 45 s\n" + tail)
    root = _results(tmp_path, ["quick"])
    args = ["readme", "--results", str(root), "--readme", str(readme)]
    assert main([*args, "--check"]) == 1
    err = capsys.readouterr().err
    assert "differs from what `gv3lite readme` generates" in err and "-- hand-typed: 41 min 45 s" in err
    assert readme.read_text() == head + "- hand-typed: 41 min 45 s\n" + tail  # --check changes nothing
    assert main(args) == 0
    # only the block changed, and the forest caption with it (it names the study's design)
    assert readme.read_text() == render_readme(head + readme_results(root) + tail, root)
    assert main([*args, "--check"]) == 0
    assert main(args) == 0 and "up to date" in capsys.readouterr().out
    # a number edited by hand inside the block
    text = readme.read_text()
    edited = re.sub(r"\| ([+-]\d+\.\d\d) \|", lambda m: f"| {float(m.group(1)) + 1:+.2f} |", text, count=1)
    assert edited != text
    readme.write_text(edited)
    assert main([*args, "--check"]) == 1
    assert readme.read_text() == edited


@pytest.mark.parametrize("text, found", [
    ("# README\n\n## Results\n\nnothing here\n", "found 0 start and 0 end"),
    (f"{README_END}\n{README_BEGIN}\n", "the end before the start"),
    (f"{README_BEGIN}\n{README_END}\n{README_BEGIN}\n", "found 2 start and 1 end"),
])
def test_missing_or_misplaced_markers_are_a_clear_error(tmp_path, capsys, text, found):
    with pytest.raises(ValueError, match=found):
        split_readme(text)
    readme = tmp_path / "README.md"
    readme.write_text(text)
    assert main(["readme", "--results", str(COMMITTED), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gv3lite readme: error: ") and README_BEGIN in err and README_END in err
    assert readme.read_text() == text
    assert main(["readme", "--readme", str(tmp_path / "missing.md")]) == 2
    assert "missing.md does not exist" in capsys.readouterr().err


def test_an_interrupted_reproduce_call_is_logged(tmp_path, make_image_root, monkeypatch):
    """Ctrl-C during the teacher pass or the trainings: the call still gets its row in calls.csv (no training here)."""
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "prepare_teachers", interrupt)
    with pytest.raises(KeyboardInterrupt):
        reproduce("smoke", out=tmp_path, grids=["kd"], data=make_image_root(), command="pytest interrupt",
                           log=lambda *a: None)
    calls = read_calls(tmp_path / "smoke")
    assert len(calls) == 1
    row = calls.iloc[0]
    assert (row["command"], row["trained"], row["skipped"], row["jobs"]) == ("pytest interrupt", 0, 0, 1)
    assert bool(row["interrupted"]) and row["wall_seconds"] >= 0 and row["started"].endswith("+00:00")
    assert not (tmp_path / "smoke" / "runs.csv").exists()


def _committed_ids(items, runs):
    """``items`` (a plan) with each run id replaced by the committed study's run id of the same (grid, cell, seed):
    the plan the committed study was trained with, whose older recipes hash differently (issue 22 added the
    same-data teacher and the tuning split); an item without a committed row keeps its id."""
    ids = {(g, c, s): r for g, c, s, r in zip(runs["grid"], runs["cell"], runs["seed"], runs["run_id"])}
    return [{**it, "run_id": ids.get((it["grid"], it["cell"], it["seed"]), it["run_id"])} for it in items]


def test_a_grid_is_complete_only_when_all_its_planned_trainings_are_recorded():
    runs = pd.read_csv(OFAT_QUICK / "runs.csv")
    made = ["recipe", "reparam", "kd", "kd_control", "augment", "schedule"]   # make main's grids
    items = _committed_ids(plan("quick"), runs)
    assert complete_grids(runs, "quick", items) == made  # architectures: only the rows shared with recipe
    assert recorded_grids(runs, "quick") == made  # the same from the cells, whichever plan the runs were made with
    kd_none = {it["run_id"] for it in items if it["grid"] == "kd" and it["cell"] == "none" and it["seed"] == 2}
    assert complete_grids(runs[~runs["run_id"].isin(kd_none)], "quick", items) == [g for g in made if g != "kd"]
    one_seed = _committed_ids(plan("quick", ["kd"], seeds=1), runs)
    assert complete_grids(runs[runs["seed"] == 0], "quick", one_seed) == ["kd"]
    assert complete_grids(runs.iloc[:0], "quick") == []


def test_sizing_note_gives_the_half_width_reached_and_the_seeds_the_target_needs():
    runs = pd.read_csv(OFAT_QUICK / "runs.csv")
    table = read_verdicts(OFAT_QUICK / "verdicts.csv")
    calls = read_calls(OFAT_QUICK)
    note = sizing_note(table, "quick", runs, calls)
    between = table[~table["method"].str.startswith("within-run")]
    half = (between["high"] - between["low"]) / 2
    assert f"±{half.min():.2f}–{half.max():.2f} pp over {len(between)} between-run contrasts (not met)" in note
    need = int(re.search(r"needs (\d+) seeds per cell", note).group(1))
    for r in between.itertuples():  # every contrast reaches the target at `need` seeds (df grow as with 3 seeds)
        assert sps.t.ppf(0.975, r.df / 2 * (need - 1)) * r.se * 3 ** 0.5 / need ** 0.5 <= 2.0, r
    widths = [sps.t.ppf(0.975, r.df / 2 * (need - 2)) * r.se * 3 ** 0.5 / (need - 1) ** 0.5 for r in between.itertuples()]
    assert max(widths) > 2.0  # and one of them does not at one seed fewer
    per = calls["wall_seconds"].sum() / calls["trained"].sum()
    assert f"{7 * need} trainings for the grids recorded here" in note  # 7 distinct cells in make main's grids
    assert f"about {duration(7 * need * per)}" in note
    narrow = table.assign(low=table["diff"] - 0.5, high=table["diff"] + 0.5)
    assert sizing_note(narrow, "quick", runs).endswith("(met).")
    assert sizing_note(table, "full", runs) == ""            # no target before a GPU measurement
    assert sizing_note(table[table["method"].str.startswith("within-run")], "quick", runs) == ""


def test_a_factorial_study_gets_its_claims_in_the_readme_block_checked_against_its_runs(tmp_path, factorial_study,
                                                                                        capsys):
    study = factorial_study(tmp_path / "results", "quick")
    claims = pd.read_csv(study / "verdicts.csv")
    text = readme_results(tmp_path / "results")
    assert text.startswith("**quick budget**") and "replicated 2^(6-2) fractional factorial (I = +ABEF" in text
    assert f"Verdicts of the {len(claims)} declared claims" in text and "| reparam | better |" in text
    assert "95% half-width target of the quick budget: ±2 pp; reached ±" in text and "**Trained by" not in text
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_BEGIN}\n{README_END}\n")
    args = ["readme", "--results", str(tmp_path / "results"), "--readme", str(readme)]
    assert main(args) == 0 and main([*args, "--check"]) == 0
    claims.loc[0, "diff"] += 0.5  # a verdicts.csv the runs do not give
    claims.to_csv(study / "verdicts.csv", index=False)
    assert main([*args, "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "verdicts.csv: claim reparam: recorded diff" in err and "gv3lite report" in err
