"""Prose guard: every measured figure a notebook's Markdown states, one of its outputs shows.

A student who reads "reaches 0.934" above a cell that printed 0.921 stops trusting the
rest. This test reads each notebook in ``notebooks/`` as saved and fails, naming the
notebook, the cell, the figure and its sentence, for every figure in the prose that no
output of the same notebook shows.

What counts as a figure (:func:`figures_in_markdown`):

* a decimal (``0.905``, ``1.5``, ``3.4x``) or a percentage (``92%``, ``0.4%``);
* an integer with thousands separators (``2,656``, ``11,178,378``);
* a time (``71 s``, ``3 minutes``, ``13 min 24 s``, ``about two minutes``);
* a size in bytes (``78 MB``) or an angle (``8 degrees``);
* a count of runs or networks: a number, in digits or in words, before ``networks``,
  ``nets``, ``models``, ``runs``, ``seeds``, ``epochs``, ``steps``, ``iterations``,
  ``parameters`` (``trains 24 networks``, ``over 5 seeds``, ``thirty networks``).

What is not read as a figure: LaTeX math (``$...$``, ``$$...$$``), code (inline and
fenced), URLs, link targets and HTML tags; a heading's numbering (``## 3.`` and
``## 3.1``); a number joined to a word (``ResNet-18``, ``56-layer``, ``3-minute``,
``stage4``, ``bf16``); dimensions (``3x3``, ``28x28``, ``1x1``); a version or a
section (``Python 3.11``, ``section 8.6``, ``2.14.1``); a bare integer (``56 layers``,
``10 classes``: depths and sizes are settings); a library's default (``600 s by
default``); and every figure on a line of the cell's source that names where it comes
from (:data:`SOURCE_MARKERS`: a figure quoted from a paper names its source on the same
line, such as "He et al. (2016) report 6.43%"; the line, not the sentence, so that a
citation in one clause does not cover a measurement in the next). Each row of a Markdown
table and each list item is a sentence of its own (the sentence only goes into the
message).

When a figure counts as shown (:func:`is_shown`), with "rounds to" meaning that the
output's number is within half a unit of the figure's last written digit, so that prose
may round a printed ``0.9187`` to ``0.92`` but not to ``0.93``:

* a decimal, a percentage or an integer with separators: some number printed by an
  output of the notebook rounds to it. A fraction and a percentage are the same figure
  (``0.905`` is shown by a printed ``90.5%``; ``92%`` by a printed ``0.9187``);
* a count: an output prints exactly that number;
* a time, a size or an angle: an output prints a number **with a unit of the same kind**
  that rounds to it, times compared in seconds (``3 minutes`` is shown by ``180 s``,
  ``71 s`` by ``70.6 s`` or by a progress bar's ``01:11``; ``about two minutes`` is not
  shown by ``71 s``);
* a setting: the number is written literally in the code (not a comment) of a code cell
  of the notebook (``lr=0.05`` supports ``0.05``; a fraction ``0.1`` supports ``10%``),
  on a line that does not draw (:data:`DRAWING_WORDS`: ``alpha=0.4`` supports nothing).
  A time, a size, an angle or a count needs its unit among the words of that line's
  names too (:data:`SETTING_WORDS`: ``BUDGET_MINUTES = 3`` or ``budget=180`` supports
  ``3 minutes``, ``for seed in range(5)`` supports ``5 seeds``), except on an ``assert``
  line, whose bound the prose may quote (``assert mae < 12`` supports "off by less than
  12 degrees"; never a time, since timings are printed, not asserted). Settings are
  chosen, not measured, so stating them is fair. Settings that live only in the package
  (a recipe's momentum) are not seen: print them, or quote them from a printed recipe.

Outputs read: stream text, errors, and every ``text/*`` representation (plain, HTML with
its tags removed, Markdown). Images and widget state are not read.

Small integers (a count of ``5 seeds``) are weakly checked: a ``5`` printed anywhere in
the notebook shows them. Times, sizes and angles are checked with their unit because a
bare ``2`` is printed everywhere.

:data:`ALLOWED` lists, per notebook, figures that are true without an output to show
them, each with its reason. Keep it short: the point is to find unsupported numbers, not
to hide them. To see the figures of one notebook and what shows them:
``.venv/bin/python tests/test_prose_numbers.py notebooks/05_training.ipynb``.
"""

