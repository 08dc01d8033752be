"""The web book: `make site` builds it, and Debian's Chromium reads it with no network.

One build per run (``make site`` into a temporary folder, with this Python's environment):
a broken cross-reference, a missing image or a broken local link fails it. The pages are
then checked as files (every notebook, the figures, MathJax from the site itself, no
script from a CDN) and opened in Chromium from a static server on 127.0.0.1 (what any
static host does), with every request elsewhere refused: the front page and its table of
contents, notebook 01's figure from ``img/`` and its typeset math, notebook 02's stride
picture, its widgets' static copies and its math, notebook 05's plots, and the search.
Screenshots go to the test's temporary directory, or to ``$RESNET_LESSONS_SCREENSHOTS``.

Without Chromium or playwright the browser test skips, except under CI (``CI=true``).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_browser import launch_chromium, require_browser

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
STEP_MS = 30_000
SCRIPT_SRC = re.compile(r"<script[^>]*\bsrc=\"([^\"]+)\"")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """``make site`` into a temporary folder; the HTML folder it wrote."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = tmp_path_factory.mktemp("site")
    venv = Path(sys.prefix)
    start = time.perf_counter()
    # This environment's tools; `-o` keeps make from installing anything into it.
    tools = [f"VENV={venv}", f"BIN={Path(sys.executable).parent}", f"SITE={out}"]
    result = subprocess.run(
        ["make", "-C", str(REPO), "-o", f"{venv}/.installed-book", "site", *tools],
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - start
    assert result.returncode == 0, (
        f"make site failed (exit {result.returncode}); a warning is an error there:\n"
        + (result.stdout + result.stderr)[-4000:]
    )
    html = out / "_build" / "html"
    size = sum(p.stat().st_size for p in html.rglob("*") if p.is_file())
    print(f"make site: {seconds:.1f} s, {size / 2**20:.1f} MiB in {html}")
    return html


@pytest.mark.slow
def test_the_site_has_every_notebook_and_loads_no_script_from_outside(site):
    pages = [site / "README.html"] + [site / "notebooks" / f"{name}.html" for name in NOTEBOOKS]
    missing = [str(p.relative_to(site)) for p in pages if not p.is_file()]
    assert not missing, f"pages missing from the site: {missing}"
    assert len(NOTEBOOKS) == 9, f"expected the nine notebooks, found {NOTEBOOKS}"
    for figure in (REPO / "img").glob("*.png"):
        assert (site / "_images" / figure.name).is_file(), f"{figure.name} is not in the site"
    assert (site / "_static" / "mathjax" / "tex-svg-full.js").stat().st_size > 1_000_000
    for page in pages:
        text = page.read_text(encoding="utf-8")
        outside = [src for src in SCRIPT_SRC.findall(text) if "://" in src or src[:2] == "//"]
        assert not outside, f"{page.name} loads scripts from outside the site: {outside}"
        for name in ("cdn.", "unpkg.com", "jsdelivr"):
            assert name not in text, f"{page.name} names a CDN ({name}); the site must be offline"
    front = (site / "index.html").read_text(encoding="utf-8")
    assert "README.html" in front, "index.html should lead to the front page (the README)"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
        pass


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[str]:
    """A static file server for ``folder`` on a free port of 127.0.0.1; yields its URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _open(page, url: str) -> None:
    page.goto(url, timeout=STEP_MS)
    page.wait_for_load_state("load", timeout=STEP_MS)


def _wait_for_math(page) -> int:
    """Wait until MathJax has typeset every formula; how many there are."""
    page.wait_for_function(
        """() => {
            const maths = [...document.querySelectorAll('.math')];
            return maths.length > 0 && maths.every(m => m.querySelector('mjx-container svg'));
        }""",
        timeout=STEP_MS,
    )
    raw = page.evaluate(
        """() => [...document.querySelectorAll('article p, article li')]
                 .map(e => e.innerText).filter(t => /\\\\\\(|\\$[^$\\s][^$]*\\$/.test(t))"""
    )
    assert not raw, f"raw TeX left on the page: {raw[:3]}"
    return page.locator(".math").count()


def _images_loaded(page, selector: str) -> int:
    """How many of the images matching ``selector`` have loaded (natural width > 0)."""
    page.locator(selector).first.wait_for(state="attached", timeout=STEP_MS)
    return page.evaluate(
        """selector => Promise.all([...document.querySelectorAll(selector)].map(img =>
            img.decode().then(() => img.naturalWidth > 0, () => false)))
            .then(loaded => loaded.filter(Boolean).length)""",
        selector,
    )


def _check_pages(page, site: str, shots: Path) -> dict[str, int]:
    found = {}
    # The front page: the README, and the table of contents in the lecture's order.
    _open(page, f"{site}/index.html")
    page.wait_for_url(re.compile(r"README\.html$"), timeout=STEP_MS)
    assert page.locator("article h1").first.inner_text().strip().startswith("resnet-lessons")
    toc = page.locator("nav.bd-docs-nav a.reference.internal")
    hrefs = [href.split("/")[-1] for href in toc.evaluate_all("links => links.map(a => a.href)")]
    listed = [h.removesuffix(".html") for h in hrefs if re.match(r"\d\d_", h)]
    assert listed == NOTEBOOKS, f"the table of contents lists {listed}, expected {NOTEBOOKS}"
    assert toc.first.is_visible(), "the table of contents is not visible at 1280 px"
    found["toc entries"] = len(hrefs)
    page.screenshot(path=str(shots / "site-front-page.png"))

    # Notebook 01: a figure from img/.
    _open(page, f"{site}/notebooks/01_residual_block.html")
    assert _images_loaded(page, "img[src$='residual_block.png']") == 1, "img/ figure missing"
    found["01 math"] = _wait_for_math(page)
    page.locator("img[src$='residual_block.png']").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "site-01-figure.png"))
    page.locator("p:has(.math)").first.evaluate("node => node.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(shots / "site-01-math.png"))

    # Notebook 02: the stride picture (an SVG in the explorer's saved static copy), the
    # other explorers' one-line text, and its typeset math.
    _open(page, f"{site}/notebooks/02_stride_and_channels.html")
    found["02 stride pictures"] = _images_loaded(page, "img.stride-picture-static")
    assert found["02 stride pictures"] >= 1, "the stride picture did not load"
    src = page.locator("img.stride-picture-static").first.get_attribute("src") or ""
    assert src.startswith("data:image/svg+xml"), f"the stride picture is not an SVG: {src[:40]}"
    assert page.get_by_text("ResNet-18 explorer (run the cell)").count() >= 1
    found["02 math"] = _wait_for_math(page)
    picture = page.locator("img.stride-picture-static").first
    picture.evaluate("node => node.scrollIntoView({block: 'center'})")
    page.screenshot(path=str(shots / "site-02-stride-picture.png"))

    # Notebook 05: the saved plots (PNG outputs).
    _open(page, f"{site}/notebooks/05_training.html")
    found["05 plots"] = _images_loaded(page, ".cell_output img")
    assert found["05 plots"] >= 3, f"only {found['05 plots']} plots of notebook 05 loaded"
    page.locator(".cell_output img").nth(1).scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "site-05-plots.png"))

    # Search, from the site's own index.
    _open(page, f"{site}/search.html?q=stride")
    results = page.locator("ul.search li a")
    results.first.wait_for(timeout=STEP_MS)
    targets = results.evaluate_all("links => links.map(a => a.href)")
    assert any("02_stride_and_channels.html" in t for t in targets), f"search: {targets}"
    found["search results for 'stride'"] = len(targets)
    page.screenshot(path=str(shots / "site-search.png"))
    return found


@pytest.mark.browser
@pytest.mark.slow
def test_the_site_reads_offline_in_chromium(site, tmp_path):
    require_browser()
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("RESNET_LESSONS_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with serving(site) as url, sync_playwright() as playwright:
        browser = launch_chromium(playwright, tmp_path / "browser-home")
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            # Everything must come from the site's folder: any other request is refused.
            page.route(
                re.compile(rf"^(?!{re.escape(url)}/|data:|blob:|about:)"),
                lambda route: (problems.append(f"request: {route.request.url}"), route.abort()),
            )
            page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
            try:
                found = _check_pages(page, url, shots)
            except Exception as err:
                screenshot = tmp_path / "site-failure.png"
                page.screenshot(path=str(screenshot), full_page=True)
                raise AssertionError(f"{err}\n(screenshot of the page: {screenshot})") from err
        finally:
            browser.close()
    assert not problems, f"the site reached outside its folder, or a script failed: {problems}"
    print(f"site in Chromium: {found}; screenshots in {shots}")
