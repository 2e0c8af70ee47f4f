"""The course as a student meets it: every notebook opened in JupyterLab in headless Chromium and run with
Run All Cells at the smoke budget.

Each notebook is copied to a temporary folder first (JupyterLab serves the copy, so nothing in the repository is
saved over), run through the Run menu, then saved and read back. Asserted per notebook: every code cell ran; no
error output and no stderr block (a traceback, a warning, tqdm's "IProgress not found"); every figure in the saved
outputs is an ``<img>`` the browser decoded (natural width > 0); the last cell printed its ``claim checked`` line.
A screenshot goes to the git-ignored ``runs/browser/``; the wall time of Run All is printed at the end of the
session (pytest's terminal summary).

The suite also runs every notebook under nbval (``--nbval-lax``, pyproject.toml's ``addopts``), which checks only
that each cell runs without error; this run checks what a student sees.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from browser import REPO, SCREENSHOTS, Lab, chromium_path, launch

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
RUN_TIMEOUT_S = 600  # one notebook, Run All to idle; the per-notebook target is 60 s on 2 quiet cores
TIMES = {}  # notebook -> seconds, reported by conftest.pytest_terminal_summary


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    chromium_path()  # skip/fail before starting anything
    root = tmp_path_factory.mktemp("course")
    for nb in NOTEBOOKS:
        shutil.copy2(nb, root / nb.name)
        _show_hidden_inputs(root / nb.name)
    # one torch thread per kernel: the browser and JupyterLab share the 2 cores, and a 2-thread torch op stalls
    # whenever another process holds a core (DEVELOPERS.md, CPU throughput)
    server = Lab(root, tmp_path_factory.mktemp("lab"), root / "jupyterlab.log",
                 env={"GV3LITE_BUDGET": "smoke", "OMP_NUM_THREADS": "1"})
    yield server
    server.close()


def _show_hidden_inputs(path: Path) -> None:
    """Un-collapse the exercise-answer cells of a copy (``metadata.jupyter.source_hidden``): JupyterLab draws no input
    prompt for a collapsed cell, so Run All could not be seen to have run it. The committed notebook keeps them
    collapsed; the book hides them by their ``hide-input`` tag."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        cell.get("metadata", {}).get("jupyter", {}).pop("source_hidden", None)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def _run_all(page) -> None:
    """Run > Run All Cells, as a student does; retried when the click came before the notebook panel was ready
    (no cell queued within 15 s)."""
    for _ in range(3):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        for _ in range(30):
            if any(p != "[ ]:" for p in _prompts(page)):
                return
            page.wait_for_timeout(500)
        page.keyboard.press("Escape")
    raise AssertionError("Run > Run All Cells queued no cell (3 tries)")


def _prompts(page) -> list[str]:
    return page.eval_on_selector_all(".jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent.trim())")


def _wait_run_all(page, n_code: int, timeout: float) -> None:
    """Wait until every code cell shows an execution count (or the run stopped on an error)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        prompts = _prompts(page)
        numbered = [p for p in prompts if p.strip("[]: ").isdigit()]
        busy = any("*" in p for p in prompts)
        stopped = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() \
            and not busy
        if (len(numbered) == n_code and not busy) or stopped:
            return
        page.wait_for_timeout(500)
    raise AssertionError(f"Run All did not finish within {timeout:.0f} s; prompts: {_prompts(page)}")


def _saved_notebook(page, path: Path, before: float) -> dict:
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if path.stat().st_mtime > before:
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:  # caught mid-write
                pass
        time.sleep(0.3)
    raise AssertionError(f"{path.name} was not saved within 30 s")


@pytest.mark.slow
@pytest.mark.parametrize("name", [nb.name for nb in NOTEBOOKS])
def test_notebook_runs_clean_in_jupyterlab(name, lab, browser):
    copy = lab.root / name
    n_code = sum(c["cell_type"] == "code" for c in json.loads(copy.read_text())["cells"])
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    try:
        # ?reset: a fresh workspace, so JupyterLab does not reopen the previous notebook (whose kernel is gone)
        page.goto(f"{lab.url}/lab/tree/{name}?reset", wait_until="domcontentloaded")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
        page.get_by_text("Python 3 (ipykernel) | Idle").first.wait_for(timeout=300_000)  # the kernel is up
        start, t0 = time.time(), time.monotonic()
        _run_all(page)
        try:
            _wait_run_all(page, n_code, RUN_TIMEOUT_S)
        finally:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"{copy.stem}.png"))
        TIMES[name] = time.monotonic() - t0
        nb = _saved_notebook(page, copy, start)
        # the figures the browser shows: every <img> in an output decoded
        images = page.eval_on_selector_all(".jp-OutputArea-output img",
                                           "els => els.map(e => [e.complete, e.naturalWidth])")
    finally:
        page.close()
        lab.shutdown_kernels()

    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    not_run = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    problems = [(i, o.get("ename") or o.get("name"), (o.get("evalue") or "".join(o.get("text", "")))[:300])
                for i, c in enumerate(code) for o in c.get("outputs", [])
                if o["output_type"] == "error" or (o["output_type"] == "stream" and o["name"] == "stderr")]
    assert not problems, f"{name}: error/stderr outputs (code cell index, kind, text): {problems}"
    assert not not_run, f"{name}: code cells {not_run} did not run"
    pngs = sum("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", []))
    assert len(images) == pngs, f"{name}: {pngs} figures in the outputs but {len(images)} <img> in the page"
    assert all(done and width > 0 for done, width in images), f"{name}: figures not decoded: {images}"
    last = "".join("".join(o.get("text", "")) for o in code[-1].get("outputs", []) if o.get("name") == "stdout")
    assert "claim checked" in last, f"{name}: the last cell did not print its 'claim checked' line: {last[:300]!r}"