from __future__ import annotations

import copy
import html
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

# A line of a Markdown cell's source that matches one of these names where its figures
# come from: they are quoted, not measured here.
SOURCE_MARKERS: tuple[str, ...] = (
    r"\bet\s+al\b",  # "He et al. report ..."
    r"\([^()\n]*\b(?:19|20)\d\d\b[^()\n]*\)",  # a year in parentheses: "(2015)", "(He, 2016)"
    r"\bTable\s+\d+",  # "Table 6" of a paper
    r"\bFig(?:ure|\.)\s*\d+",  # "Figure 3" of a paper
    r"\barXiv\b",
    r"\bpaper\b",  # "the paper reports ..."
    r"\bD2L\b",  # the lecture's book: "D2L's recipe, 10 epochs at learning rate 0.05"
)
_SOURCE = re.compile("|".join(SOURCE_MARKERS), re.IGNORECASE)

# notebook stem -> {figure as written: why it needs no output}. Keep it short: each entry
# hides that figure everywhere in its notebook.
ALLOWED: dict[str, dict[str, str]] = {
    "02_stride_and_channels": {
        "20 ms": "a target for one slider update (what feels instant), not a measurement",
    },
    "05_training": {
        "4x": "uint8 takes one byte, float32 four: a fact of the types, not a measurement",
    },
    "08_regression": {
        "45 degrees": "an example angle for the symmetry of a rectangle, not a measurement",
        "80 degrees": "an example error in the arithmetic of the squared loss",
        "180 degrees": "the range an exercise asks the student to try, a setting",
        "179 degrees": "an example pair of angles (-179 and +179) in an exercise's question",
    },
}

NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15,
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "hundred": 100,
    "a dozen": 12, "a hundred": 100,
}  # fmt: skip
# unit as written -> (kind, factor to the kind's base unit: seconds, MB, degrees)
UNITS = {
    "ms": ("time", 0.001), "s": ("time", 1), "sec": ("time", 1), "secs": ("time", 1),
    "second": ("time", 1), "seconds": ("time", 1), "min": ("time", 60),
    "mins": ("time", 60), "minute": ("time", 60), "minutes": ("time", 60),
    "h": ("time", 3600), "hour": ("time", 3600), "hours": ("time", 3600),
    "kb": ("size", 0.001), "kib": ("size", 0.001), "mb": ("size", 1), "mib": ("size", 1),
    "gb": ("size", 1000), "gib": ("size", 1000),
    "degrees": ("angle", 1), "degree": ("angle", 1), "°": ("angle", 1),
}  # fmt: skip
COUNT_NOUNS = {
    "network": "net", "networks": "net", "net": "net", "nets": "net", "model": "model",
    "models": "model", "run": "run", "runs": "run", "seed": "seed", "seeds": "seed",
    "epoch": "epoch", "epochs": "epoch", "step": "step", "steps": "step",
    "iteration": "iter", "iterations": "iter", "parameter": "param", "parameters": "param",
    "params": "param",
}  # fmt: skip
# The words a code line must name (as a word of an identifier, any case) for its number
# to set a time, a size, an angle or a count: BUDGET_MINUTES = 3, epochs=10, seeds=range(5).
SETTING_WORDS = {
    "time": {"minute", "minutes", "min", "mins", "second", "seconds", "sec", "secs", "budget",
             "timeout", "hour", "hours"},
    "size": {"mb", "mib", "gb", "bytes", "memory"},
    "angle": {"degree", "degrees", "deg", "angle", "angles", "rotation", "rotate"},
    "net": {"net", "nets", "network", "networks", "model", "models", "depth", "depths"},
    "model": {"net", "nets", "network", "networks", "model", "models"},
    "run": {"run", "runs", "seed", "seeds", "repeat", "repeats"},
    "seed": {"seed", "seeds"},
    "epoch": {"epoch", "epochs", "patience"},
    "step": {"step", "steps"},
    "iter": {"iteration", "iterations", "iters", "step", "steps"},
    "param": {"param", "params", "parameter", "parameters"},
}  # fmt: skip

