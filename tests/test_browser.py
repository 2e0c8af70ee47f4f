"""The course as a student meets it: every notebook opened in JupyterLab in headless Chromium and run with
Run All Cells at the smoke budget.

Each notebook is copied to a temporary folder first (JupyterLab serves the copy, so nothing in the repository is
saved over), run through the Run menu, then saved and read back (``browser.run_notebook``, which
``benchmarks/notebook_times.py`` also uses to time every notebook at a budget). Asserted per notebook: every code
cell ran; no error output and no stderr block (a traceback, a warning, tqdm's "IProgress not found"); every figure in
the saved outputs is an ``<img>`` the browser decoded (natural width > 0); the last cell printed its ``claim checked``
line.
A screenshot goes to the git-ignored ``runs/browser/``; the wall time of Run All is printed at the end of the
session (pytest's terminal summary).

The suite also runs every notebook under nbval (``--nbval-lax``, pyproject.toml's ``addopts``), which checks only
that each cell runs without error; this run checks what a student sees.
"""
from __future__ import annotations

import pytest

from browser import NOTEBOOKS, Lab, chromium_path, code_cells, copy_notebooks, error_outputs, last_stdout, launch, \
    run_notebook

RUN_TIMEOUT_S = 600  # one notebook, Run All to idle; the per-notebook target is 60 s on 2 quiet cores
TIMES = {}  # notebook -> seconds, reported by conftest.pytest_terminal_summary


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    chromium_path()  # skip/fail before starting anything
    root = tmp_path_factory.mktemp("course")
    copy_notebooks(NOTEBOOKS, root)
    # one torch thread per kernel: the browser and JupyterLab share the 2 cores, and a 2-thread torch op stalls
    # whenever another process holds a core (DEVELOPERS.md, CPU throughput)
    server = Lab(root, tmp_path_factory.mktemp("lab"), root / "jupyterlab.log",
                 env={"GV3LITE_BUDGET": "smoke", "OMP_NUM_THREADS": "1"})
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", [nb.name for nb in NOTEBOOKS])
def test_notebook_runs_clean_in_jupyterlab(name, lab, browser):
    result = run_notebook(lab, browser, name, RUN_TIMEOUT_S)
    TIMES[name] = result.seconds
    nb, images = result.notebook, result.images
    code = code_cells(nb)
    not_run = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    problems = error_outputs(nb, stderr=True)
    assert not problems, f"{name}: error/stderr outputs (code cell index, kind, text): {problems}"
    assert not not_run, f"{name}: code cells {not_run} did not run"
    pngs = sum("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", []))
    assert len(images) == pngs, f"{name}: {pngs} figures in the outputs but {len(images)} <img> in the page"
    assert all(done and width > 0 for done, width in images), f"{name}: figures not decoded: {images}"
    last = last_stdout(nb)
    assert "claim checked" in last, f"{name}: the last cell did not print its 'claim checked' line: {last[:300]!r}"
