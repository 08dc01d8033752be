"""The real-browser test: JupyterLab started here, Debian's Chromium driven by Playwright.

It opens ``02_stride_and_channels.ipynb`` (from a temporary copy of ``notebooks/``, so
nothing in the repository changes), checks that the saved stride picture shows before any
kernel has run (the static copy of the explorer), clears the saved outputs and runs all
cells from the menus, moves the ``stride`` slider with the keyboard and checks that the
``.shape-readout`` text becomes exactly the shape the formula predicts and that the stride
picture shows as many kernel windows as the output has pixels. It leaves a screenshot of
the explorer at 1280x720 (``explorer-1280x720.png`` in the test's temporary directory, or
in ``$RESNET_LESSONS_SCREENSHOTS`` when set).

A second test opens the notebook trusted, as ``make lab`` does, so JupyterLab draws the
saved widgets before any kernel has run: it checks that no ipywidgets "disconnected" icon
shows inside them, only one note per widget saying to run the notebook, and that the notes
go once the cells have run and the sliders work (screenshots ``saved-1280x720.png`` and
``live-1280x720.png``).

Where ``/usr/bin/chromium`` or the playwright package is missing (a student's laptop) the
test skips with the reason; under CI (``CI=true``) it fails instead. Playwright drives the
system Chromium: ``playwright install`` is never needed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from resnet_lessons import conv_formula, conv_output_size

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "02_stride_and_channels.ipynb"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
SHAPE = re.compile(r"\((\d+), (\d+), (\d+), (\d+)\)")
STARTUP_S = 60  # JupyterLab answering on its port; generous for a busy CI machine
STEP_MS = 45_000  # any one wait in the browser (the kernel imports torch on first run)


def missing_browser() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    reasons = []
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        reasons.append(f"{CHROMIUM} not found (Debian/Ubuntu: apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reasons.append("the playwright package is missing (pip install -e '.[dev]')")
    return "; ".join(reasons) or None


def require_browser() -> None:
    """Skip when Chromium or playwright is missing; under CI (``CI=true``) fail instead."""
    reason = missing_browser()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true, so the browser test must run, but it cannot: {reason}")
    pytest.skip(f"browser test skipped: {reason}")


@pytest.fixture(scope="module")
def browser_available() -> None:
    require_browser()


def test_missing_chromium_skips_on_a_laptop_but_fails_under_ci(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true.*/nonexistent/chromium"):
        require_browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="/nonexistent/chromium not found"):
        require_browser()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, token: str, path: str, method: str = "GET") -> bytes:
    request = urllib.request.Request(
        f"{url}{path}", method=method, headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read()


def _pids_using(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (our private runtime dir): kernels."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
    return pids


def _stop(process: subprocess.Popen, url: str, token: str, runtime: Path) -> None:
    """Shut JupyterLab and its kernels down: politely, then by process group, then by id."""
    if process.poll() is None:
        try:
            _api(url, token, "/api/shutdown", method="POST")
            process.wait(timeout=15)
        except (OSError, urllib.error.URLError, subprocess.TimeoutExpired):
            pass
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)  # the server and anything in its session
            process.wait(timeout=wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    # Kernels run in sessions of their own; their command line names our runtime dir.
    if sys.platform.startswith("linux"):
        for pid in _pids_using(str(runtime)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def jupyterlab(browser_available, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """A JupyterLab on a free local port with a random token, serving a copy of notebooks/.

    Yields ``(base url, token)``; shuts JupyterLab and its kernels down afterwards.
    """
    with running_jupyterlab(tmp_path_factory.mktemp("jupyterlab")) as server:
        yield server


@contextlib.contextmanager
def running_jupyterlab(base: Path, *, trusted: bool = False) -> Iterator[tuple[str, str]]:
    """Start JupyterLab on a copy of notebooks/ in ``base``; yield ``(base url, token)``.

    Every Jupyter and IPython directory points into ``base``, so nothing reaches the home
    directory; news and update checks are off. With ``trusted``, the copies are trusted
    first, as ``make lab`` does, so JupyterLab draws their saved widgets. Stops everything
    it started on exit.
    """
    root = base / "notebooks"
    shutil.copytree(
        REPO / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "*.pyc")
    )
    dirs = {name: base / name for name in ("config", "data", "runtime", "workspaces", "ipython")}
    for path in dirs.values():
        path.mkdir()
    # No "would you like news?" toast over the notebook.
    settings = dirs["config"] / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    # Every cell in the page, so the saved outputs far down the notebook can be found.
    notebook = dirs["config"] / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension"
    notebook.mkdir(parents=True)
    (notebook / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    env = os.environ | {
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "IPYTHONDIR": str(dirs["ipython"]),
        "MPLCONFIGDIR": str(base / "matplotlib"),
    }
    if trusted:  # the signatures go to the private data dir, read by the server below
        subprocess.run(
            [sys.executable, "-m", "nbformat.sign", *map(str, sorted(root.glob("*.ipynb")))],
            env=env,
            check=True,
            capture_output=True,
        )
    port, token = free_port(), secrets.token_hex(24)
    url = f"http://127.0.0.1:{port}"
    log_path = base / "jupyterlab.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={root}",
                f"--LabApp.workspaces_dir={dirs['workspaces']}",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.extension_manager=readonly",  # no extension index look-ups
                *(["--allow-root"] if os.geteuid() == 0 else []),  # CI containers run as root
            ],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown can end it all
        )
        try:
            deadline = time.monotonic() + STARTUP_S
            while True:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"JupyterLab exited with code {process.returncode} before answering:\n"
                        + log_path.read_text()[-3000:]
                    )
                try:
                    _api(url, token, "/api/status")
                    break
                except (OSError, urllib.error.URLError):
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"JupyterLab did not answer on {url} within {STARTUP_S} s:\n"
                            + log_path.read_text()[-3000:]
                        ) from None
                    time.sleep(0.25)
            yield url, token
        finally:
            _stop(process, url, token, dirs["runtime"])


def browser_env(home: Path) -> dict[str, str]:
    """Chromium's environment: its profile, caches and crash reports go to ``home``, not ~."""
    dirs = {"HOME": home, "XDG_CONFIG_HOME": home / "config", "XDG_CACHE_HOME": home / "cache"}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    return os.environ | {name: str(path) for name, path in dirs.items()}