# Words of a code line that draws (matplotlib): its numbers are not settings.
DRAWING_WORDS = {
    "plt", "ax", "axes", "fig", "figure", "figsize", "subplots", "alpha", "linewidth", "lw",
    "fontsize", "markersize", "color", "colors", "xlim", "ylim", "dpi", "zorder",
}  # fmt: skip
_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_WORDS = "|".join(sorted(NUMBER_WORDS, key=len, reverse=True))
_UNIT = "|".join(sorted((re.escape(u) for u in UNITS), key=len, reverse=True))
_NOUN = "|".join(sorted(COUNT_NOUNS, key=len, reverse=True))
# One figure in prose. Groups: num (digits) or word (spelled out), then optional percent,
# ratio, time/size/angle unit (with a second part for "13 min 24 s"), or a count noun.
_FIGURE = re.compile(
    rf"(?<![\w.,])(?:(?P<num>{_NUM}(?:e[+-]?\d+)?)|(?P<word>{_WORDS})\b)"
    rf"(?:(?P<pct>\s?%)"
    rf"|(?P<ratio>[x×])(?![\w.])"
    rf"|\s?(?P<unit>{_UNIT})(?:\s(?P<num2>\d+)\s?(?P<unit2>{_UNIT}))?(?![\w-])"
    rf"|\s(?:(?:more|fewer|different|separate|independent|training|trained|full|short|"
    rf"long|random|residual|plain|deep|other)\s)?(?P<noun>{_NOUN})\b"
    rf")?",
    re.IGNORECASE,
)
# A number in an output, with an optional unit or percent sign after it.
_OUTPUT_NUMBER = re.compile(
    rf"(?<![\w.])-?(?P<num>{_NUM}(?:e[+-]?\d+)?)(?![\d])"
    rf"(?:(?P<pct>\s?%)|\s?(?P<unit>{_UNIT})(?![\w]))?",
    re.IGNORECASE,
)
_CLOCK = re.compile(r"(?<![\d:])(?:(\d+):)?(\d{1,2}):(\d\d)(?![\d:])")  # tqdm's 01:11
_CODE_NUMBER = re.compile(r"(?<![\w.])(\d[\d_]*(?:\.\d+)?(?:e[+-]?\d+)?)(?![\w.])", re.I)

