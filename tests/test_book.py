"""The course as a static web site (``make book``): every page of the built book opens in headless Chromium, every
figure on it loads, and its equations are typeset offline.

The equations: MathJax 3 is served by the book itself (``_static/mathjax``, copied there by the
``sphinx-mathjax-offline`` extension named in ``notebooks/_config.yml``), never from a CDN; every notebook page shows
at least one typeset equation (``mjx-container``) and no raw TeX delimiters (``$$``, ``\\(``, ``\\[``) in its text
outside code cells.

The book is served from ``build/book/_build/html`` (or ``GV3LITE_BOOK``) by a local HTTP server on 127.0.0.1.
When no book has been built the test is skipped with the command that builds it; ``make book`` builds it and then
runs this test.
"""
from __future__ import annotations

import functools
import json
import http.server
import os
import threading
from pathlib import Path

import pytest

from browser import REPO, SCREENSHOTS, chromium_path, free_port, launch

BOOK = Path(os.environ.get("GV3LITE_BOOK") or REPO / "build" / "book" / "_build" / "html")
NOTEBOOKS = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def site():
    if not (BOOK / "index.html").is_file():
        pytest.skip(f"no built book at {BOOK}; run `make book`")
    chromium_path()
    handler = functools.partial(QuietHandler, directory=str(BOOK))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


# the page's text outside code cells and typeset math, after MathJax's first typesetting pass has finished
MATH_STATE = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const article = document.querySelector('article').cloneNode(true);
  article.querySelectorAll('.cell, pre, code, mjx-container, script').forEach(e => e.remove());
  const scripts = [...document.querySelectorAll('script[src*="mathjax"]')].map(e => e.src);
  return {typeset: document.querySelectorAll('article mjx-container').length, text: article.textContent,
          scripts: scripts};
}"""


def _math_problems(page, site: str, name: str) -> list[str]:
    """What is wrong with a page's equations: MathJax not from the site, nothing typeset, raw TeX left in the text."""
    state = page.evaluate(MATH_STATE)
    problems = []
    if not state["scripts"] or not all(src.startswith(site) for src in state["scripts"]):
        problems.append(f"{name}.html: MathJax must be served by the book, got scripts {state['scripts']}")
    if state["typeset"] < 1:
        problems.append(f"{name}.html: no typeset equation (every notebook shows at least one; mjx-container)")
    raw = [d for d in ("$$", "\\(", "\\[") if d in state["text"]]
    if raw:
        at = state["text"].find(raw[0])
        problems.append(f"{name}.html: raw TeX {raw} in the page text: {state['text'][max(0, at - 60):at + 60]!r}")
    return problems


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_every_page_opens_every_figure_loads_and_equations_render(site):
    from playwright.sync_api import sync_playwright
    assert sorted(p.stem for p in BOOK.glob("[0-9][0-9]_*.html")) == NOTEBOOKS, "a notebook is missing from the book"
    failed_runs = sorted(p.name for p in (BOOK / "reports").glob("*.err.log"))
    assert not failed_runs, f"notebooks failed while the book was built: {failed_runs} (see {BOOK / 'reports'})"
    problems, figures = [], {}
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        failed = []
        # the book's own files must all load; CDN scripts (the widget renderer) cannot load offline and only add live
        # widgets, so they are not counted; MathJax is one of the book's own files
        page.on("requestfailed", lambda r: failed.append(r.url) if r.url.startswith(site) else None)
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        for name in ["index", *NOTEBOOKS]:
            failed.clear()
            response = page.goto(f"{site}/{name}.html", wait_until="load")
            if response is None or response.status != 200:
                problems.append(f"{name}.html: HTTP {response and response.status}")
                continue
            title = page.locator("h1").first.text_content() or ""
            images = page.eval_on_selector_all("article img", "els => els.map(e => [e.src, e.complete, e.naturalWidth])")
            broken = [src for src, done, width in images if not (done and width > 0)]
            figures[name] = len(images)
            if broken or failed or not title.strip():
                problems.append(f"{name}.html: title {title!r}, broken images {broken}, failed requests {failed}")
            if name != "index":
                problems += _math_problems(page, site, name)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"book_{name}.png"))
        browser.close()
    assert not problems, problems
    # every figure the executed notebook drew is an image on its page (jupyter_execute/ holds the executed copies)
    executed = BOOK.parent / "jupyter_execute"
    drawn = {name: sum("image/png" in o.get("data", {}) for c in json.loads((executed / f"{name}.ipynb").read_text())["cells"]
                       for o in c.get("outputs", [])) for name in NOTEBOOKS}
    assert all(figures[name] >= drawn[name] for name in NOTEBOOKS), (figures, drawn)
    assert sum(drawn.values()) > 0
