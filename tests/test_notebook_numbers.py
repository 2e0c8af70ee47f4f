"""Notebooks 06 and 07 show a committed study through ``gv3lite.study.committed.committed_study``: its table is the one
README's Results block and the folder's report.md carry, line for line, and its numbers are verdicts.csv's, for a
study of either design (a factorial study trained by the stand-in, and the committed one-factor studies). The first
screen's forest caption is generated for the committed quick study's design."""
import pandas as pd
import pytest

from gv3lite.schemas import ResultsFileError
from gv3lite.study.committed import committed_study
from gv3lite.study.readme import forest_caption, readme_results
from gv3lite.study.report import table_lines
from gv3lite.utils import repo_root
from gv3lite.verdicts import t_interval

COMMITTED = repo_root() / "results"


def _pp(value: float, spec: str = "+.2f") -> str:
    return format(value + 0.0, spec).replace("-0.00", "+0.00")


def test_a_factorial_study_shows_report_md_s_and_the_readme_s_claims(tmp_path, factorial_study):
    study = factorial_study(tmp_path / "results", "quick")
    committed = committed_study("quick", results=tmp_path / "results")
    assert committed["design"] == "factorial" and committed["label"].startswith("**Loaded, not computed")
    lines = table_lines(committed["table"])
    report = (study / "report.md").read_text().splitlines()
    readme = readme_results(tmp_path / "results")
    assert all(line in report for line in lines) and all(line in readme.splitlines() for line in lines)
    assert committed["scope"] in readme and committed["note"] and committed["note"] in readme
    claims = pd.read_csv(study / "verdicts.csv")
    assert list(committed["table"]["claim"]) == list(claims["claim"])
    ci = t_interval(claims["diff"], claims["se"], claims["df"])
    rows = committed["table"].itertuples(index=False)
    for row, r, low, high in zip(rows, claims.itertuples(), ci["low"], ci["high"]):
        assert row[2] == _pp(r.diff) and row[3] == f"[{_pp(low)}, {_pp(high)}]"             # effect, 95% interval
        assert row[5] == f"[{_pp(r.low)}, {_pp(r.high)}]" and row[6] == f"{100 * (1 - r.level):.3f}%"  # sequential, its level
        assert row[-1] == f"**{r.verdict}**"
    assert committed_study("quick", results=tmp_path / "results", grids=["architectures"]) is None  # no grids
    caption = forest_caption(tmp_path / "results")  # README's first screen: what this design's forest plot draws
    assert "fractional factorial" in caption and "sequential interval" in caption and "ablation_" not in caption
    claims.loc[0, "diff"] += 0.5  # a verdicts.csv its runs do not give is refused, never shown
    claims.to_csv(study / "verdicts.csv", index=False)
    with pytest.raises(ResultsFileError, match="verdicts.csv: claim reparam: recorded diff"):
        committed_study("quick", results=tmp_path / "results")


def test_the_committed_studies_show_the_readme_s_numbers():
    readme = (repo_root() / "README.md").read_text().splitlines()
    shown = 0
    for budget in ("quick", "medium"):
        committed = committed_study(budget)
        if committed is None:
            continue
        shown += 1
        lines = table_lines(committed["table"])
        report = (COMMITTED / budget / "report.md").read_text().splitlines()
        assert all(line in readme for line in lines) and all(line in report for line in lines), budget
        diffs = committed["verdicts"]["diff"]
        column = "effect (pp)" if committed["design"] == "factorial" else "diff (pp)"
        assert list(committed["table"][column]) == [_pp(d) for d in diffs]
        if committed["design"] == "ofat":  # a grid's rows are verdicts.csv's, not recomputed from fewer runs
            grid = committed["verdicts"]["grid"].iloc[-1]
            part = committed_study(budget, grids=[grid])
            assert all(g == grid or f"{grid}/" in same for g, same in zip(part["verdicts"]["grid"],
                                                                        part["verdicts"]["same_as"]))
            assert grid in set(part["verdicts"]["grid"]) and all(line in readme for line in table_lines(part["table"]))
    assert shown
    # the recipe grid's row stands for the architectures grid's GhostNetV2 contrast (the same trainings): kept with it
    for budget in ("quick", "medium"):
        part = committed_study(budget, grids=["architectures"])
        if part is not None and "recipe" in set(part["verdicts"]["grid"]):
            row = part["verdicts"][part["verdicts"]["grid"] == "recipe"].iloc[0]
            assert "architectures/ghostnetv2/ghostnetv3" in row["same_as"]


def test_the_readme_s_forest_caption_is_generated_for_the_committed_quick_study(tmp_path):
    assert forest_caption(COMMITTED) in (repo_root() / "README.md").read_text()
    assert forest_caption(tmp_path / "none").startswith("*No quick study is committed yet")
