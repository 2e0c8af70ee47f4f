"""gv3lite.budgets is the one place budgets are defined: every notebook reads its sizes from it and runs at every
budget name."""
import json
import re

import pytest

from gv3lite import budgets
from gv3lite.utils import repo_root

NOTEBOOKS = sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def code_of(path) -> str:
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")


def test_every_notebook_reads_its_sizes_from_the_budget_module():
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        code = code_of(path)
        # a budget dict of its own ({"smoke": ..., "quick": ...}[BUDGET]) is what broke 8 notebooks at medium
        assert not re.search(r"\{\s*\"smoke\"", code), f"{path.name} defines a budget dict; use gv3lite.budgets"
        for stem in re.findall(r"notebook_sizes\(\"([^\"]+)\"", code):
            assert stem == path.stem, f"{path.name} reads the sizes of {stem}"


@pytest.mark.parametrize("name", budgets.BUDGET_NAMES)
def test_every_notebook_has_sizes_at_every_budget(name):
    for notebook in budgets.NOTEBOOK_SIZES:
        sizes = budgets.notebook_sizes(notebook, name)
        assert sizes and isinstance(sizes, dict)
        if budgets.NOTEBOOK_SIZES[notebook][name] == "quick":
            assert sizes == budgets.notebook_sizes(notebook, "quick")
    assert set(budgets.BUDGETS) == set(budgets.BUDGET_NAMES)


def test_bad_budget_names(monkeypatch):
    with pytest.raises(KeyError, match="notebooks with sizes"):
        budgets.notebook_sizes("99_nope", "smoke")
    with pytest.raises(ValueError, match="choose one of"):
        budgets.notebook_sizes("00_overview", "huge")
    monkeypatch.setenv("GV3LITE_BUDGET", "Medium ")
    assert budgets.budget() == "medium" and budgets.notebook_sizes("00_overview")["images_per_class"] == 2
    monkeypatch.setenv("GV3LITE_BUDGET", "tiny")
    with pytest.raises(ValueError, match="GV3LITE_BUDGET='tiny'"):
        budgets.budget()
