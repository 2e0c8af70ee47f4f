"""Composite contrasts and the study's scope (issue 22). The `recipe` and `architectures` contrasts change several
fields at once; wherever a contrast is shown -- report.md, README's results block, the console's claim lines,
reproduction.md, the forest plot's labels, notebooks 06 and 07 -- a composite one carries the label and a
single-ingredient one never does. report.md, the README and notebooks 06/07 say what the study can and cannot say
about the paper's 600-epoch claims (`scope_note`)."""
import json
from pathlib import Path

import pandas as pd
import pytest

from gv3lite.figures import plot_forest
from gv3lite.schemas import read_results
from gv3lite.study.progress import claim_lines
from gv3lite.study.readme import readme_results, split_readme
from gv3lite.study.records import folder_design, read_claims, read_verdicts
from gv3lite.study.report import scope_note, verdict_lines, write_report
from gv3lite.study.reproduction import reproduction_text
from gv3lite.utils import repo_root
from gv3lite.verdicts import COMPOSITE, COMPOSITE_GRIDS, contrast_label

RESULTS = repo_root() / "results"
# a recorded one-factor medium study that holds both composite grids (the committed results/medium until the factorial
# replaces it; its report.md as rendered then)
MEDIUM = Path(__file__).parent / "fixtures" / "ofat_medium_b16b8ab"


def labelled(text: str, table: pd.DataFrame) -> int:
    """Assert that every mention in ``text`` of a composite contrast of ``table`` carries the label and no
    single-ingredient contrast does; return how many composite mentions there are."""
    mentions = 0
    for r in table.itertuples():
        plain, label = f"{r.cell} vs {r.baseline}", contrast_label(r.grid, r.cell, r.baseline)
        if r.grid in COMPOSITE_GRIDS:
            assert text.count(plain) == text.count(label), f"{plain!r} shown without its label ({COMPOSITE})"
            mentions += text.count(plain)
        else:
            assert f"{plain} ({COMPOSITE})" not in text, f"{plain!r} is one ingredient, labelled composite"
    return mentions


@pytest.fixture(scope="module")
def medium():
    table = read_verdicts(MEDIUM / "verdicts.csv")
    assert set(COMPOSITE_GRIDS) <= set(table["grid"]) and len(set(table["grid"]) - set(COMPOSITE_GRIDS)) >= 3
    return read_results(MEDIUM / "runs.csv"), table


def test_contrast_label_marks_the_composite_grids_only():
    assert contrast_label("recipe", "ghostnetv3", "conventional") == "ghostnetv3 vs conventional (composite)"
    assert (contrast_label("architectures", "mobilenetv2/ghostnetv3", "mobilenetv2/conventional")
            == "mobilenetv2/ghostnetv3 vs mobilenetv2/conventional (composite)")
    assert contrast_label("augment", "mixup", "basic") == "mixup vs basic"
    assert set(COMPOSITE_GRIDS) == {"recipe", "architectures"}


def test_every_writer_labels_composite_contrasts(medium, tmp_path):
    runs, table = medium
    n = len(table[table["grid"].isin(COMPOSITE_GRIDS)])
    assert labelled("\n".join(verdict_lines(table)), table) == n                     # report.md's / README's table
    report = write_report(runs, table, tmp_path / "report.md", "medium").read_text()  # report.md
    assert labelled(report, table) == n
    assert labelled("\n".join(claim_lines(table)), table) == n                        # the console, one line per claim
    assert labelled(reproduction_text(MEDIUM, MEDIUM)[0], table) == n                 # reproduction.md (compare)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plot_forest(table)                                                          # the forest plot's row labels
    ticks = "\n".join(t.get_text().replace("\nvs ", " vs ") for t in fig.axes[0].get_yticklabels())  # long: 2 lines
    plt.close(fig)
    assert labelled(ticks, table) == n


def test_the_committed_readme_and_reports_label_composite_contrasts(medium):
    _, table = medium
    assert labelled((MEDIUM / "report.md").read_text(), table) > 0  # the recorded one-factor study's report
    _, block, _ = split_readme((repo_root() / "README.md").read_text())
    assert block == readme_results(RESULTS)
    for budget in ("quick", "medium"):  # each committed study, by its design
        folder = RESULTS / budget
        if not (folder / "verdicts.csv").is_file():
            continue
        if folder_design(folder) == "factorial":  # its one composite claim, the whole recipe, is named so everywhere
            claims = read_claims(folder / "verdicts.csv")["claim"]
            composite = [c for c in claims if c.startswith("recipe")]
            assert composite == ["recipe (composite: GhostNetV3 corner - conventional corner)"]
            assert all(f"({COMPOSITE}" not in c for c in claims if not c.startswith("recipe"))
            for text in (block, (folder / "report.md").read_text()):
                assert f"| {composite[0]} |" in text, budget
        else:
            verdicts = read_verdicts(folder / "verdicts.csv")
            for text in (block, (folder / "report.md").read_text()):
                assert labelled(text, verdicts) > 0, budget


def test_scope_note_is_read_from_the_runs():
    runs = pd.DataFrame({"epochs": [10, 10], "img_size": [48, 48], "images_per_class_train": [300, 300],
                         "tuning": ["exclude"] * 2, "teacher": [None, "imagenette_same_data"]})
    note = scope_note(runs)
    assert "train for 10 epochs at 48 px on 300 training images per class (train/ minus the tuning split)" in note
    assert "ImageNet-1k (1.28 M images, 1,000 classes) at 224 px for 600 epochs (the length iFormer's Table 3 lists " \
           "for GhostNetV3; not read in the paper itself)" in note and "**agrees** does not confirm" in note
    assert "the *differs in* column" in note and "`architectures`" in note  # a one-factor study's composite grids
    factorial = scope_note(runs.assign(grid="factorial"))  # the factorial's one composite claim, by its corners
    assert "The claim marked *(composite)*, `recipe`, compares the design's two corners" in factorial
    assert "differs in" not in factorial and "architectures" not in factorial
    assert "about 80 epochs" in note and "fastai/imagenette" in note and "*(composite)*" in note
    assert "outside data" not in note  # the same-data teacher
    older = scope_note(runs.drop(columns="tuning").assign(teacher="efficientnet_lite0", images_per_class_train=None))
    assert "on all training images of" in older and "efficientnet_lite0" in older and "**outside" in older
    assert "3,791 of the 3,925" in older


def test_report_readme_and_notebooks_state_the_scope(medium, tmp_path):
    runs, table = medium
    note = scope_note(runs)
    assert "6 epochs at 48 px" in note  # the recorded medium study, from its own runs.csv
    assert note in write_report(runs, table, tmp_path / "report.md", "medium").read_text()
    assert note in (MEDIUM / "report.md").read_text()
    for budget in ("quick", "medium"):  # each committed study: its own runs' scope in README and its report.md
        if (RESULTS / budget / "runs.csv").is_file():
            committed = scope_note(read_results(RESULTS / budget / "runs.csv"))
            assert committed in readme_results(RESULTS) and committed in (RESULTS / budget / "report.md").read_text()
    for name in ("06_ablations_vs_paper", "07_beyond_ghostnet"):
        cells = json.loads((repo_root() / "notebooks" / f"{name}.ipynb").read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        assert "scope_note(runs)" in code and "contrast_label(" in code, name  # tables name contrasts with it
        assert "composite" in text and "600 epochs" in text and "can and cannot say" in text, name
