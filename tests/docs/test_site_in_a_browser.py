"""The built site, visited page by page in a real Chromium: what a reader's browser does.

Static checks (`test_site_is_offline.py`) read the HTML; this one runs it.
On every page: no request leaves 127.0.0.1, the console has no errors,
every mermaid diagram became an SVG, every image loaded. Then the search
box finds the idempotency page for "SETNX". Screenshots of the key pages
go to ``site-screenshots/`` for CI to keep.

Chromium is Debian's (``apt-get install chromium``, which ``nox -s tests``
does when it runs as root). Where it cannot be installed the test is
skipped and says why, except under CI (``CI`` set), where it must run.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.docs.conftest import ROOT

SCREENSHOTS = ROOT / "site-screenshots"
KEY_PAGES = {
    "home": "index.html",
    "architecture": "portfolio/system-architecture/index.html",
    "chaos": "load/chaos/index.html",
    "idempotency": "core/idempotency/index.html",
    "failure-modes": "portfolio/failure-modes/index.html",
}


def _chromium() -> str:
    path = (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if path:
        return path
    message = (
        "Chromium is not installed: `apt-get install chromium` (nox -s tests does it when "
        "run as root), or set CHROMIUM=/path/to/chrome"
    )
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must run the browser test")
    pytest.skip(message)


@pytest.fixture(scope="module")
def site_url(built_site: Path) -> Iterator[str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def handle(self) -> None:
            # the browser may move on to the next page mid-response
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                super().handle()

    handler = functools.partial(Quiet, directory=str(built_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()


def _pages(site: Path) -> list[str]:
    return sorted(str(p.relative_to(site)) for p in site.rglob("index.html") if "404" not in str(p))


OPEN_SHADOW_ROOTS = """
const attach = Element.prototype.attachShadow;
Element.prototype.attachShadow = function (init) {
  return attach.call(this, {...init, mode: "open"});
};
"""

CHECK_PAGE = """async () => {
  const diagrams = [...document.querySelectorAll('.mermaid')];
  for (let i = 0; i < 100; i++) {
    if (diagrams.every(d => (d.shadowRoot || d).querySelector('svg'))) break;
    await new Promise(r => setTimeout(r, 100));
  }
  const images = [...document.images];
  await Promise.all(images.map(img => img.complete ? null :
      new Promise(r => { img.onload = img.onerror = r; })));
  return {
    diagrams: diagrams.length,
    unrendered: diagrams.filter(d => !(d.shadowRoot || d).querySelector('svg')).length,
    broken: images.filter(img => !img.naturalWidth).map(img => img.src),
  };
}"""


def test_every_page_renders_offline_without_errors(
    browser: object, site_url: str, built_site: Path
) -> None:
    pages = _pages(built_site)
    assert len(pages) > 30
    context = browser.new_context()  # type: ignore[attr-defined]
    # Material draws each diagram in a *closed* shadow root, invisible to any check;
    # opening it (test-only) lets us see the SVG inside.
    context.add_init_script(OPEN_SHADOW_ROOTS)
    page = context.new_page()
    outside: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: outside.append(r.url)
            if urlparse(r.url).hostname not in (None, "127.0.0.1") else None)  # fmt: skip
    page.on("console", lambda m: errors.append(f"{page.url}: {m.text}")
            if m.type == "error" else None)  # fmt: skip
    page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
    problems: list[str] = []
    diagrams = 0
    SCREENSHOTS.mkdir(exist_ok=True)
    for path in pages:
        page.goto(site_url + path.removesuffix("index.html"), wait_until="domcontentloaded")
        result = page.evaluate(CHECK_PAGE)
        diagrams += result["diagrams"]
        if result["unrendered"]:
            problems.append(f"{path}: {result['unrendered']} mermaid diagram(s) not rendered")
        problems.extend(f"{path}: image did not load: {src}" for src in result["broken"])
        for name, key_page in KEY_PAGES.items():
            if path == key_page:
                page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    context.close()
    assert outside == []
    assert errors == []
    assert problems == []
    assert diagrams >= 4  # the architecture page's four, at least


def test_search_finds_the_idempotency_page_for_setnx(browser: object, site_url: str) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(site_url, wait_until="load")
    page.click("input.md-search__input")  # the header's search box, as a reader would
    page.keyboard.type("SETNX")
    results = page.locator(".md-search-result__link")
    results.first.wait_for(timeout=15_000)
    hrefs = [results.nth(i).get_attribute("href") or "" for i in range(results.count())]
    page.screenshot(path=str(SCREENSHOTS / "search-setnx.png"))
    page.close()
    assert any("core/idempotency" in href for href in hrefs), hrefs