# What the prose does not state as a figure.
_STRIP = [
    (re.compile(r"^(```|~~~).*?^\1", re.S | re.M), " [code] "),
    (re.compile(r"\$\$.*?\$\$", re.S), " [math] "),
    (re.compile(r"(?<!\\)\$[^$\n]+?(?<!\\)\$"), " [math] "),
    (re.compile(r"`[^`\n]+`"), " [code] "),
    (re.compile(r"\]\([^)\s]*\)"), "]"),  # link and image targets
    (re.compile(r"https?://\S+|www\.\S+"), " [url] "),
    (re.compile(r"<[^>\n]+>"), " "),  # HTML tags
    (re.compile(r"^(#+\s*)\d+(?:\.\d+)*\.?(?=\s)", re.M), r"\1"),  # "## 3." numbering
]
# Context that makes a number a name, a version or a reference rather than a figure.
_NOT_A_FIGURE_BEFORE = re.compile(
    r"(?:[A-Za-z]-|\d[x×]|(?:python|pytorch|torch|torchvision|numpy|version|v|"
    r"section|sections|chapter|§|sec\.|eq\.|equation|step|exercise|notebook|notebooks|"
    r"cell|stage|stages|layer|layers|block|blocks|issue|#)\s?(?:[\d.]+\s?(?:[-–,]|and|to)\s?)*)$",
    re.IGNORECASE,
)
_NOT_A_FIGURE_AFTER = re.compile(r"^(?:[x×]\d|-[A-Za-z]|\.\d|\.\d+\.\d)")
_LIBRARY_DEFAULT = re.compile(r"^\s*by default\b", re.IGNORECASE)  # "600 s by default"
_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n\s*\n|\n(?=\s*(?:[-*|]|\d+\.)\s|#)")
_ABBREVIATIONS = ("al", "e.g", "i.e", "vs", "cf", "approx", "fig", "eq", "sec", "etc")


@dataclass(frozen=True)
class Figure:
    """One figure stated in a Markdown cell."""

    text: str  # as written: "0.905", "92%", "13 min 24 s", "24 networks"
    value: float  # the number; a time in seconds, a size in MB, a percentage as a fraction
    tolerance: float  # half a unit of the last written digit, in the same scale
    kind: str  # "number", "percent", "time", "size", "angle", or a count noun's kind
    written: float  # the number as written, before any unit: 3 for "3 minutes"
    cell: int
    sentence: str


def _text(source: str | list[str]) -> str:
    return "".join(source) if isinstance(source, list) else source


def _half_unit(number: str) -> float:
    """Half a unit of the last written digit: 0.005 for "0.92", 5000 for "1.4e5"."""
    mantissa, _, exponent = number.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


def _parse(number: str) -> float:
    return float(number.replace(",", "").replace("_", ""))


def prose(markdown: str) -> str:
    """The Markdown with math, code, URLs, tags and heading numbers replaced by markers."""
    for pattern, replacement in _STRIP:
        markdown = pattern.sub(replacement, markdown)
    return markdown


def _sentence_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    left, right = 0, len(text)
    for match in _SENTENCE_END.finditer(text):
        if match.group().startswith("."):
            word = re.search(r"[\w.]*$", text[: match.start()]).group().lower()
            if word in _ABBREVIATIONS:
                continue
        if match.end() <= start:
            left = match.end()
        elif match.start() >= end:
            right = match.end()
            break
    return left, right


def figures_in_markdown(markdown: str, cell: int = 0) -> list[Figure]:
    """The figures a Markdown cell states, with the sentence around each."""
    text = prose(markdown)
    sources = [m.span() for m in _SOURCE.finditer(text)]  # "He et\nal." touches both lines
    figures = []
    for match in _FIGURE.finditer(text):
        num, word, unit, noun = (match.group(g) for g in ("num", "word", "unit", "noun"))
        pct, ratio = match.group("pct"), match.group("ratio")
        if num is None and not (unit or noun):
            continue  # a number word is a figure only with its unit or noun
        if num is not None:
            if _NOT_A_FIGURE_BEFORE.search(text[: match.start()]):
                continue
            if _NOT_A_FIGURE_AFTER.match(text[match.start() + len(num) :]):
                continue
            plain = not (pct or ratio or unit or noun)
            if plain and not re.search(r"[.,e]", num, re.IGNORECASE):
                continue  # a bare integer: a shape, a depth, a size, not a measurement
        if _LIBRARY_DEFAULT.match(text[match.end() :]):
            continue  # a library's default is a setting: "a timeout (600 s by default)"
        line_start = text.rfind("\n", 0, match.start()) + 1
        line_end = text.find("\n", match.end())
        line_end = line_end if line_end >= 0 else len(text)
        left, right = _sentence_bounds(text, match.start(), match.end())
        sentence = " ".join(text[left:right].split())
        if any(start < line_end and end > line_start for start, end in sources):
            continue  # quoted: the line names its source
        if num is not None:
            value, tolerance = _parse(num), _half_unit(num)
        else:
            value, tolerance = float(NUMBER_WORDS[word.lower()]), 0.5
        written = value
        if pct:
            kind, value, tolerance = "percent", value / 100, tolerance / 100
        elif unit:
            kind, factor = UNITS[unit.lower()]
            value, tolerance = value * factor, tolerance * factor
            if match.group("unit2"):
                _, factor2 = UNITS[match.group("unit2").lower()]
                value += _parse(match.group("num2")) * factor2
                tolerance = 0.5 * factor2
        elif noun:
            kind, tolerance = COUNT_NOUNS[noun.lower()], 0.0  # a count is exact
        else:
            kind = "number"
        written_text = " ".join(match.group().split())
        figures.append(Figure(written_text, value, tolerance, kind, written, cell, sentence))
    return figures


@dataclass
class Shown:
    """Everything a notebook shows: output numbers by kind, and its code lines."""

    numbers: list[float]  # every number printed, percentages also as fractions
    with_unit: dict[str, list[float]]  # "time" (seconds), "size" (MB), "angle" -> values
    code_lines: list[str]


def _output_texts(cell: dict) -> list[str]:
    texts = []
    for output in cell.get("outputs", []):
        if "text" in output:
            texts.append(_text(output["text"]))
        if output.get("output_type") == "error":
            texts.append(f"{output.get('ename', '')}: {output.get('evalue', '')}")
        for mime, data in output.get("data", {}).items():
            if mime.startswith("text/"):
                data = _text(data)
                if mime == "text/html":
                    data = html.unescape(re.sub(r"<[^>]*>", " ", data))
                texts.append(data)
    return texts


def shown_in(notebook: dict) -> Shown:
    """What the outputs of a notebook print, and the lines of its code cells."""
    shown = Shown([], {"time": [], "size": [], "angle": []}, [])
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        for line in _text(cell["source"]).splitlines():
            shown.code_lines.append(line.split("#", 1)[0])  # a comment is not a setting
        for text in _output_texts(cell):
            for match in _OUTPUT_NUMBER.finditer(text):
                value = abs(_parse(match.group("num")))
                shown.numbers.append(value)
                if match.group("pct"):
                    shown.numbers.append(value / 100)
                if match.group("unit"):
                    kind, factor = UNITS[match.group("unit").lower()]
                    shown.with_unit[kind].append(value * factor)
            for match in _CLOCK.finditer(text):
                hours, minutes, seconds = (int(g or 0) for g in match.groups())
                shown.with_unit["time"].append(3600 * hours + 60 * minutes + seconds)
    return shown


def _code_value(line: str, value: float, percent: bool = False) -> bool:
    """Whether the code line writes the number (a fraction also stands for its percentage)."""
    for token in _CODE_NUMBER.findall(line):
        number = _parse(token)
        if abs(number - value) <= 1e-9 * max(1.0, abs(value)):
            return True
        if percent and abs(100 * number - 100 * value) <= 1e-9:
            return True
    return False


def _identifier_words(line: str) -> set[str]:
    """The words of a code line's names: BUDGET_MINUTES -> {"budget", "minutes"}."""
    line = re.sub(r"([a-z])([A-Z])", r"\1 \2", line)
    return {word.lower() for word in re.findall(r"[A-Za-z]+", line)}


def is_shown(figure: Figure, shown: Shown) -> bool:
    """Whether an output prints the figure, or a code cell sets or asserts it (module doc)."""
    near = figure.tolerance + 1e-9 * max(1.0, abs(figure.value))
    if figure.kind in shown.with_unit:  # a time, a size, an angle: printed with a unit
        printed = shown.with_unit[figure.kind]
    else:
        printed = shown.numbers
    if any(abs(value - figure.value) <= near for value in printed):
        return True
    percent = figure.kind == "percent"
    for line in shown.code_lines:
        words = _identifier_words(line)
        if words & DRAWING_WORDS:
            continue  # alpha=0.4 draws a figure; it sets nothing the prose talks about
        if figure.kind in SETTING_WORDS:  # a time, a size, an angle or a count
            values = {figure.written, figure.value}  # BUDGET_MINUTES = 3 or budget=180
            if SETTING_WORDS[figure.kind] & words and any(_code_value(line, v) for v in values):
                return True
            asserted = figure.kind != "time" and line.lstrip().startswith("assert ")
            if asserted and _code_value(line, figure.written):
                return True  # the cell asserts the bound the prose states: mae < 12
        elif _code_value(line, figure.value, percent):
            return True
    return False


# How long a whole notebook takes is stated once, in its first cell, as measured, with the
# CPU kind ("runs top to bottom in about 2 minutes on a 2-core AVX2 laptop CPU"). No output
# can print it, so the README's row for that notebook must give the same time: the two agree.
RUN_TIME_CPU = re.compile(r"\bon an? [^.]*?\b(?:AVX2|AVX-512|GPU)\b")


def readme_row(name: str) -> str:
    """The README's row of the notebook table for notebook ``name`` (empty if none)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith("|") and f"`{name}`" in line]
    return rows[0] if rows else ""


def run_time_figures(notebook: dict) -> list[Figure]:
    """The times the first Markdown cell states next to a CPU kind: the notebook's run time."""
    first = next((c for c in notebook["cells"] if c["cell_type"] == "markdown"), None)
    if first is None:
        return []
    figures = figures_in_markdown(_text(first["source"]), notebook["cells"].index(first))
    return [f for f in figures if f.kind == "time" and RUN_TIME_CPU.search(f.sentence)]


def unsupported(notebook: dict, name: str = "", readme: str | None = None) -> list[Figure]:
    """The figures in a notebook's Markdown that no output shows and no code sets.

    The run time stated in the first cell (:func:`run_time_figures`) counts as shown when
    ``readme`` (by default the README's row for the notebook) states the same time."""
    shown = shown_in(notebook)
    allowed = ALLOWED.get(name, {})
    readme = readme_row(name) if readme is None else readme
    agreed = {f for f in run_time_figures(notebook) if f.text in readme}
    return [
        figure
        for index, cell in enumerate(notebook["cells"])
        if cell["cell_type"] == "markdown"
        for figure in figures_in_markdown(_text(cell["source"]), index)
        if figure.text not in allowed and figure not in agreed and not is_shown(figure, shown)
    ]


def report(name: str, figures: list[Figure]) -> str:
    lines = [
        f"{name}: {len(figures)} figure(s) in the prose that no output of the notebook shows."
        " Print the number from code, quote the printed number, or name the source on the"
        " same line (see tests/test_prose_numbers.py):"
    ]
    lines += [f"  cell {f.cell}: {f.text!r} in: {f.sentence}" for f in figures]
    return "\n".join(lines)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_prose_figures_are_shown(path: Path) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    figures = unsupported(notebook, path.stem)
    if figures:
        pytest.fail(report(path.name, figures), pytrace=False)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_each_notebook_states_its_run_time_once_and_the_readme_agrees(path: Path) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    times = run_time_figures(notebook)
    assert len(times) == 1, (
        f"{path.name}: its first Markdown cell should state once how long the notebook runs,"
        f" as measured, with the CPU kind ('runs top to bottom in about 2 minutes on a 2-core"
        f" AVX2 laptop CPU'); found {[f.text for f in times]}"
    )
    row = readme_row(path.stem)
    assert times[0].text in row, (
        f"{path.name} says it runs in {times[0].text!r}; the README's row for it does not:"
        f" {row or '(no row naming `' + path.stem + '`)'}"
    )


def test_a_run_time_needs_the_readme_to_agree() -> None:
    notebook = _doctored("It runs in about 3 minutes on a 2-core AVX2 laptop CPU.", "")
    (time,) = run_time_figures(notebook)
    assert unsupported(notebook, readme="| `x` | ... about 2 minutes ... |") == [time]
    assert unsupported(notebook, readme="| `x` | ... about 3 minutes ... |") == []


def test_allowlist_names_figures_the_notebooks_state() -> None:
    """Each entry of ALLOWED has a reason and still matches a figure (the list cannot rot)."""
    paths = {p.stem: p for p in NOTEBOOKS}
    for name, entries in ALLOWED.items():
        assert name in paths, f"ALLOWED names {name!r}, which is not a notebook: {sorted(paths)}"
        notebook = json.loads(paths[name].read_text(encoding="utf-8"))
        stated = {
            figure.text
            for index, cell in enumerate(notebook["cells"])
            if cell["cell_type"] == "markdown"
            for figure in figures_in_markdown(_text(cell["source"]), index)
        }
        for figure, reason in entries.items():
            assert len(reason.split()) >= 3, f"ALLOWED[{name!r}][{figure!r}] needs a reason"
            assert figure in stated, (
                f"ALLOWED[{name!r}] lists {figure!r}, which {name} no longer states: "
                "remove the entry"
            )


def _doctored(prose_line: str, output: str) -> dict:
    """A two-cell notebook: one Markdown cell, one code cell that printed ``output``."""
    return {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": [prose_line]},
            {
                "cell_type": "code",
                "metadata": {},
                "source": ["print(accuracy)"],
                "outputs": [{"output_type": "stream", "name": "stdout", "text": [output]}],
            },
        ]
    }


