"""Slide mode: every lecture notebook carries RISE slideshow metadata, and RISE is installed.

The convention (``slide_type`` in each cell's ``metadata.slideshow``), decided by
:func:`expected_slide_type` from the cell alone:

* ``"slide"``: the title cell (``# ...``) and every markdown cell that starts with a
  ``## `` heading. One lecture step is one ``##`` section, so one slide (left/right);
* ``"subslide"``: markdown cells that start with a ``### `` heading (an experiment or an
  exercise inside a step: up/down under its step's slide, so a step is at most two
  screens wide);
* ``"skip"``: code cells that only import or seed (nothing to show a room), the setup
  cell (its first line is a ``# Setup:`` comment: it finds the package and prints
  nothing), and hidden cells (``metadata.jupyter.source_hidden``: the exercises' worked
  solutions);
* ``"fragment"``: every other code cell (the code and its output appear on the next key
  press, after the prose that sets it up);
* ``"-"``: every other markdown cell (it continues the current slide).

To apply the convention to a notebook (it rewrites only the ``slideshow`` metadata):
``.venv/bin/python tests/test_slides.py notebooks/05_training.ipynb``.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LECTURE = [f"{n:02d}" for n in range(1, 10)]  # the lecture (01-05) and its questions (06-09)
SLIDE_TYPES = {"slide", "subslide", "fragment", "skip", "-", "notes"}
_SETUP = re.compile(r"^(\s*$|\s*#.*$|(from \S+ )?import .*|set_seed\(.*\)|\s+.*,?|\).*)$")


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _is_setup(source: str) -> bool:
    """Only imports (single or parenthesised) and ``set_seed(...)`` lines."""
    lines = [line for line in source.splitlines() if line.strip()]
    return (
        bool(lines)
        and all(_SETUP.match(line) for line in lines)
        and ("import" in source or "set_seed(" in source)
    )


def expected_slide_type(cell: dict, index: int) -> str:
    """The convention above, for cell number ``index`` of a notebook."""
    source = _source(cell).lstrip()
    if cell.get("metadata", {}).get("jupyter", {}).get("source_hidden"):
        return "skip"
    if cell["cell_type"] == "markdown":
        if index == 0 or source.startswith("# ") or source.startswith("## "):
            return "slide"
        if source.startswith("### "):
            return "subslide"
        return "-"
    if cell["cell_type"] == "code":
        return "skip" if _is_setup(source) or source.startswith("# Setup:") else "fragment"
    return "-"


def lecture_notebooks() -> list[Path]:
    found = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb") if p.name[:2] in LECTURE)
    return found


def apply(path: Path) -> int:
    """Write the convention's slideshow metadata into ``path``; return the cells changed."""
    notebook = json.loads(path.read_text())
    changed = 0
    for index, cell in enumerate(notebook["cells"]):
        want = expected_slide_type(cell, index)
        if cell.get("metadata", {}).get("slideshow", {}).get("slide_type") != want:
            cell.setdefault("metadata", {})["slideshow"] = {"slide_type": want}
            changed += 1
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    return changed


def test_notebooks_01_to_09_exist():
    assert [p.name[:2] for p in lecture_notebooks()] == LECTURE


@pytest.mark.parametrize("path", lecture_notebooks(), ids=lambda p: p.name)
def test_every_cell_has_the_conventions_slide_type(path):
    cells = json.loads(path.read_text())["cells"]
    wrong = []
    for index, cell in enumerate(cells):
        slideshow = cell.get("metadata", {}).get("slideshow")
        got = slideshow.get("slide_type") if isinstance(slideshow, dict) else None
        want = expected_slide_type(cell, index)
        if got != want:
            first = _source(cell).strip().splitlines()[:1]
            wrong.append(
                f"cell {index} ({first[0][:50] if first else ''!r}): {got!r}, want {want!r}"
            )
    assert not wrong, (
        f"{path.name}: slide types that differ from the convention (apply it with "
        f"`python tests/test_slides.py notebooks/{path.name}`):\n" + "\n".join(wrong)
    )
    assert all(c["metadata"]["slideshow"]["slide_type"] in SLIDE_TYPES for c in cells)


@pytest.mark.parametrize("path", lecture_notebooks(), ids=lambda p: p.name)
def test_each_lecture_step_is_one_slide_with_at_most_a_column_of_subslides(path):
    cells = json.loads(path.read_text())["cells"]
    types = [c["metadata"].get("slideshow", {}).get("slide_type") for c in cells]
    assert types[0] == "slide", "the title cell opens the slideshow"
    headings = [
        c for c in cells if c["cell_type"] == "markdown" and re.match(r"#{1,2} ", _source(c))
    ]
    assert types.count("slide") == len(headings)
    # Nothing shown before the first slide, and no slide without something on it.
    shown = [t for t in types if t != "skip"]
    assert shown and shown[0] == "slide"


def test_the_convention_on_hand_made_cells():
    def md(text: str) -> dict:
        return {"cell_type": "markdown", "metadata": {}, "source": text}

    def code(text: str, hidden: bool = False) -> dict:
        meta = {"jupyter": {"source_hidden": True}} if hidden else {}
        return {"cell_type": "code", "metadata": meta, "source": text}

    assert expected_slide_type(md("# Title"), 0) == "slide"
    assert expected_slide_type(md("## A step"), 3) == "slide"
    assert expected_slide_type(md("### An experiment"), 4) == "subslide"
    assert expected_slide_type(md("Some prose"), 5) == "-"
    assert expected_slide_type(code("import torch\nfrom torch import nn"), 1) == "skip"
    assert expected_slide_type(code("from x import (\n    a,\n    b,\n)"), 1) == "skip"
    assert expected_slide_type(code("set_seed(0)"), 2) == "skip"
    assert expected_slide_type(code("# Setup: find the package\nif x:\n    y()"), 1) == "skip"
    assert expected_slide_type(code("model = resnet18()"), 6) == "fragment"
    assert expected_slide_type(code("import time\n\nprint(time.time())"), 6) == "fragment"
    assert expected_slide_type(code("solution()", hidden=True), 7) == "skip"


@pytest.mark.slow
def test_rise_is_installed_where_make_lab_installs():
    """``jupyterlab-rise`` is in the ``lab`` extra, so ``make lab`` installs it into .venv;
    this checks the environment the tests run in (built by ``make test``, which installs
    ``dev``, a superset of ``lab``)."""
    try:
        version = importlib.metadata.version("jupyterlab-rise")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("jupyterlab-rise is not installed: run make lab (or pip install -e '.[lab]')")
    assert version
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent))
    if jupyter is None:
        pytest.skip("no jupyter command next to this Python")
    listing = subprocess.run(
        [jupyter, "labextension", "list"], capture_output=True, text=True, timeout=120
    )
    text = listing.stdout + listing.stderr
    assert re.search(r"jupyterlab-rise\S* v\S+ .*enabled.*OK", text), text


def test_the_lab_and_dev_extras_name_rise():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for extra in ("lab", "dev"):
        assert any(r.startswith("jupyterlab-rise") for r in extras[extra]), extra


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"{name}: {apply(Path(name))} cells changed")
