"""What a run shows while it trains: a progress bar, and in a notebook the lecture's curves,
redrawn after every epoch over a recorded reference run."""

from __future__ import annotations

import io
import sys
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
    """The lecture's training curves in a notebook output, redrawn after every epoch."""

    def __init__(self, num_epochs: float, reference: dict[str, Any] | None = None) -> None:
        self.num_epochs = num_epochs  # fixed x range: the axes do not jump while training
        self.reference = reference  # {"history": [...], "label": "..."} drawn underneath
        self.handle = None

    def update(self, history: list[dict[str, float]]) -> None:
        """Draw ``history`` (one dict per epoch) in place of the last drawing."""
        from IPython.display import Image, display

        from ..plots import plot_history  # matplotlib loads when a curve is drawn

        ref = self.reference or {}
        figure = plot_history(
            history,
            num_epochs=self.num_epochs,
            reference=ref.get("history"),
            reference_label=ref.get("label", "reference run"),
        )
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight")
        image = Image(data=buffer.getvalue(), format="png")
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)


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
    return {"history": run["history"], "label": run_label(run)}


def progress_bar(settings: Any, recipe: Any, total: int, initial: int) -> Any:
    """A tqdm bar over ``total`` optimizer steps (a widget in a notebook), shown on rank 0
    when ``settings.progress``; ``initial`` steps are done already (a resumed run)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=min(total, initial),
        disable=not (settings.progress and settings.rank == 0),
        desc=f"{recipe.name}",
        unit="batch",
        dynamic_ncols=True,
        leave=True,
        # At most one update a second: in a notebook each update is a widget message, and
        # thousands of them over a few minutes overflow the kernel's output queue (nbval
        # then loses the end-of-cell message and fails the cell).
        mininterval=1.0,
    )
