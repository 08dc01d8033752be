"""Tests for resnet_lessons.plots: figures are made (and render), the confusion matrix counts."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from matplotlib.figure import Figure

from resnet_lessons.data import CLASSES, prepare_batch
from resnet_lessons.plots import (
    REFERENCE_RUNS,
    confusion_matrix,
    load_run,
    most_confident_mistakes,
    new_figure,
    plot_confusion_matrix,
    plot_history,
    plot_live,
    run_label,
    show_images,
)

HISTORY = [
    {"epoch": 1, "train_loss": 0.9, "train_acc": 0.70, "test_acc": 0.80, "seconds": 12.0},
    {"epoch": 2, "train_loss": 0.5, "train_acc": 0.85, "test_acc": 0.86, "seconds": 11.5},
    {"epoch": 3, "train_loss": 0.3, "train_acc": 0.90, "test_acc": 0.89, "seconds": 11.7},
]


def renders(fig: Figure) -> bytes:
    """The figure as PNG bytes, the way Jupyter shows it."""
    png = fig._repr_png_()
    assert png.startswith(b"\x89PNG")
    return png


def test_plot_history_new_figure_has_the_three_curves() -> None:
    rc_before = dict(matplotlib.rcParams)
    fig = plot_history(HISTORY)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["train loss", "train acc", "test acc"]
    assert list(lines[0].get_xdata()) == [1, 2, 3]
    assert list(lines[0].get_ydata()) == [0.9, 0.5, 0.3]
    assert list(lines[2].get_ydata()) == [0.80, 0.86, 0.89]
    assert ax.get_xlabel() == "epoch"
    renders(fig)
    assert dict(matplotlib.rcParams) == rc_before


def test_plot_history_draws_the_validation_curve_when_there_is_one() -> None:
    with_val = [dict(row, val_acc=row["test_acc"] - 0.01) for row in HISTORY]
    lines = plot_history(with_val).axes[0].get_lines()
    assert [line.get_label() for line in lines][-1] == "val acc"
    assert list(lines[-1].get_ydata()) == pytest.approx([0.79, 0.85, 0.88])
    partly = [with_val[0], HISTORY[1]]  # not every entry has it: not drawn
    assert len(plot_history(partly).axes[0].get_lines()) == 3


def test_plot_history_redraws_into_given_axes() -> None:
    fig, ax = new_figure()
    for n in range(1, 4):  # what a live plot does after each epoch
        assert plot_history(HISTORY[:n], ax, num_epochs=10) is fig
        assert len(ax.get_lines()) == 3  # cleared, not stacked
        assert len(ax.get_lines()[0].get_xdata()) == n
    assert ax.get_xlim()[1] >= 10
    renders(fig)


def test_plot_history_rejects_missing_keys() -> None:
    with pytest.raises(ValueError, match="history\\[0\\] lacks test_acc"):
        plot_history([{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5}])


def test_plot_history_empty_is_an_empty_plot() -> None:
    fig = plot_history([], num_epochs=5)
    assert all(len(line.get_xdata()) == 0 for line in fig.axes[0].get_lines())


def test_a_reference_run_is_drawn_underneath_in_grey() -> None:
    reference = [dict(row, test_acc=row["test_acc"] + 0.01) for row in HISTORY]
    fig = plot_history(HISTORY[:1], num_epochs=3, reference=reference, reference_label="rec")
    lines = fig.axes[0].get_lines()
    assert len(lines) == 6  # three reference curves, then the three live ones
    assert [line.get_label() for line in lines[3:]] == ["train loss", "train acc", "test acc"]
    assert lines[0].get_label() == "rec"  # one legend entry for the reference
    assert all(line.get_label().startswith("_") for line in lines[1:3])
    assert all(line.get_color() == "0.6" for line in lines[:3])
    assert list(lines[2].get_ydata()) == [0.81, 0.87, 0.90]
    renders(fig)


def test_a_reference_alone_draws_before_the_first_epoch() -> None:
    fig = plot_history([], num_epochs=2, reference=HISTORY)
    assert len(fig.axes[0].get_lines()[0].get_xdata()) == 3
    with pytest.raises(ValueError, match=r"reference\[1\] lacks train_acc"):
        plot_history([], reference=[HISTORY[0], {"epoch": 2, "train_loss": 1, "test_acc": 1}])


def test_fractional_epochs_of_a_budget_fit_the_axes() -> None:
    history = [dict(HISTORY[0], epoch=0.4)]
    fig = plot_history(history)
    low, high = fig.axes[0].get_xlim()
    assert low <= 0.4 <= high


POINTS = [
    {"epoch": e / 4, "train_loss": 1 / e, "train_acc": 0.5 + e / 40, "test_acc": 0.5 + e / 50}
    for e in range(1, 13)
]


def test_the_live_plot_puts_loss_and_accuracy_on_their_own_labelled_axes() -> None:
    fig = plot_live(HISTORY, POINTS, num_epochs=3)
    loss_ax, acc_ax = fig.axes
    assert (loss_ax.get_ylabel(), acc_ax.get_ylabel()) == ("train loss", "accuracy")
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train loss"]
    assert len(loss_ax.get_lines()[0].get_xdata()) == 12  # one per live point
    labels = [line.get_label() for line in acc_ax.get_lines()]
    assert labels == ["train acc", "test acc (1,000 test images)",
                      "test acc, whole test set (epoch end)"]  # fmt: skip
    assert list(acc_ax.get_lines()[2].get_ydata()) == [0.80, 0.86, 0.89]  # the epochs' tests
    assert fig.get_size_inches()[0] * fig.dpi == 800  # wide enough for a projector
    (legend,) = fig.legends  # below both axes, not over the curves
    renders(fig)


def test_the_live_plot_draws_a_recorded_run_underneath() -> None:
    fig = plot_live([], POINTS[:2], num_epochs=3, reference=HISTORY, reference_points=POINTS,
                    reference_label="rec")  # fmt: skip
    loss_ax, acc_ax = fig.axes
    assert len(loss_ax.get_lines()[0].get_xdata()) == 12  # the reference's points
    assert [line.get_label() for line in acc_ax.get_lines()][:2] == ["_child0", "rec"]
    assert acc_ax.get_lines()[1].get_color() == "0.65"
    assert plot_live(HISTORY).axes[0].get_lines()[0].get_xdata().tolist() == [1, 2, 3]
    renders(fig)


def test_the_shipped_reference_run_says_where_it_ran() -> None:
    run = load_run(REFERENCE_RUNS / "fast_3min_avx2.json")
    assert run["recipe"] == "fast" and run["cpu_kind"] == "AVX2"
    assert run["plan"]["budget"] == 180
    assert run["test_acc"] == run["history"][-1]["test_acc"]
    assert run_label(run) == "recorded: fast, 3 min, AVX2 CPU"
    plot_history(run["history"], reference=run["history"])


def test_load_run_names_a_bad_file(tmp_path) -> None:
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read a recorded run from .*metrics.json"):
        load_run(bad)
    bad.write_text('{"recipe": "fast"}')
    with pytest.raises(ValueError, match="no history"):
        load_run(bad)


def test_show_images_titles_are_class_names() -> None:
    images = torch.randint(0, 256, (10, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(10)
    fig = show_images(images, labels, CLASSES, ncols=5)
    assert len(fig.axes) == 10
    assert [ax.get_title() for ax in fig.axes] == list(CLASSES)
    renders(fig)
    # normalised float batches show the same picture
    normalised = show_images(prepare_batch(images), labels, ncols=5)
    ours, theirs = normalised.axes[3].get_images()[0], fig.axes[3].get_images()[0]
    rgba_ours = ours.to_rgba(ours.get_array(), bytes=True)
    rgba_theirs = theirs.to_rgba(theirs.get_array(), bytes=True)
    assert abs(rgba_ours.astype(int) - rgba_theirs.astype(int)).max() <= 1


def test_show_images_with_predictions_marks_mistakes() -> None:
    images = torch.zeros(3, 28, 28, dtype=torch.uint8)
    fig = show_images(
        images, [0, 1, 2], predictions=[0, 3, 2], confidences=[0.5, 0.987, 1.0], ncols=2
    )
    assert len(fig.axes) == 4  # 2 x 2 grid, one panel empty
    titles = [ax.title for ax in fig.axes[:3]]
    assert titles[1].get_text() == "Dress 99%\n(true Trouser)"
    assert titles[1].get_color() == "tab:red"
    assert titles[0].get_color() == "tab:green"
    renders(fig)


def test_show_images_rejects_bad_input() -> None:
    images = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    with pytest.raises(ValueError, match="labels has 3 entries for 2 images"):
        show_images(images, [0, 1, 2])
    with pytest.raises(ValueError, match="one channel"):
        show_images(torch.zeros(2, 3, 28, 28))
    with pytest.raises(ValueError, match="pass labels"):
        show_images(images, predictions=[0, 1])


def test_confusion_matrix_counts_a_hand_example() -> None:
    # true:      0  0  1  1  1  2  2  2  2
    # predicted: 0  1  1  1  2  2  2  0  2
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2])
    predictions = torch.tensor([0, 1, 1, 1, 2, 2, 2, 0, 2])
    matrix = confusion_matrix(predictions, labels, num_classes=3)
    assert matrix.dtype == torch.int64
    assert matrix.tolist() == [
        [1, 1, 0],  # class 0: one right, one taken for class 1
        [0, 2, 1],
        [1, 0, 3],
    ]
    assert matrix.sum() == len(labels)
    assert matrix.trace() == 6  # the correct ones


def test_confusion_matrix_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="differ in length: 2 vs 3"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="predictions must lie in 0..9, got values from 0 to 10"):
        confusion_matrix(torch.tensor([0, 10]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([-1, 1]), num_classes=3)


@pytest.mark.parametrize("normalize", [False, True])
def test_plot_confusion_matrix_writes_the_counts(normalize: bool) -> None:
    matrix = torch.tensor([[5, 1, 0], [0, 4, 2], [1, 0, 7]])
    fig = plot_confusion_matrix(matrix, ["a", "b", "c"], normalize=normalize)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    if normalize:
        assert texts[:3] == ["0.83", "0.17", "0.00"]
    else:
        assert texts == ["5", "1", "0", "0", "4", "2", "1", "0", "7"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.get_ylabel() == "true class"
    renders(fig)
    with pytest.raises(ValueError, match="must be 10 x 10"):
        plot_confusion_matrix(matrix)


def test_most_confident_mistakes_orders_by_confidence() -> None:
    logits = torch.tensor(
        [
            [5.0, 0.0, 0.0],  # right
            [0.0, 3.0, 0.0],  # wrong (true 0), confident
            [0.0, 0.0, 9.0],  # wrong (true 1), most confident
            [1.0, 0.0, 1.1],  # wrong (true 0), unsure
        ]
    )
    labels = torch.tensor([0, 0, 1, 0])
    indices, predictions, confidences = most_confident_mistakes(logits, labels, k=2)
    assert indices.tolist() == [2, 1]
    assert predictions.tolist() == [2, 1]
    assert confidences[0] > confidences[1] > 0.5
    assert most_confident_mistakes(logits, labels, k=10)[0].tolist() == [2, 1, 3]
    assert most_confident_mistakes(logits[:1], labels[:1])[0].tolist() == []
