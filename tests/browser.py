"""Helpers for the tests that drive the course in headless Chromium: find the browser, start JupyterLab.

The browser is Debian's ``chromium`` (``apt-get install chromium``) driven by the PyPI ``playwright`` package through
``executable_path``; playwright's own browser download is never used (it cannot work offline). Outside CI a missing
browser skips the tests with the reason; in CI (``CI`` set) it fails them, since ``.ci/run`` installs it.
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
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "runs" / "browser"  # git-ignored
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def chromium_path() -> str:
    """Debian's chromium, or fail (CI) / skip (elsewhere) naming the fix."""
    path = os.environ.get("GV3LITE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    missing = []
    if not path:
        missing.append("the chromium browser (apt-get install chromium, or set GV3LITE_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (make install)")
    if missing:
        reason = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(reason + "; .ci/run installs both", pytrace=False)
        pytest.skip(reason)
    return path


def launch(playwright):
    """A headless Chromium (playwright ``Browser``)."""
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)


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

    def shutdown_kernels(self) -> None:
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