def test_guard_flags_a_typed_number() -> None:
    notebook = _doctored("The network reaches 0.934 test accuracy.", "test accuracy 0.921\n")
    flagged = unsupported(notebook)
    assert [(f.cell, f.text) for f in flagged] == [(0, "0.934")], flagged
    assert "0.934" in report("doctored.ipynb", flagged)
    assert "cell 0" in report("doctored.ipynb", flagged)


def test_guard_accepts_a_printed_number() -> None:
    assert unsupported(_doctored("It reaches 0.934 test accuracy.", "accuracy 0.934\n")) == []
    assert unsupported(_doctored("It reaches 93.4% test accuracy.", "accuracy 0.934\n")) == []
    assert unsupported(_doctored("It reaches about 0.93.", "accuracy 0.9337\n")) == []


def test_guard_accepts_a_cited_number() -> None:
    line = "ResNet-34 reaches 0.934 top-5 accuracy (He et al. 2015)."
    assert unsupported(_doctored(line, "nothing here\n")) == []
    # the source must be on the figure's own line: a citation on the line above covers
    # nothing, so a measurement cannot hide behind the paper it is compared with
    wrapped = "Our counts are 2% higher than in\nTable 6 of He et al."
    assert [f.text for f in unsupported(_doctored(wrapped, "nothing here\n"))] == ["2%"]