def launch_chromium(playwright, home: Path):
    """Debian's Chromium, headless, with this machine's flags and a private home folder."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, env=browser_env(home)
    )


def _menu(page, menu: str, item: str) -> None:
    """Click a menu of JupyterLab's menu bar, then one of its items, as a student would."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(f"^{menu}$")).click()
    label = page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{item}$"))
    page.locator(".lm-Menu-item:not(.lm-mod-disabled)").filter(has=label).click()


def _wait_for_idle_kernel(page) -> None:
    """Wait for the status bar's "Python 3 (ipykernel) | Idle" (the toolbar's indicator says
    idle before any kernel is connected, so it cannot be trusted for this)."""
    page.wait_for_function(
        """() => {
            const bar = document.querySelector('.jp-StatusBar-Widget');
            const text = bar ? bar.innerText : '';
            return /\\| Idle/.test(text) && !text.includes('No Kernel');
        }""",
        timeout=STEP_MS,
    )


def _slider(explorer, description: str):
    # A `has=` locator is matched inside each candidate, so it is built from the page.
    label = explorer.page.locator("label.widget-label", has_text=re.compile(f"^{description}$"))
    return explorer.locator(".widget-hslider").filter(has=label)


def _check_stride_slider(page, url: str, token: str) -> dict[str, object]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(f"{url}/lab/tree/{NOTEBOOK}?token={token}", timeout=STEP_MS)
    panel = page.locator(".jp-NotebookPanel")
    panel.wait_for(timeout=STEP_MS)
    _wait_for_idle_kernel(page)
    page.locator(".jp-NotebookPanel .jp-Cell").first.click()  # the notebook has the focus

    # Before any cell runs, the saved output shows the explorer's static copy with the
    # stride picture (the notebook is not trusted here, so no saved widget is drawn).
    saved = page.locator(".jp-NotebookPanel img.stride-picture-static")
    saved.first.scroll_into_view_if_needed(timeout=STEP_MS)
    alt = saved.first.get_attribute("alt") or ""
    found = re.search(r"lands at (\d+) positions", alt)
    assert found, f"the saved stride picture does not say what it shows: {alt!r}"
    saved_windows = int(found.group(1))
    assert page.evaluate("img => img.naturalWidth", saved.first.element_handle()) > 0

    # A clean slate: without saved outputs, any readout on the page comes from this kernel.
    _menu(page, "Edit", "Clear Outputs of All Cells")
    page.wait_for_function(
        "() => document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-child').length === 0",
        timeout=STEP_MS,
    )
    _menu(page, "Run", "Run All Cells")
    # Done when every code cell has its execution count, or a cell failed (Run All stops).
    page.wait_for_function(
        """() => {
            const panel = document.querySelector('.jp-NotebookPanel');
            const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
            const failed = panel.querySelector(
                ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']");
            return failed || (prompts.length > 0
                              && prompts.every(p => /\\[\\d+\\]/.test(p.textContent)));
        }""",
        timeout=STEP_MS,
    )
    _wait_for_idle_kernel(page)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert errors.count() == 0, "a cell wrote to stderr: " + " | ".join(errors.all_text_contents())

    readout = page.locator(".shape-readout")
    readout.wait_for(timeout=STEP_MS)
    assert readout.count() == 1, f"expected one .shape-readout, found {readout.count()}"
    explorer = page.locator(".residual-explorer").filter(has=readout)
    explorer.scroll_into_view_if_needed()  # scrolled to, as a student would (cells off-screen
    # are not rendered, so their text would read as empty)
    stride = _slider(explorer, "stride")
    assert stride.count() == 1, f"expected one slider described 'stride', found {stride.count()}"
    size = int(_slider(explorer, "input size").locator(".widget-readout").text_content())
    channels = int(_slider(explorer, "out channels").locator(".widget-readout").text_content())
    assert explorer.locator(".widget-checkbox input").is_checked(), "the notebook ticks the 1x1"
    before = int(stride.locator(".widget-readout").text_content())

    shape = SHAPE.fullmatch(readout.text_content().strip())
    assert shape, f"the readout does not show a shape: {readout.text_content()!r}"
    batch = int(shape.group(1))
    h = conv_output_size(size, 3, before, 1)
    assert readout.text_content().strip() == f"({batch}, {channels}, {h}, {h})"

    # Move the stride slider one step to the right with the keyboard, like a student would.
    handle = stride.locator(".noUi-handle")
    handle.focus()
    start = time.perf_counter()
    handle.press("ArrowRight")
    after = before + 1
    h = conv_output_size(size, 3, after, 1)  # floor((H + 2*1 - 3) / stride) + 1
    expected = f"({batch}, {channels}, {h}, {h})"
    try:
        page.wait_for_function(
            "expected => document.querySelector('.shape-readout').textContent.trim() === expected",
            arg=expected,
            timeout=STEP_MS,
        )
    except PlaywrightTimeout:
        raise AssertionError(
            f"after moving stride {before} -> {after} on a {size}x{size} input the readout "
            f"shows {readout.text_content()!r}, not {expected!r} (floor(({size} + 2*1 - 3) / "
            f"{after}) + 1 = {h}); the stride slider reads "
            f"{stride.locator('.widget-readout').text_content()!r}"
        ) from None
    round_trip_ms = 1000 * (time.perf_counter() - start)
    assert stride.locator(".widget-readout").text_content() == str(after)
    assert readout.text_content().strip() == expected
    details = explorer.locator(".shape-details")
    assert conv_formula(size, 3, after, 1) in details.text_content()

    # The stride picture follows the slider: one kernel window per output pixel.
    picture = explorer.locator(".stride-picture-box svg.stride-picture")
    assert picture.count() == 1, f"expected one stride picture, found {picture.count()}"
    assert picture.get_attribute("data-windows") == str(h * h)
    assert picture.locator("rect.window").count() == h * h
    assert picture.locator("rect.window.highlighted").count() == 1
    box = picture.bounding_box()
    assert box and box["width"] >= 400, f"the stride picture is too small to read: {box}"
    return {
        "size": size,
        "stride": (before, after),
        "readout": expected,
        "ms": round_trip_ms,
        "windows": (saved_windows, h * h),
    }


