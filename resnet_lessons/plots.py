"""Figures for the notebooks: training curves, image grids, confusion matrices, mistakes.

Every function returns a :class:`matplotlib.figure.Figure` (or draws into the axes you
pass). Figures are made with ``matplotlib.figure.Figure``, not ``pyplot``: nothing is
registered globally, no rcParams are touched, and a figure left as the last expression of a
notebook cell shows once, as a PNG, whether or not ``pyplot`` was imported.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._checks import format_seconds
from .data import CLASSES, MEAN, STD

#: Recorded runs shipped with the package (``metrics.json`` files of
#: ``python -m resnet_lessons train``), for :func:`load_run`. Their names say the recipe,
#: the budget and the CPU kind they were measured on.
REFERENCE_RUNS = Path(__file__).with_name("reference_runs")

#: The three curves of the lecture's plot: history key -> (legend label, line style).
HISTORY_CURVES: dict[str, tuple[str, str]] = {
    "train_loss": ("train loss", "-"),
    "train_acc": ("train acc", "--"),
    "test_acc": ("test acc", "-."),
}

#: Drawn too when every entry has it (``fit`` on data with a validation split).
OPTIONAL_CURVES: dict[str, tuple[str, str]] = {"val_acc": ("val acc", ":")}


class NotebookFigure(Figure):
    """A Figure that Jupyter shows as a PNG even when ``pyplot`` was never imported."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()


def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    figsize: tuple[float, float] = (4.0, 3.0),
    **subplot_kw: object,
) -> tuple[Figure, Axes | object]:
    """A fresh ``(Figure, axes)`` pair like ``plt.subplots``, without pyplot's global state."""
    fig = NotebookFigure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=True, **subplot_kw)


# --------------------------------------------------------------------------- training curves


def plot_history(
    history: Sequence[Mapping[str, float]],
    axes: Axes | None = None,
    *,
    num_epochs: float | None = None,
    reference: Sequence[Mapping[str, float]] | None = None,
    reference_label: str = "reference run",
) -> Figure:
    """The lecture's training plot: train loss, train accuracy and test accuracy per epoch.

    ``history`` is a list of dicts with keys ``epoch, train_loss, train_acc, test_acc``
    (and ``val_acc``, drawn too when every entry has it; ``seconds`` and other keys are
    ignored), as ``train.fit`` returns it; ``epoch`` may be a
    fraction (a time budget's last, partial epoch). With ``axes`` the curves are redrawn
    into them (cleared first, so calling it after every epoch animates the plot); otherwise
    a new figure is made. ``num_epochs`` fixes the x range to ``1..num_epochs`` so that the
    axes do not jump while training runs. ``reference`` is another history (for example a
    recorded run's ``metrics.json["history"]``) drawn underneath in grey, so a live run can
    be watched against it from the first second. Returns the figure.
    """
    rows = _history_rows(history, "history")
    reference_rows = _history_rows(reference or [], "reference")
    if axes is None:
        fig, axes = new_figure(figsize=(3.5, 2.5))
    else:
        fig = axes.figure
        axes.cla()
    if reference_rows:
        ref_epochs = [row["epoch"] for row in reference_rows]
        for i, (key, (_, style)) in enumerate(HISTORY_CURVES.items()):
            axes.plot(
                ref_epochs,
                [row[key] for row in reference_rows],
                style,
                color="0.6",
                linewidth=2.5,
                alpha=0.6,
                label=reference_label if i == 0 else None,
            )
    epochs = [row["epoch"] for row in rows]
    curves = dict(HISTORY_CURVES)
    curves.update({k: v for k, v in OPTIONAL_CURVES.items() if rows and all(k in r for r in rows)})
    for key, (label, style) in curves.items():
        axes.plot(epochs, [row[key] for row in rows], style, marker="o", markersize=3, label=label)
    axes.set_xlabel("epoch")
    every = epochs + [row["epoch"] for row in reference_rows]
    last = math.ceil(max([num_epochs or 0, *every, 1]))
    first = min([1, *every])
    axes.set_xlim(max(0.0, first - 0.2), last + 0.2)
    axes.set_xticks(_epoch_ticks(last))
    axes.grid(True, alpha=0.3)
    axes.legend(loc="center right", fontsize="small")
    return fig


