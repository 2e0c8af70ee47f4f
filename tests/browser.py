"""Helpers that drive the course in headless Chromium: find the browser, start JupyterLab, Run All of one notebook.

Used by the browser tests (``tests/test_browser.py``, ``tests/test_book.py``) and by ``benchmarks/notebook_times.py``
(which imports this file by path: it is test and benchmark tooling, not part of the package).

The browser is Debian's ``chromium`` (``apt-get install chromium``) driven by the PyPI ``playwright`` package through
``executable_path``; playwright's own browser download is never used (it cannot work offline). Outside CI a missing
browser skips the tests with the reason; in CI (``CI`` set) it fails them, since ``.ci/run`` installs it.

`run_notebook` is Run All as a student does it: the notebook, a copy in the folder JupyterLab serves (`copy_notebooks`:
nothing in the repository is saved over), opened in a fresh page, run through the Run menu, saved and read back.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "runs" / "browser"  # git-ignored
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def missing_browser() -> tuple[str | None, list[str]]:
    """(path of Debian's chromium or None, what is missing: the browser and/or the playwright package)."""
    path = os.environ.get("GV3LITE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    missing = []
    if not path:
        missing.append("the chromium browser (apt-get install chromium, or set GV3LITE_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (make install)")
    return path, missing


def chromium_path() -> str:
    """Debian's chromium, or fail (CI) / skip (elsewhere) naming the fix."""
    import pytest
    path, missing = missing_browser()
    if missing:
        reason = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(reason + "; .ci/run installs both", pytrace=False)
        pytest.skip(reason)
    return path


def launch(playwright, executable: str | None = None):
    """A headless Chromium (playwright ``Browser``): ``executable``, or `chromium_path`."""
    return playwright.chromium.launch(executable_path=executable or chromium_path(), headless=True, args=CHROMIUM_ARGS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200; raise ``RuntimeError`` after ``timeout`` s or when ``proc`` has died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


class Lab:
    """JupyterLab serving ``root`` on 127.0.0.1 with an empty token; settings and workspaces in a temporary folder,
    notebooks rendered whole (no windowing: every cell is in the page), no news or update checks."""

    def __init__(self, root: Path, settings: Path, log: Path, env: dict | None = None):
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        user = settings / "user"
        for plugin, values in {
            "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
            "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
            "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
        }.items():
            path = user / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = {**os.environ, **(env or {}), "JUPYTERLAB_SETTINGS_DIR": str(user),
               "JUPYTERLAB_WORKSPACES_DIR": str(settings / "workspaces")}
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
             "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root}",
             "--ServerApp.disable_check_xsrf=True", "--ServerApp.quit_button=False", "--allow-root"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=root)
        wait_http(f"{self.url}/api/status", proc=self.proc)

    def api(self, method: str, path: str):
        req = urllib.request.Request(f"{self.url}{path}", method=method)
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self, interrupt: bool = False) -> None:
        """Close every session and kernel; ``interrupt``: interrupt each kernel first (a KeyboardInterrupt in the
        running cell, so it can clean up) and give it 5 s."""
        if interrupt:
            for kernel in self.api("GET", "/api/kernels"):
                self.api("POST", f"/api/kernels/{kernel['id']}/interrupt")
            time.sleep(5)
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}")
        for kernel in self.api("GET", "/api/kernels"):
            self.api("DELETE", f"/api/kernels/{kernel['id']}")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def copy_notebooks(notebooks, root: Path) -> None:
    """Copy ``notebooks`` (paths) into ``root``, the folder JupyterLab will serve, with hidden inputs shown."""
    for nb in notebooks:
        shutil.copy2(nb, root / nb.name)
        show_hidden_inputs(root / nb.name)


def show_hidden_inputs(path: Path) -> None:
    """Un-collapse the exercise-answer cells of a copy (``metadata.jupyter.source_hidden``): JupyterLab draws no input
    prompt for a collapsed cell, so Run All could not be seen to have run it. The committed notebook keeps them
    collapsed; the book hides them by their ``hide-input`` tag."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        cell.get("metadata", {}).get("jupyter", {}).pop("source_hidden", None)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


class RunAllTimeout(AssertionError):
    """Run All did not finish within its timeout; ``prompts`` are the code cells' prompts at that moment."""

    def __init__(self, message: str, prompts: list[str]):
        super().__init__(message)
        self.prompts = prompts