# Every saved widget of notebook 02: for each box, the views marked disconnected inside it
# (itself included) whose ``::before`` icon is drawn, and its notes that are visible.
_SAVED_VIEW = """boxes => boxes.map(box => {
    const views = [box, ...box.querySelectorAll('.jupyter-widgets-disconnected')]
        .filter(el => el.classList.contains('jupyter-widgets-disconnected'));
    const drawn = el => {
        const icon = getComputedStyle(el, '::before');
        return icon.display !== 'none' && icon.content !== 'none' && icon.content !== 'normal';
    };
    const shown = el => el.getClientRects().length > 0 && el.offsetHeight > 0;
    return {
        box: box.classList.contains('shape-quiz') ? 'shape-quiz'
            : box.classList.contains('resnet-explorer') ? 'resnet-explorer' : 'residual-explorer',
        disconnected: views.length,
        icons: views.filter(drawn).length,
        notes: [...box.querySelectorAll('.saved-view-text')].filter(shown)
            .map(el => el.textContent),
    };
})"""
_BOXES = ".jp-NotebookPanel :is(.residual-explorer, .resnet-explorer, .shape-quiz)"


def _screenshot(page, path: Path) -> None:
    """The explorer at 1280x720, the size of a projector, scrolled to its sliders."""
    page.set_viewport_size({"width": 1280, "height": 720})
    explorer = page.locator(".residual-explorer").first
    explorer.scroll_into_view_if_needed()
    explorer.evaluate("node => node.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    page.screenshot(path=str(path))


@pytest.mark.browser
@pytest.mark.slow
def test_stride_slider_updates_the_shape_readout(jupyterlab, tmp_path):
    from playwright.sync_api import sync_playwright

    url, token = jupyterlab
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, tmp_path / "browser-home")
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            try:
                result = _check_stride_slider(page, url, token)
                folder = Path(os.environ.get("RESNET_LESSONS_SCREENSHOTS", tmp_path))
                folder.mkdir(parents=True, exist_ok=True)
                screenshot = folder / "explorer-1280x720.png"
                _screenshot(page, screenshot)
            except Exception as err:
                screenshot = tmp_path / "jupyterlab-failure.png"
                page.screenshot(path=str(screenshot), full_page=True)
                raise AssertionError(f"{err}\n(screenshot of the page: {screenshot})") from err
        finally:
            browser.close()
    print(
        f"stride {result['stride'][0]} -> {result['stride'][1]} on {result['size']}x"
        f"{result['size']}: readout {result['readout']} after {result['ms']:.0f} ms "
        "(key press to readout, through the kernel); stride picture windows "
        f"{result['windows'][0]} -> {result['windows'][1]}; screenshot {screenshot}"
    )