def plot_live(
    history: Sequence[Mapping[str, float]],
    points: Sequence[Mapping[str, float]] = (),
    *,
    num_epochs: float | None = None,
    reference: Sequence[Mapping[str, float]] | None = None,
    reference_points: Sequence[Mapping[str, float]] | None = None,
    reference_label: str = "reference run",
) -> Figure:
    """The live curves of a run, about 800 px wide for a projector: loss on the left, accuracy
    on the right, each on its own labelled axis, the legend below both, clear of the data.

    ``points`` are the live points ``fit`` takes during its epochs (``history.points``: the
    training loss and accuracy since the previous point, the accuracy on a fixed subset of
    the test images), drawn as lines; ``history`` (one dict per epoch) adds the whole test
    set's accuracy at each epoch's end as large dots (and is drawn as lines when there are no
    points). ``reference`` and ``reference_points``, a recorded run's, are drawn underneath
    in grey. ``num_epochs`` fixes the x range. Returns the figure.
    """
    rows = _history_rows(history, "history")
    live = _history_rows(points, "points")
    ref_rows = _history_rows(reference or [], "reference")
    ref_live = _history_rows(reference_points or [], "reference points")
    fig, (loss_ax, acc_ax) = new_figure(1, 2, figsize=(8.0, 3.4))
    grey = {"color": "0.65", "linewidth": 2.5, "alpha": 0.7}
    ref_curve = ref_live or ref_rows
    if ref_curve:
        x = [row["epoch"] for row in ref_curve]
        loss_ax.plot(x, [row["train_loss"] for row in ref_curve], "-", **grey)
        acc_ax.plot(x, [row["train_acc"] for row in ref_curve], "--", **grey)
        acc_ax.plot(x, [row["test_acc"] for row in ref_curve], "-", label=reference_label, **grey)
    curve = live or rows
    x = [row["epoch"] for row in curve]
    loss = [row["train_loss"] for row in curve]
    loss_ax.plot(x, loss, "-", color="C0", marker=".", label="train loss")
    acc_ax.plot(x, [row["train_acc"] for row in curve], "--", color="C0", label="train acc")
    test = "test acc (1,000 test images)" if live else "test acc"
    acc_ax.plot(x, [row["test_acc"] for row in curve], "-", color="C1", marker=".", label=test)
    ends = [row for row in rows if not math.isnan(row["test_acc"])]
    if live and ends:
        acc_ax.plot(
            [row["epoch"] for row in ends],
            [row["test_acc"] for row in ends],
            "o",
            color="C3",
            markersize=8,
            label="test acc, whole test set (epoch end)",
        )
    every = [row["epoch"] for row in (*curve, *ref_curve, *rows, *ref_rows)]
    last = math.ceil(max([num_epochs or 0, *every, 1]))
    for ax, label in ((loss_ax, "train loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_xlim(0, last * 1.03)
        ax.set_xticks(_epoch_ticks(last) if last > 1 else [0, 0.5, 1])
        ax.grid(True, alpha=0.3)
    fig.legend(loc="outside lower center", ncol=3, fontsize="small", frameon=False)
    return fig


def load_run(path: str | os.PathLike) -> dict:
    """A recorded run: the ``metrics.json`` that ``python -m resnet_lessons train`` writes
    (``recipe``, ``history``, and where it was measured: ``machine``, ``cpu_kind``,
    ``plan``). Raises ``ValueError`` naming the file when it is not one."""
    path = Path(path)
    try:
        run = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read a recorded run from {path}: {error}") from None
    if not isinstance(run, dict) or not isinstance(run.get("history"), list):
        raise ValueError(
            f"{path} is not a metrics.json of `python -m resnet_lessons train` (no history)."
        )
    _history_rows(run["history"], f"{path.name} history")
    return run


def run_label(run: Mapping) -> str:
    """A legend label that says what a recorded run was and where it ran:
    ``recorded: fast, 3 min, AVX2 CPU``."""
    parts = [str(run.get("recipe", "run"))]
    plan = run.get("plan")
    if plan:
        parts.append(format_seconds(plan["budget"]))
    if run.get("device") == "cpu" and run.get("cpu_kind"):
        parts.append(f"{run['cpu_kind']} CPU")
    elif run.get("device"):
        parts.append(str(run["device"]))
    return "recorded: " + ", ".join(parts)


def _history_rows(history: Sequence[Mapping[str, float]], name: str) -> list[Mapping[str, float]]:
    rows = list(history)
    for i, row in enumerate(rows):
        missing = [key for key in ("epoch", *HISTORY_CURVES) if key not in row]
        if missing:
            raise ValueError(
                f"{name}[{i}] lacks {', '.join(missing)}; each entry needs epoch, train_loss, "
                f"train_acc and test_acc (got keys {sorted(row)})."
            )
    return rows


def _epoch_ticks(last: int) -> list[int]:
    step = max(1, -(-last // 10))  # at most ~10 ticks
    return list(range(1, last + 1, step))


# --------------------------------------------------------------------------- images


def _as_pixels(images: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """``(N, 1, H, W)`` or ``(N, H, W)`` uint8 or normalised float -> ``(N, H, W)`` and the
    value range to show (0..255 for uint8, the normalised range of 0..255 otherwise)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}.")
    if images.ndim == 4:
        if images.shape[1] != 1:
            raise ValueError(
                f"images must have one channel, got shape {tuple(images.shape)} "
                f"({images.shape[1]} channels)."
            )
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"images must be (N, 1, H, W) or (N, H, W), got {tuple(images.shape)}.")
    images = images.detach().to("cpu")
    if images.dtype == torch.uint8:
        return images, 0.0, 255.0
    return images.float(), (0.0 - MEAN) / STD, (1.0 - MEAN) / STD


def image_grid(n: int, ncols: int, scale: float, title_lines: int = 1) -> tuple[Figure, object]:
    """A figure with room for ``n`` square panels in rows of at most ``ncols``, each
    ``scale`` inches wide with ``title_lines`` lines of title; returns ``(figure, axes)``,
    the axes a ``(rows, cols)`` array."""
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig = NotebookFigure(
        figsize=(scale * ncols, scale * nrows * (1 + 0.2 * title_lines)), layout="constrained"
    )
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def show_images(
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int] | None = None,
    classes: Sequence[str] = CLASSES,
    *,
    predictions: torch.Tensor | Sequence[int] | None = None,
    confidences: torch.Tensor | Sequence[float] | None = None,
    ncols: int = 8,
    scale: float = 1.3,
) -> Figure:
    """A grid of images with their class names: ``(N, 1, H, W)`` -> one panel per image.

    ``images``: uint8 pixels (as loaded) or batches from ``prepare_batch`` (normalised).
    ``labels``: the true classes, shown as titles. With ``predictions`` each title is
    ``predicted`` over ``(true ...)``, green when right and red when wrong, with
    ``confidences`` (probabilities in 0..1) as a percentage.
    """
    pixels, vmin, vmax = _as_pixels(images)
    n = len(pixels)
    if n == 0:
        raise ValueError("show_images got no images (N = 0).")
    for name, values in (
        ("labels", labels),
        ("predictions", predictions),
        ("confidences", confidences),
    ):
        if values is not None and len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries for {n} images.")
    if predictions is not None and labels is None:
        raise ValueError("predictions need the true labels too: pass labels=...")
    if ncols < 1:
        raise ValueError(f"ncols must be at least 1, got {ncols}.")
    fig, axes = image_grid(n, ncols, scale, title_lines=1 if predictions is None else 2)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(pixels[i].numpy(), cmap="gray", vmin=vmin, vmax=vmax)
        if labels is None:
            continue
        true = int(labels[i])
        if predictions is None:
            ax.set_title(classes[true], fontsize="small")
            continue
        predicted = int(predictions[i])
        title = classes[predicted]
        if confidences is not None:
            title += f" {100 * float(confidences[i]):.0f}%"
        ax.set_title(
            f"{title}\n(true {classes[true]})",
            fontsize="x-small",
            color="tab:green" if predicted == true else "tab:red",
        )
    return fig


# --------------------------------------------------------------------------- confusion matrix


def confusion_matrix(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int = 10
) -> torch.Tensor:
    """Counts ``(num_classes, num_classes)`` int64: row = true class, column = predicted class.

    ``predictions``, ``labels``: ``(N,)`` class indices. ``matrix[i, j]`` is how many images of
    class ``i`` were predicted as class ``j``; the diagonal holds the correct ones, each row sums
    to the number of images of that class.
    """
    predictions = torch.as_tensor(predictions).detach().to("cpu").long().flatten()
    labels = torch.as_tensor(labels).detach().to("cpu").long().flatten()
    if predictions.shape != labels.shape:
        raise ValueError(
            f"predictions and labels differ in length: {predictions.numel()} vs {labels.numel()}."
        )
    for name, values in (("predictions", predictions), ("labels", labels)):
        if values.numel() and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} must lie in 0..{num_classes - 1}, got values from {int(values.min())} "
                f"to {int(values.max())}; pass class indices (logits.argmax(1)), or a larger "
                "num_classes."
            )
    counts = torch.bincount(labels * num_classes + predictions, minlength=num_classes**2)
    return counts.view(num_classes, num_classes)


def plot_confusion_matrix(
    matrix: torch.Tensor,
    classes: Sequence[str] = CLASSES,
    *,
    axes: Axes | None = None,
    normalize: bool = False,
) -> Figure:
    """Draw a confusion matrix (rows: true class, columns: predicted) with the counts written in
    each cell; ``normalize=True`` shows each row as fractions of that class instead."""
    matrix = torch.as_tensor(matrix).detach().to("cpu")
    k = len(classes)
    if matrix.shape != (k, k):
        raise ValueError(f"matrix must be {k} x {k} for {k} classes, got {tuple(matrix.shape)}.")
    values = matrix.double()
    if normalize:
        values = values / values.sum(dim=1, keepdim=True).clamp(min=1)
    if axes is None:
        fig, axes = new_figure(figsize=(0.55 * k + 2.0, 0.5 * k + 1.2))
    else:
        fig = axes.figure
    image = axes.imshow(values.numpy(), cmap="Blues", vmin=0)
    peak = float(values.max()) or 1.0
    for i in range(k):
        for j in range(k):
            value = float(values[i, j])
            text = f"{value:.2f}" if normalize else f"{int(matrix[i, j])}"
            axes.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize="x-small",
                color="white" if value > 0.6 * peak else "black",
            )
    axes.set_xticks(range(k), classes, rotation=45, ha="right", fontsize="small")
    axes.set_yticks(range(k), classes, fontsize="small")
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    fig.colorbar(image, ax=axes, shrink=0.8)
    return fig


def most_confident_mistakes(
    logits: torch.Tensor, labels: torch.Tensor, k: int = 16
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` wrong predictions the model was surest of.

    ``logits``: ``(N, num_classes)``, ``labels``: ``(N,)`` -> ``(indices, predictions,
    confidences)``, each ``(min(k, number of mistakes),)``, most confident first; confidences
    are the softmax probabilities of the predicted class.
    """
    logits = torch.as_tensor(logits).detach().to("cpu").float()
    labels = torch.as_tensor(labels).detach().to("cpu").long()
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"logits must be (N, num_classes) and labels (N,), got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}."
        )
    probabilities = logits.softmax(dim=1)
    confidences, predictions = probabilities.max(dim=1)
    wrong = (predictions != labels).nonzero().flatten()
    order = confidences[wrong].argsort(descending=True, stable=True)[:k]
    indices = wrong[order]
    return indices, predictions[indices], confidences[indices]
