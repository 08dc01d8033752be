"""What a run shows while it trains: a progress bar, and in a notebook the lecture's curves,
redrawn at every live point and epoch over a recorded reference run."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from typing import Any


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, classic Notebook, VS Code, Colab).

    False in a terminal, in plain IPython and under pytest (no kernel there).
    """
    if "IPython" not in sys.modules:  # a notebook kernel always has IPython imported
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    if shell is None:
        return False
    names = {cls.__name__ for cls in type(shell).__mro__}
    return "ZMQInteractiveShell" in names or "IPKernelApp" in getattr(shell, "config", {})


class LivePlot:
    """The lecture's training curves in a notebook output (:func:`~resnet_lessons.plots.plot_live`:
    loss and accuracy side by side), redrawn in place at every live point and epoch."""

    def __init__(self, num_epochs: float, reference: dict[str, Any] | None = None) -> None:
        self.num_epochs = num_epochs  # fixed x range: the axes do not jump while training
        self.reference = reference  # {"history", "points", "label"} drawn underneath
        self.handle = None

    def update(
        self, history: list[dict[str, float]], points: list[dict[str, float]] | None = None
    ) -> None:
        """Draw ``history`` (one dict per epoch) and ``points`` (the live points) in place of
        the last drawing."""
        from IPython.display import Image, display

        image = Image(
            data=_live_png(history, points, self.num_epochs, self.reference), format="png"
        )
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)


def _live_png(
    history: list[dict[str, float]],
    points: list[dict[str, float]] | None,
    num_epochs: float,
    reference: dict[str, Any] | None,
) -> bytes:
    from ..plots import plot_live  # matplotlib loads when a curve is drawn

    ref = reference or {}
    figure = plot_live(
        history,
        points or [],
        num_epochs=num_epochs,
        reference=ref.get("history"),
        reference_points=ref.get("points"),
        reference_label=ref.get("label", "reference run"),
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def time_one_drawing(clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds one redraw of the live curves takes here (a figure of 20 points rendered to a
    PNG), for a budget's plan; the first drawing, which loads matplotlib, is not timed."""
    points = [
        {"epoch": i / 10, "train_loss": 1.0, "train_acc": 0.5, "test_acc": 0.5} for i in range(20)
    ]
    _live_png([], points[:1], 2, None)
    start = clock()
    _live_png([], points, 2, None)
    return clock() - start


def reference_curves(run: dict[str, Any] | None) -> dict[str, Any] | None:
    """A recorded run (a ``metrics.json``) as the curves and label :class:`LivePlot` draws."""
    if run is None:
        return None
    from ..plots import run_label  # matplotlib loads when a curve is drawn

    if not isinstance(run, dict) or not isinstance(run.get("history"), list):
        raise TypeError(
            "reference must be a recorded run: the dict in a metrics.json written by "
            "`python -m resnet_lessons train` (load it with resnet_lessons.plots.load_run)."
        )
    return {"history": run["history"], "points": run.get("points"), "label": run_label(run)}


def progress_bar(settings: Any, recipe: Any, total: int, initial: int) -> Any:
    """A tqdm bar over ``total`` optimizer steps, shown on rank 0 when ``settings.progress``;
    ``initial`` steps are done already (a resumed run).

    In a notebook the bar is one line of text redrawn in place (:class:`OutputLine`), not
    tqdm's widget: a saved notebook then shows the finished bar, where a widget's saved
    text still reads 0% wherever its state is not rendered (the web book, GitHub)."""
    from tqdm import tqdm

    show = settings.progress and settings.rank == 0
    notebook = show and in_notebook()
    return tqdm(
        total=total,
        initial=min(total, initial),
        disable=not show,
        desc=f"{recipe.name}",
        unit="batch",
        file=OutputLine() if notebook else None,
        ncols=100 if notebook else None,
        ascii=False if notebook else None,
        dynamic_ncols=not notebook,
        leave=True,
        # At most one update a second: in a notebook each update is an output message, and
        # thousands of them over a few minutes overflow the kernel's output queue (nbval
        # then loses the end-of-cell message and fails the cell).
        mininterval=1.0,
    )


class OutputLine(io.TextIOBase):
    """A file for tqdm that keeps one line of a notebook's output: each write replaces the
    line shown (through an IPython display handle) with the last text written."""

    def __init__(self) -> None:
        self.handle = None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        line = text.replace("\r", "\n").strip("\n").rsplit("\n", 1)[-1]
        if line.strip():
            from IPython.display import display

            bundle = {"text/plain": line}
            if self.handle is None:
                self.handle = display(bundle, raw=True, display_id=True)
            else:
                self.handle.update(bundle, raw=True)
        return len(text)