def _check_saved_then_live(page, url: str, token: str, folder: Path) -> dict[str, object]:
    page.goto(f"{url}/lab/tree/{NOTEBOOK}?token={token}", timeout=STEP_MS)
    page.locator(".jp-NotebookPanel").wait_for(timeout=STEP_MS)
    _wait_for_idle_kernel(page)
    # The trusted notebook's saved widget state is drawn once the kernel has started.
    boxes = page.locator(_BOXES)
    page.wait_for_function(
        f"() => document.querySelectorAll('{_BOXES}').length === 3", timeout=STEP_MS
    )
    page.locator(".jp-NotebookPanel .jp-Cell").first.click()
    saved = boxes.evaluate_all(_SAVED_VIEW)
    assert [b["box"] for b in saved] == ["residual-explorer", "resnet-explorer", "shape-quiz"]
    for box in saved:
        assert box["disconnected"] > 0, f"{box['box']} is not drawn from the saved state: {box}"
        assert box["icons"] == 0, (
            f"{box['box']} shows {box['icons']} disconnected icons of its "
            f"{box['disconnected']} saved views; the saved-view note's CSS did not apply: {box}"
        )
        assert len(box["notes"]) == 1 and "run the notebook" in box["notes"][0], (
            f"{box['box']} should show one note saying to run the notebook: {box['notes']}"
        )
    stray = page.evaluate(
        """() => [...document.querySelectorAll('.jupyter-widgets-disconnected')].filter(el => {
            const icon = getComputedStyle(el, '::before');
            return icon.display !== 'none' && icon.content !== 'none';
        }).length"""
    )
    assert stray == 0, f"{stray} disconnected icons are drawn elsewhere in the notebook"
    _screenshot(page, folder / "saved-1280x720.png")

    # Cleared first, so the execution counts waited for below come from this kernel.
    _menu(page, "Edit", "Clear Outputs of All Cells")
    page.wait_for_function(
        "() => document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-child').length === 0",
        timeout=STEP_MS,
    )
    _menu(page, "Run", "Run All Cells")
    page.wait_for_function(
        """() => [...document.querySelectorAll(
                '.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt')]
            .every(p => /\\[\\d+\\]/.test(p.textContent))""",
        timeout=STEP_MS,
    )
    _wait_for_idle_kernel(page)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert errors.count() == 0, "a cell wrote to stderr: " + " | ".join(errors.all_text_contents())
    page.wait_for_function(
        f"() => document.querySelectorAll('{_BOXES}').length === 3", timeout=STEP_MS
    )
    live = boxes.evaluate_all(_SAVED_VIEW)
    for box in live:
        assert box["disconnected"] == 0 and box["notes"] == [], (
            f"after Run All Cells {box['box']} still looks saved: {box}"
        )
    explorer = page.locator(".jp-NotebookPanel .residual-explorer")
    explorer.scroll_into_view_if_needed()
    readout = explorer.locator(".shape-readout")
    before = readout.text_content()
    handle = _slider(explorer, "stride").locator(".noUi-handle")
    handle.focus()
    handle.press("ArrowRight")
    page.wait_for_function(
        "before => document.querySelector('.residual-explorer .shape-readout')"
        ".textContent !== before",
        arg=before,
        timeout=STEP_MS,
    )
    _screenshot(page, folder / "live-1280x720.png")
    return {"saved": saved, "readout": (before, readout.text_content())}


@pytest.mark.browser
@pytest.mark.slow
def test_saved_widgets_show_one_note_instead_of_disconnected_icons(
    browser_available, tmp_path_factory, tmp_path
):
    from playwright.sync_api import sync_playwright

    folder = Path(os.environ.get("RESNET_LESSONS_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    base = tmp_path_factory.mktemp("jupyterlab-trusted")
    with running_jupyterlab(base, trusted=True) as (url, token), sync_playwright() as playwright:
        browser = launch_chromium(playwright, tmp_path / "browser-home")
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            try:
                result = _check_saved_then_live(page, url, token, folder)
            except Exception as err:
                screenshot = tmp_path / "jupyterlab-failure.png"
                page.screenshot(path=str(screenshot), full_page=True)
                raise AssertionError(f"{err}\n(screenshot of the page: {screenshot})") from err
        finally:
            browser.close()
    for box in result["saved"]:
        print(
            f"saved {box['box']}: {box['disconnected']} disconnected views, no icon drawn, "
            f"note {box['notes'][0]!r}"
        )
    print(
        f"live: readout {result['readout'][0]} -> {result['readout'][1]}; screenshots "
        f"{folder / 'saved-1280x720.png'}, {folder / 'live-1280x720.png'}"
    )