def test_guard_reads_tables_and_skips_library_defaults() -> None:
    table = "| setting | accuracy |\n|---|---|\n| none | 0.804 |\n| dropout | 0.796 |\n"
    flagged = unsupported(_doctored(table, "accuracy 0.796\n"))
    assert [(f.text, f.sentence) for f in flagged] == [("0.804", "| none | 0.804 |")], flagged
    assert unsupported(_doctored("A timeout (600 s by default) stops it.", "\n")) == []


def test_guard_catches_a_number_typed_into_a_real_notebook() -> None:
    """Type a figure into a copy of a saved notebook: exactly that figure is flagged."""
    path = NOTEBOOKS[0]
    notebook = json.loads(path.read_text(encoding="utf-8"))
    before = {(f.cell, f.text) for f in unsupported(notebook, path.stem)}
    index = next(i for i, c in enumerate(notebook["cells"]) if c["cell_type"] == "markdown")
    doctored = copy.deepcopy(notebook)
    doctored["cells"][index]["source"] = _text(notebook["cells"][index]["source"]) + (
        "\n\nTrained for 37 epochs, this block reaches 0.9731 test accuracy in 41 s."
    )
    after = {(f.cell, f.text) for f in unsupported(doctored, path.stem)}
    assert after - before == {(index, "37 epochs"), (index, "0.9731"), (index, "41 s")}, after