def run_all(page) -> None:
    """Run > Run All Cells, as a student does; retried when the click came before the notebook panel was ready
    (no cell queued within 15 s)."""
    for _ in range(3):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        for _ in range(30):
            if any(p != "[ ]:" for p in prompts(page)):
                return
            page.wait_for_timeout(500)
        page.keyboard.press("Escape")
    raise AssertionError("Run > Run All Cells queued no cell (3 tries)")


def prompts(page) -> list[str]:
    return page.eval_on_selector_all(".jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent.trim())")


def wait_run_all(page, n_code: int, timeout: float) -> None:
    """Wait until every code cell shows an execution count (or the run stopped on an error); `RunAllTimeout` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = prompts(page)
        numbered = [p for p in shown if p.strip("[]: ").isdigit()]
        busy = any("*" in p for p in shown)
        stopped = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() \
            and not busy
        if (len(numbered) == n_code and not busy) or stopped:
            return
        page.wait_for_timeout(500)
    shown = prompts(page)
    raise RunAllTimeout(f"Run All did not finish within {timeout:.0f} s; prompts: {shown}", shown)


def saved_notebook(page, path: Path, before: float) -> dict:
    """Save (Ctrl+S) and read back the notebook at ``path`` once its mtime is past ``before`` (30 s at most)."""
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


@dataclass
class RunAll:
    """One Run All: its wall ``seconds`` (the click to the last cell's end), the ``notebook`` as saved (outputs
    included) and the page's output ``images`` as (complete, naturalWidth) pairs."""
    seconds: float
    notebook: dict
    images: list = field(default_factory=list)


def run_notebook(lab: Lab, browser, name: str, timeout: float, screenshots: Path = SCREENSHOTS) -> RunAll:
    """Open notebook ``name`` (served by ``lab``) in a fresh page of ``browser``, wait for its kernel, Run All, wait
    until every code cell ran or the run stopped on an error, save it and read it back. A screenshot goes to
    ``screenshots/<stem>.png``. The page is closed and every kernel shut down afterwards, also on failure (a kernel
    still running after ``timeout`` s is interrupted first). Raises `RunAllTimeout`, or ``AssertionError`` when the
    notebook could not be run or saved."""
    copy = lab.root / name
    n_code = sum(c["cell_type"] == "code" for c in json.loads(copy.read_text())["cells"])
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    timed_out = False
    try:
        # ?reset: a fresh workspace, so JupyterLab does not reopen the previous notebook (whose kernel is gone)
        page.goto(f"{lab.url}/lab/tree/{name}?reset", wait_until="domcontentloaded")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
        page.get_by_text("Python 3 (ipykernel) | Idle").first.wait_for(timeout=300_000)  # the kernel is up
        start, t0 = time.time(), time.monotonic()
        run_all(page)
        try:
            wait_run_all(page, n_code, timeout)
        except RunAllTimeout:
            timed_out = True
            raise
        finally:
            screenshots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshots / f"{copy.stem}.png"))
        seconds = time.monotonic() - t0
        nb = saved_notebook(page, copy, start)
        # the figures the browser shows: every <img> in an output
        images = page.eval_on_selector_all(".jp-OutputArea-output img",
                                           "els => els.map(e => [e.complete, e.naturalWidth])")
    finally:
        page.close()
        lab.shutdown_kernels(interrupt=timed_out)
    return RunAll(seconds, nb, images)


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def error_outputs(nb: dict, stderr: bool = False) -> list[tuple[int, str, str]]:
    """(code cell index, ename or stream name, evalue or text[:300]) of every error output; with ``stderr`` also every
    stderr stream block (a warning, a progress bar)."""
    return [(i, o.get("ename") or o.get("name"), (o.get("evalue") or "".join(o.get("text", "")))[:300])
            for i, c in enumerate(code_cells(nb)) for o in c.get("outputs", [])
            if o["output_type"] == "error" or (stderr and o["output_type"] == "stream" and o["name"] == "stderr")]


def last_stdout(nb: dict) -> str:
    """What the last code cell printed to stdout (where each notebook prints its ``claim checked`` line)."""
    outputs = code_cells(nb)[-1].get("outputs", [])
    return "".join("".join(o.get("text", "")) for o in outputs if o.get("name") == "stdout")
