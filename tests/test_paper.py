"""Paper labels (issue 22): "paper" only for what the paper states; a difference of two published values is shown as
"derived" (or "checkpoint" for a measurement of the released checkpoint) wherever it appears."""
import re
from collections import namedtuple
from pathlib import Path

import pandas as pd
import pytest

from gv3lite.study.analysis import paper_diffs
from gv3lite.study.report import _paper
from gv3lite.study.report import verdict_lines as _verdict_lines
from gv3lite.figures import plot_forest
from gv3lite.paper import DIFFERENCE_NOTES, KINDS, difference_kind, paper_results

REPO = Path(__file__).resolve().parents[1]
REPO_FILES = ("README.md", "results/quick/report.md", "results/medium/report.md")
Row = namedtuple("Row", "grid cell paper_diff claim")


def _derived_numbers() -> dict:
    """Each source difference the study can show (the recipe and architectures grids' ``paper_diffs``), by grid."""
    return {"recipe": paper_diffs("recipe", "ghostnetv3", "conventional"),
            "architectures": paper_diffs("architectures", "ghostnetv2/ghostnetv3", "ghostnetv2/conventional"),
            "schedule": paper_diffs("schedule", "ema", "no_ema")}


def test_every_row_has_a_kind_and_no_difference_is_a_paper_value():
    table = paper_results()
    assert set(table["kind"]) <= set(KINDS) and not table["kind"].isna().any()
    assert set(table.loc[table["source"].str.contains("PaddleClas/pull/3413"), "kind"]) == {"checkpoint"}
    v2 = table["model"].str.startswith("GhostNetV2 1.") & (table["cell"] == "conventional")
    assert set(table.loc[v2, "kind"]) == {"other_paper"}
    for grid, diffs in _derived_numbers().items():
        assert diffs, grid  # the table still yields these differences
        assert difference_kind(grid) in ("derived", "checkpoint") and grid in DIFFERENCE_NOTES
    assert difference_kind("schedule") == "checkpoint" and difference_kind("recipe") == "derived"


def test_the_verdict_table_labels_derived_and_checkpoint_numbers():
    assert _paper(Row("recipe", "ghostnetv3", "+1.8/+2.2/+2.6", "better")) == "derived: +1.8/+2.2/+2.6"
    assert _paper(Row("schedule", "ema", "+0.2", "better")) == "checkpoint: +0.2"
    assert _paper(Row("kd", "teacher", "", "better")) == "paper: better"
    header = _verdict_lines(pd.DataFrame(columns=["grid"]))[0]
    assert "paper (pp)" not in header


@pytest.mark.parametrize("path", REPO_FILES)
def test_committed_text_never_shows_a_derived_number_under_a_paper_label(path):
    text = (REPO / path).read_text()
    assert "| paper (pp) |" not in text
    for grid, diffs in _derived_numbers().items():
        shown = "/".join(f"{v:+.1f}" for v in diffs)
        for match in re.finditer(re.escape(f"| {shown} |") + "|" + re.escape(f": {shown} |"), text):
            before = text[max(0, match.start() - 12):match.start() + 2]
            assert f"{difference_kind(grid)}: " in before + text[match.start():match.end()], (path, grid, before)


def test_forest_plot_labels_the_source_differences_by_kind():
    table = pd.DataFrame([
        dict(grid="recipe", cell="ghostnetv3", baseline="conventional", diff=1.0, low=-1.0, high=3.0,
             per_seed="+1.0 +0.5 +1.5", paper_diff="+1.8/+2.2/+2.6", claim="better", verdict="underpowered"),
        dict(grid="schedule", cell="ema", baseline="no_ema", diff=0.0, low=-0.2, high=0.2,
             per_seed="+0.1 -0.1", paper_diff="+0.2", claim="better", verdict="no effect >= 1 pp")])
    fig = plot_forest(table)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert not any(label.startswith("paper's difference") for label in labels)
    assert any(label.startswith("derived:") for label in labels) and any(l.startswith("checkpoint:") for l in labels)
    markers = {line.get_marker() for line in fig.axes[0].get_lines() if line.get_mfc() == "none"}
    assert {"D", "s"} <= markers


def test_factorial_forest_plot_shows_paper_values_only_where_the_paper_states_them():
    from gv3lite.figures import plot_claims
    from gv3lite.study.factorial import CLAIMS
    from gv3lite.study.factorial_report import claim_sources, claim_lines

    sources = claim_sources()
    recipe = next(c.name for c in CLAIMS if c.name.startswith("recipe"))
    assert sources[recipe] == {"kind": "derived", "values": paper_diffs("recipe", "ghostnetv3", "conventional")}
    for claim in ("reparam", "kd", "mixup", "cutmix"):  # directions rows of kind paper state; no value
        assert sources[claim]["kind"] == "paper" and "values" not in sources[claim]
        grid, cell, _ = next(c.paper for c in CLAIMS if c.name == claim)
        rows = paper_results(grid)
        assert set(rows.loc[rows["cell"] == cell, "kind"]) >= {"paper"}
    claims = pd.DataFrame([dict(claim=c.name, direction=c.direction, diff=1.0, se=0.5, df=30.0, low=-0.5,
                                high=2.5, level=0.01, verdict="underpowered", decided_at_look=0, mde=3.0)
                           for c in CLAIMS])
    fig = plot_claims(claims, sources)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(label.startswith("derived: ") for label in labels)
    assert [label for label in labels if label.startswith("paper")] == [
        "paper: the direction it states (no value stated)"]
    assert not any(label.startswith("checkpoint") for label in labels)  # no checkpoint number among the claims
    assert "D" in {line.get_marker() for line in fig.axes[0].get_lines() if line.get_mfc() == "none"}
    text = "\n".join(claim_lines(claims))
    shown = "/".join(f"{v:+.1f}" for v in sources[recipe]["values"])
    assert f"| derived: {shown} |" in text and f"paper: {shown}" not in text and text.count("| paper: ") == 4
