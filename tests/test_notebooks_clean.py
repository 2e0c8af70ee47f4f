"""Every committed notebook is clean: no outputs or execution counts, the ``python3`` kernelspec, a cell tagged
``parameters`` that reads ``GV3LITE_BUDGET``, and a last code cell that checks the notebook's claim with asserts.

(Running the notebooks is nbval's job: ``pytest`` collects ``notebooks/*.ipynb`` with ``--nbval-lax``.)
"""
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"
    names = [nb.name for nb in NOTEBOOKS]
    assert all(name[:2].isdigit() and name[2] == "_" for name in names), f"name notebooks NN_topic.ipynb: {names}"


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.name)
def notebook(request):
    return request.param.name, json.loads(request.param.read_text())


def test_no_outputs(notebook):
    name, nb = notebook
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{name}: cells {dirty} hold outputs/execution counts; clear them " \
                      "(jupyter nbconvert --clear-output --inplace notebooks/*.ipynb)"


def test_kernelspec_python3(notebook):
    name, nb = notebook
    assert nb.get("metadata", {}).get("kernelspec", {}).get("name") == "python3", f"{name}: kernelspec must be python3"


def test_title_and_parameters_cell(notebook):
    name, nb = notebook
    first = "".join(nb["cells"][0]["source"])
    assert nb["cells"][0]["cell_type"] == "markdown" and first.startswith("# "), f"{name}: start with an H1 title"
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0]["cell_type"] == "code", f"{name}: needs exactly one `parameters` code cell"
    assert "GV3LITE_BUDGET" in "".join(tagged[0]["source"]), f"{name}: the parameters cell must read GV3LITE_BUDGET"


def test_ends_with_claim_check(notebook):
    name, nb = notebook
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    last = "".join(code[-1]["source"])
    assert "assert " in last, f"{name}: the last code cell must check the notebook's claim with asserts"