def test_guard_reads_times_with_their_unit() -> None:
    assert unsupported(_doctored("It took 71 s.", "done in 70.6 s\n")) == []
    assert unsupported(_doctored("It took 3 minutes.", "done in 180 s\n")) == []
    assert unsupported(_doctored("It took 13 min 24 s.", "804.2 s\n")) == []
    flagged = unsupported(_doctored("It takes about two minutes.", "done in 71 s, 2 GPUs\n"))
    assert [f.text for f in flagged] == ["two minutes"], flagged


def test_guard_counts_runs_and_ignores_names_and_shapes() -> None:
    flagged = unsupported(_doctored("It trains more than thirty networks.", "24 runs\n"))
    assert [f.text for f in flagged] == ["thirty networks"], flagged
    flagged = unsupported(_doctored("A change of -0.013 and -0.008.", "change -0.008\n"))
    assert [f.text for f in flagged] == ["0.013"], flagged
    noise = (
        "## 3. ResNet-18 on 28x28 images\n\nA 3x3 conv, a 1x1 shortcut, a 56-layer net, plain-20, "
        "a 3-minute run, shape (4, 3, 6, 6), Python 3.11, sections 8.5-8.6 and 8.7, "
        "$\\eta = 0.05$, `lr=0.1`, "
        "see https://example.org/v1.5."
    )
    assert figures_in_markdown(noise) == []


if __name__ == "__main__":  # list each figure of the named notebooks and what shows it
    for arg in sys.argv[1:]:
        path = Path(arg)
        nb = json.loads(path.read_text(encoding="utf-8"))
        shown, allowed = shown_in(nb), ALLOWED.get(path.stem, {})
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] == "markdown":
                for fig in figures_in_markdown(_text(cell["source"]), i):
                    mark = "allowed" if fig.text in allowed else "shown  "
                    mark = mark if fig.text in allowed or is_shown(fig, shown) else "MISSING"
                    print(f"{mark} cell {fig.cell:2d} {fig.kind:7s} {fig.text!r}: {fig.sentence}")
