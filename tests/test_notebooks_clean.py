"""Every committed notebook is clean: no outputs or execution counts, the ``python3`` kernelspec, a cell tagged
``parameters`` that reads ``GV3LITE_BUDGET``, and a last code cell that checks the notebook's claim with asserts.

(Running the notebooks is nbval's job (``--nbval-lax``, pyproject.toml) and tests/test_browser.py's: JupyterLab in
headless Chromium, Run All Cells.)
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


def test_saved_as_jupyterlab_saves_it(notebook):
    """Committed in the form JupyterLab writes (its full ``language_info``, minus the kernel's Python patch version
    that the nbstripout filter drops), so opening a notebook changes nothing that git sees."""
    name, nb = notebook
    info = nb.get("metadata", {}).get("language_info", {})
    expected = {"codemirror_mode", "file_extension", "mimetype", "name", "nbconvert_exporter", "pygments_lexer"}
    assert set(info) == expected, f"{name}: language_info keys {sorted(info)}; open and save it in JupyterLab " \
                                  "with the nbstripout filter installed (make install), then commit"


def test_outputs_are_kept_out_of_git_by_nbstripout():
    attributes = (NOTEBOOKS[0].parent.parent / ".gitattributes").read_text()
    assert "*.ipynb filter=nbstripout" in attributes


def test_claim_check_prints_its_line(notebook):
    name, nb = notebook
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert 'print(f"claim checked' in "".join(code[-1]["source"]) or 'print("claim checked' in "".join(
        code[-1]["source"]), f"{name}: the last cell must print a line starting 'claim checked' (the browser test reads it)"


def test_jupyter_save_hook_keeps_a_run_notebook_identical_to_the_committed_one(tmp_path):
    """``etc/jupyter/jupyter_server_config.py`` (installed into the venv by ``make install``): JupyterLab saving a run
    notebook of this repository writes exactly the committed bytes (so ``git status`` stays clean), while a notebook
    outside an nbstripout-filtered work tree keeps its outputs."""
    import runpy
    import shutil
    import types

    from jupyter_server.services.contents.filemanager import FileContentsManager

    repo = NOTEBOOKS[0].parent.parent
    config = types.SimpleNamespace(FileContentsManager=types.SimpleNamespace())
    runpy.run_path(str(repo / "etc" / "jupyter" / "jupyter_server_config.py"), init_globals={"c": config})
    hook = config.FileContentsManager.pre_save_hook
    shutil.copytree(repo / "notebooks", tmp_path / "repo" / "notebooks")
    shutil.copy(repo / ".gitattributes", tmp_path / "repo" / ".gitattributes")
    (tmp_path / "repo" / ".git").mkdir()
    shutil.copy(NOTEBOOKS[0], tmp_path / "elsewhere.ipynb")
    for root, rel in [(tmp_path / "repo", f"notebooks/{p.name}") for p in NOTEBOOKS] + [(tmp_path, "elsewhere.ipynb")]:
        manager = FileContentsManager(root_dir=str(root), pre_save_hook=hook)
        nb = manager.get(rel)["content"]
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "ran\n"}]
                cell["execution_count"] = 1
        nb["metadata"].setdefault("language_info", {})["version"] = "3.11.7"  # what a running kernel adds
        manager.save({"type": "notebook", "format": "json", "content": nb}, rel)
        saved = (root / rel).read_bytes()
        if rel == "elsewhere.ipynb":
            assert b'"ran\\n"' in saved, "a notebook outside the repository must keep its outputs"
        else:
            assert saved == (repo / rel).read_bytes(), f"{rel}: saving it after a run changed the committed bytes"
