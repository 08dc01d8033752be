"""The regularisers side by side (notebook 07, part 4): one network per setting and seed,
trained with :func:`~resnet_lessons.training.fit`, as a tidy :class:`Comparison` (mean and
spread over seeds) and a figure. Early stopping (Goodfellow, Bengio and Courville 2016,
*Deep Learning*, section 7.8) is ``fit(patience=...)`` on a validation split. The network
is :func:`~resnet_lessons.experiments.regularisation.narrow_resnet`.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import check_int
from ..data import FashionMNIST
from ..training import Recipe, evaluate, fit
from .narrow import narrow_resnet


@dataclass(frozen=True)
class Setting:
    """One column of the comparison: a network and recipe change from the base recipe.

    ``dropout``, ``batch_norm``: the network (:func:`narrow_resnet`); ``weight_decay``,
    ``noise``, ``lr``: the recipe (``None`` keeps the base recipe's ``lr``); ``patience``:
    early stopping in :func:`~resnet_lessons.training.fit` (needs a validation split).
    """

    name: str
    dropout: float = 0.0
    batch_norm: bool = True
    weight_decay: float = 0.0
    noise: float = 0.0
    lr: float | None = None
    patience: int | None = None


#: The keys of one row of a :class:`Comparison`.
ROW_KEYS = ("setting", "seed", "test_acc", "train_acc", "gap", "epochs", "best_epoch", "seconds")


@dataclass
class Comparison:
    """The side-by-side runs: ``rows``, one dict per (setting, seed) with :data:`ROW_KEYS`
    (``train_acc`` is measured after training, in eval mode, on the training images;
    ``gap = train_acc - test_acc``; ``epochs`` the epochs trained; ``best_epoch`` the epoch
    whose weights were kept), and ``histories``, ``fit``'s history of each run, by
    ``(setting name, seed)``."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    histories: dict[tuple[str, int], list[dict[str, float]]] = field(default_factory=dict)
    setups: dict[str, Setting] = field(default_factory=dict)  # name -> the setting it ran

    @property
    def settings(self) -> list[str]:
        """The setting names, in the order they were run."""
        return list(dict.fromkeys(row["setting"] for row in self.rows))

    def values(self, setting: str, key: str) -> list[float]:
        """``key`` of every seed's run of ``setting``, in seed order."""
        found = [row[key] for row in self.rows if row["setting"] == setting]
        if not found:
            raise KeyError(f"no runs of {setting!r}; the settings are {self.settings}.")
        return found

    def mean(self, setting: str, key: str) -> float:
        return statistics.fmean(self.values(setting, key))

    def spread(self, setting: str, key: str) -> float:
        """The sample standard deviation over seeds (0 for a single seed)."""
        values = self.values(setting, key)
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def summary(self) -> list[dict[str, Any]]:
        """One dict per setting: ``setting``, ``seeds``, and ``<key>_mean`` / ``<key>_spread``
        for ``test_acc``, ``train_acc``, ``gap`` and ``epochs``."""
        out = []
        for name in self.settings:
            entry: dict[str, Any] = {"setting": name, "seeds": len(self.values(name, "seed"))}
            for key in ("test_acc", "train_acc", "gap", "epochs"):
                entry[f"{key}_mean"] = self.mean(name, key)
                entry[f"{key}_spread"] = self.spread(name, key)
            out.append(entry)
        return out

    def format(self) -> str:
        """The summary as a text table: mean +- standard deviation over the seeds."""
        lines = [
            f"{'setting':<16} {'seeds':>5}  {'test accuracy':>15}  {'train accuracy':>15}  "
            f"{'train - test':>15}  {'epochs':>6}"
        ]
        for s in self.summary():
            lines.append(
                f"{s['setting']:<16} {s['seeds']:5d}  "
                f"{s['test_acc_mean']:7.3f} +- {s['test_acc_spread']:.3f}  "
                f"{s['train_acc_mean']:7.3f} +- {s['train_acc_spread']:.3f}  "
                f"{s['gap_mean']:7.3f} +- {s['gap_spread']:.3f}  {s['epochs_mean']:6.1f}"
            )
        return "\n".join(lines)


def compare_regularisers(
    settings: Sequence[Setting],
    data: FashionMNIST,
    recipe: Recipe,
    seeds: Sequence[int],
    *,
    width: int = 16,
    reuse: Comparison | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
    test_each_epoch: bool = True,
) -> Comparison:
    """Train :func:`narrow_resnet` once per setting and seed with
    :func:`~resnet_lessons.training.fit`; return the :class:`Comparison`.

    Every run of one seed starts from the same seed (``torch.manual_seed(seed)`` before the
    network is built, ``fit(seed=seed)`` for the batches), so settings differ only in what
    the setting changes. ``data`` is a :class:`~resnet_lessons.data.FashionMNIST` (with a
    validation split when any setting has ``patience``: every setting then trains on the
    same images, and only early stopping looks at the split). ``recipe`` is the base
    :class:`~resnet_lessons.training.Recipe`; a setting replaces its ``weight_decay``,
    ``noise`` and ``lr``. Runs already in ``reuse`` (the same setting and seed; the base
    recipe and data must be the same too) are taken from there instead of trained again.
    ``on_run`` is called with each new row. ``test_each_epoch=False`` tests each run once,
    at its end, instead of after every epoch (see :func:`~resnet_lessons.training.fit`): the
    same runs and rows, only the histories' ``test_acc`` curves are missing; with a small
    training set and a larger test set, much of a run's time was testing.
    """
    if not settings:
        raise ValueError("settings is empty; pass at least one Setting.")
    names = [s.name for s in settings]
    if len(set(names)) != len(names):
        raise ValueError(f"setting names must differ, got {names}.")
    for seed in seeds:
        check_int("seed", seed, 0)
    if not seeds:
        raise ValueError("seeds is empty; pass at least one seed, e.g. (0, 1, 2).")
    done = {}
    if reuse is not None:
        for row in reuse.rows:
            if reuse.setups.get(row["setting"]) in settings:  # the same name and fields
                done[row["setting"], row["seed"]] = row
    result = Comparison(setups={s.name: s for s in settings})
    for seed in seeds:
        for setting in settings:
            key = (setting.name, seed)
            if key in done:
                result.rows.append(done[key])
                result.histories[key] = reuse.histories[key]
                continue
            row, history = _train_one(setting, seed, data, recipe, width, test_each_epoch)
            result.rows.append(row)
            result.histories[key] = history
            if on_run is not None:
                on_run(row)
    return result


def _train_one(
    setting: Setting,
    seed: int,
    data: FashionMNIST,
    recipe: Recipe,
    width: int,
    test_each_epoch: bool,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """One run of :func:`compare_regularisers`: its row and ``fit``'s history."""
    changes: dict[str, Any] = {
        "name": setting.name,
        "weight_decay": setting.weight_decay,
        "noise": setting.noise,
    }
    if setting.lr is not None:
        changes["lr"] = setting.lr
    run_recipe = dataclasses.replace(recipe, **changes)
    torch.manual_seed(seed)
    model = narrow_resnet(width, dropout=setting.dropout, batch_norm=setting.batch_norm)
    start = time.perf_counter()
    extra = {} if setting.patience is None else {"patience": setting.patience}
    history = fit(
        model,
        data,
        run_recipe,
        seed=seed,
        device="cpu",
        progress=False,
        plot=False,
        verbose=False,
        test_each_epoch=test_each_epoch,
        **extra,
    )
    train_acc = evaluate(model, data.train_images, data.train_labels, resize=run_recipe.resize)
    # after early stopping the model holds the best epoch's weights, not the last's
    test_acc = evaluate(model, data.test_images, data.test_labels, resize=run_recipe.resize)
    row = {
        "setting": setting.name,
        "seed": seed,
        "test_acc": test_acc,
        "train_acc": train_acc,
        "gap": train_acc - test_acc,
        "epochs": len(history),
        "best_epoch": getattr(history, "best_epoch", None) or len(history),
        "seconds": time.perf_counter() - start,
    }
    return row, list(history)


def plot_comparison(comparison: Comparison, title: str = "") -> Any:
    """Two panels, one point per seed and the mean +- standard deviation per setting: test
    accuracy (left) and the train - test gap (right), with the first setting's mean as a
    dashed line to compare with. Returns the figure."""
    from ..plots import new_figure  # matplotlib loads when a figure is drawn, not before

    fig, axes = new_figure(1, 2, figsize=(9, 3.2))
    names = comparison.settings
    for ax, key, label in zip(
        axes, ("test_acc", "gap"), ("test accuracy", "train accuracy - test accuracy"), strict=True
    ):
        ax.axhline(comparison.mean(names[0], key), color="grey", lw=0.8, ls="--")
        for i, name in enumerate(names):
            values = comparison.values(name, key)
            offsets = [i + 0.12 * (j - (len(values) - 1) / 2) for j in range(len(values))]
            ax.plot(offsets, values, ".", color="grey", alpha=0.7, ms=6)
            ax.errorbar(
                i + 0.35,
                comparison.mean(name, key),
                yerr=comparison.spread(name, key),
                fmt="o",
                color="C0" if key == "test_acc" else "C1",
                capsize=4,
            )
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set(ylabel=label)
        ax.grid(alpha=0.3, axis="y")
    seeds = len(comparison.values(names[0], "seed"))
    fig.suptitle(
        title
        or f"grey: one run per seed; coloured: mean \u00b1 std over {seeds} seeds; "
        f"dashed: the mean of {names[0]!r}"
    )
    return fig
