"""The model zoo of notebook 04: published ImageNet accuracy against cost, and speed here.

The lecture: "ResNet-50 is the most popular; people went up to 152 and got bored; it is a
trade-off between accuracy and speed; there are better ways to get accuracy than depth."

* :func:`zoo_table` reads the numbers torchvision publishes with its pretrained weights
  (``weights.meta``: ImageNet-1K top-1, GFLOPS, parameters) from the installed package.
  Nothing is downloaded and no weights are loaded.
* :func:`recipe_versus_depth` and :func:`cheaper_than` compare rows of that table.
* :func:`time_resnets` times ResNet-18 to ResNet-152 (random weights) on this CPU.
* :func:`plot_zoo` and :func:`plot_speed` draw both (matplotlib is imported only there).

torchvision's "GFLOPS" count one multiply-add as one operation, as He et al. (2016) do:
half of :func:`resnet_lessons.count_flops`, which counts a multiply-add as 2 FLOPs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ._checks import check_int
from .network import resnet18, resnet34, resnet50, resnet101, resnet152

if TYPE_CHECKING:  # matplotlib is imported by the plotting functions only
    from matplotlib.figure import Figure

#: The ResNets of the paper, by torchvision's model name.
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

#: The other designs of the comparison: wider or grouped bottlenecks (ResNeXt, Wide ResNet),
#: a searched design space (RegNet), scaled mobile blocks (EfficientNet, MobileNetV3) and a
#: modernised ResNet (ConvNeXt). RegNetY-1.6GF is the RegNet whose top-1 matches
#: ResNet-50's under torchvision's newer recipe (V2), so the two differ in design and cost.
OTHERS = (
    "resnext50_32x4d",
    "wide_resnet50_2",
    "regnet_y_1_6gf",
    "efficientnet_b0",
    "mobilenet_v3_large",
    "convnext_tiny",
)

#: torchvision's model name -> (the name the papers use, the year of the paper on arXiv).
NETWORKS: dict[str, tuple[str, int]] = {
    "resnet18": ("ResNet-18", 2015),
    "resnet34": ("ResNet-34", 2015),
    "resnet50": ("ResNet-50", 2015),
    "resnet101": ("ResNet-101", 2015),
    "resnet152": ("ResNet-152", 2015),
    "resnext50_32x4d": ("ResNeXt-50 32x4d", 2016),
    "wide_resnet50_2": ("Wide ResNet-50-2", 2016),
    "regnet_y_1_6gf": ("RegNetY-1.6GF", 2020),
    "efficientnet_b0": ("EfficientNet-B0", 2019),
    "mobilenet_v3_large": ("MobileNetV3-Large", 2019),
    "convnext_tiny": ("ConvNeXt-T", 2022),
}

#: The package's builders for the ResNets that :func:`time_resnets` times, by depth.
BUILDERS: dict[int, Callable[..., nn.Module]] = {
    18: resnet18,
    34: resnet34,
    50: resnet50,
    101: resnet101,
    152: resnet152,
}

#: The oldest torchvision whose weights' metadata carries GFLOPS (``_ops``).
TORCHVISION_NEEDED = "0.15"


@dataclass(frozen=True)
class ZooRow:
    """One set of published weights: the network, its recipe and its numbers."""

    model: str  #: torchvision's name, e.g. ``"resnet50"``
    weights: str  #: the weights' name, e.g. ``"IMAGENET1K_V2"``
    top1: float  #: ImageNet-1K top-1 accuracy, in percent (224x224 centre crop)
    gflops: float  #: 10^9 multiply-adds for one 3x224x224 image (torchvision's "GFLOPS")
    params: int  #: parameters
    recipe: str  #: how the weights were trained, from the metadata (:func:`recipe_name`)

    @property
    def network(self) -> str:
        """The name the papers use: ``"ResNet-50"``."""
        return NETWORKS.get(self.model, (self.model, 0))[0]

    @property
    def year(self) -> int:
        """The year the network's paper appeared on arXiv (0 if not in :data:`NETWORKS`)."""
        return NETWORKS.get(self.model, (self.model, 0))[1]

    @property
    def version(self) -> str:
        """The recipe's short name: ``"V1"`` or ``"V2"``."""
        return self.weights.rsplit("_", 1)[-1]


class ZooTable(Sequence[ZooRow]):
    """The rows of :func:`zoo_table`; ``table.get("resnet50", "V2")`` finds one."""

    def __init__(self, rows: Sequence[ZooRow]) -> None:
        self.rows = list(rows)

    def __getitem__(self, index):  # type: ignore[override]
        return self.rows[index]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[ZooRow]:
        return iter(self.rows)

    def get(self, model: str, version: str = "V1") -> ZooRow:
        """The row of ``model`` (torchvision's name) with weights ``version`` ("V1", "V2")."""
        for row in self.rows:
            if row.model == model and row.version == version:
                return row
        have = sorted({f"{r.model} {r.version}" for r in self.rows})
        raise KeyError(f"no {model} {version} in this table; it has: {', '.join(have)}.")

    def __str__(self) -> str:
        header = ("network", "weights", "recipe", "top-1 %", "GFLOPS", "params (M)")
        cells = [
            (
                r.network,
                r.version,
                r.recipe,
                f"{r.top1:.1f}",
                f"{r.gflops:.2f}",
                f"{r.params / 1e6:.1f}",
            )
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in [header, *cells]) for i in range(6)]
        lines = []
        for row in [header, *cells]:
            left = [row[i].ljust(widths[i]) for i in range(3)]
            lines.append("  ".join([*left, *(row[i].rjust(widths[i]) for i in range(3, 6))]))
            if row is header:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    __repr__ = __str__


def recipe_name(docs: str) -> str:
    """A short name for how weights were trained, from their metadata's ``_docs``:
    ``"simple recipe"`` (the paper's era), ``"new recipe"`` (torchvision's newer one, V2),
    ``"new recipe, modified"``, or ``"ported from the paper"`` (the authors' own training)."""
    text = " ".join(docs.split()).lower()
    if "ported" in text:
        return "ported from the paper"
    if "new training recipe" in text:
        return "new recipe, modified" if "modified" in text else "new recipe"
    if "simple training recipe" in text:
        return "simple recipe"
    return text.split(". ")[0][:60] or "not stated"


def _weights_enum(model: str):
    import torchvision
    from torchvision import models

    if not hasattr(models, "get_model_weights"):
        raise RuntimeError(
            f"torchvision {torchvision.__version__} cannot list a model's weights "
            f"(get_model_weights came in 0.14); the zoo needs torchvision>={TORCHVISION_NEEDED}: "
            f"pip install -U 'torchvision>={TORCHVISION_NEEDED}'."
        )
    known = set(models.list_models(module=models))
    if model not in known:
        raise ValueError(
            f"unknown model {model!r}. The zoo knows: {', '.join(NETWORKS)}; "
            f"torchvision.models.list_models() lists every name this torchvision has."
        )
    return models.get_model_weights(model)


def zoo_table(models: Sequence[str] = RESNETS + OTHERS) -> ZooTable:
    """One :class:`ZooRow` per ImageNet-1K weights (V1, V2, ...) of each model, in order.

    Read from the installed torchvision's weight metadata; nothing is downloaded. Raises
    ``ValueError`` for a model torchvision does not have, ``RuntimeError`` when this
    torchvision's metadata lacks accuracy or GFLOPS (older than 0.15).
    """
    if isinstance(models, str):
        raise TypeError(f"models must be a list of names, got the string {models!r}.")
    rows = []
    for model in models:
        for weights in _weights_enum(model):
            if not weights.name.startswith("IMAGENET1K_V"):
                continue  # SWAG and quantised weights: other data or other arithmetic
            meta = weights.meta
            try:
                top1 = float(meta["_metrics"]["ImageNet-1K"]["acc@1"])
                gflops, params = float(meta["_ops"]), int(meta["num_params"])
            except KeyError as missing:
                import torchvision

                raise RuntimeError(
                    f"{model} {weights.name}: this torchvision ({torchvision.__version__}) "
                    f"has no {missing} in the weights' metadata; the zoo needs "
                    f"torchvision>={TORCHVISION_NEEDED}: "
                    f"pip install -U 'torchvision>={TORCHVISION_NEEDED}'."
                ) from None
            recipe = recipe_name(str(meta.get("_docs", "")))
            rows.append(ZooRow(model, weights.name, top1, gflops, params, recipe))
    return ZooTable(rows)


def recipe_versus_depth(table: ZooTable) -> tuple[float, float]:
    """``(recipe, depth)``, in top-1 percentage points over ResNet-50 V1: what ResNet-50
    gains from torchvision's newer recipe (V2), and what ResNet-152 gains with the old one."""
    base = table.get("resnet50", "V1").top1
    return table.get("resnet50", "V2").top1 - base, table.get("resnet152", "V1").top1 - base


def cheaper_than(table: ZooTable, model: str = "resnet50", version: str = "V1") -> list[ZooRow]:
    """The rows at least as accurate as ``model``'s ``version`` with fewer GFLOPS, cheapest
    first (the reference itself excluded)."""
    ref = table.get(model, version)
    found = [r for r in table if r.top1 >= ref.top1 and r.gflops < ref.gflops and r != ref]
    return sorted(found, key=lambda r: r.gflops)


def time_inference(
    model: nn.Module,
    input_shape: Sequence[int] = (1, 3, 224, 224),
    *,
    repeats: int = 5,
    warmup: int = 1,
) -> float:
    """Median seconds per image of ``model`` on ``input_shape`` (eval mode, no autograd).

    The first ``warmup`` passes are not counted (they allocate memory and pick kernels).
    """
    check_int("repeats", repeats, minimum=1)
    check_int("warmup", warmup, minimum=0)
    x = torch.randn(*input_shape)
    model.eval()
    seconds = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                seconds.append(time.perf_counter() - start)
    return statistics.median(seconds) / x.shape[0]


def time_resnets(
    depths: Sequence[int] = (18, 34, 50, 101, 152),
    *,
    batch_size: int = 1,
    repeats: int = 5,
) -> dict[int, float]:
    """Seconds per 3x224x224 image of each ResNet on this CPU: depth -> median time.

    The package's ``variant="torchvision"`` networks with 1000 classes and random weights:
    the same layers, and the same GFLOPS, as the weights in :func:`zoo_table`.
    """
    check_int("batch_size", batch_size, minimum=1)
    unknown = [d for d in depths if d not in BUILDERS]
    if unknown:
        raise ValueError(f"no ResNet of depth {unknown}; choose from {sorted(BUILDERS)}.")
    times = {}
    for depth in depths:
        net = BUILDERS[depth](in_channels=3, num_classes=1000, variant="torchvision")
        times[depth] = time_inference(net, (batch_size, 3, 224, 224), repeats=repeats)
    return times


#: Where each point's label goes, in points from the point, so that none overlap.
_OFFSETS = {
    ("resnet18", "V1"): (-7, 0),
    ("resnet50", "V2"): (-8, -2),
    ("resnet101", "V2"): (0, 12),
    ("resnet152", "V2"): (7, 0),
    "resnext50_32x4d": (-7, 6),
    "wide_resnet50_2": (-10, -34),
    "regnet_y_1_6gf": (-7, 0),
    "convnext_tiny": (-7, 0),
}


def _label(ax, x: float, y: float, text: str, offset: tuple[float, float]) -> None:
    ha = "left" if offset[0] > 0 else "right" if offset[0] < 0 else "center"
    far = abs(offset[1]) > 15  # a label moved away from a crowd points back at its point
    ax.annotate(
        text,
        (x, y),
        xytext=offset,
        textcoords="offset points",
        fontsize=11,
        ha=ha,
        va="center",
        arrowprops={"arrowstyle": "-", "color": "0.4"} if far else None,
    )


def plot_zoo(table: ZooTable, *, figsize: tuple[float, float] = (8.0, 5.0)) -> Figure:
    """Top-1 against GFLOPS: the ResNets joined by a line per recipe, the others as points."""
    from .plots import new_figure

    fig, ax = new_figure(figsize=figsize)
    for version, style, color in (("V1", "o-", "C0"), ("V2", "s--", "C1")):
        rows = [r for r in table if r.model in RESNETS and r.version == version]
        depths = f"{rows[0].network} to {rows[-1].network.removeprefix('ResNet-')}"
        ax.plot([r.gflops for r in rows], [r.top1 for r in rows], style, color=color,
                markersize=7, label=f"{depths}, {version} weights")  # fmt: skip
        for r in rows:
            offset = _OFFSETS.get((r.model, version), (6, -8))
            _label(ax, r.gflops, r.top1, r.network.removeprefix("ResNet-"), offset)
    newest = {r.model: r for r in table if r.model not in RESNETS}  # the last weights of each
    for r in newest.values():
        ax.plot(r.gflops, r.top1, "D", color="C3", markersize=7)
        _label(ax, r.gflops, r.top1, f"{r.network} {r.version}", _OFFSETS.get(r.model, (7, 0)))
    ax.plot([], [], "D", color="C3", label="other designs (their newest weights)")
    ax.set_xscale("log")
    ax.set_xlim(0.15, 16)
    ax.set_xticks([0.2, 0.5, 1, 2, 5, 10], labels=["0.2", "0.5", "1", "2", "5", "10"])
    ax.set_xlabel("GFLOPS per 224x224 image (multiply-adds, log scale)", fontsize=12)
    ax.set_ylabel("ImageNet-1K top-1 (%)", fontsize=12)
    ax.set_title("Accuracy against cost (torchvision's weight metadata)", fontsize=13)
    ax.tick_params(labelsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=11)
    return fig


def plot_speed(
    table: ZooTable, seconds: dict[int, float], *, figsize: tuple[float, float] = (8.0, 4.5)
) -> Figure:
    """Top-1 (V1 weights) against measured milliseconds per image, one point per ResNet."""
    from .plots import new_figure

    fig, ax = new_figure(figsize=figsize)
    depths = sorted(seconds)
    ms = [1000 * seconds[d] for d in depths]
    top1 = [table.get(f"resnet{d}", "V1").top1 for d in depths]
    ax.plot(ms, top1, "o-", color="C0", markersize=7)
    for d, x, y in zip(depths, ms, top1, strict=True):
        _label(ax, x, y, f"ResNet-{d}", (7, -8))
    ax.set_xlim(0, max(ms) * 1.3)
    ax.set_xlabel("milliseconds per 224x224 image on this CPU (batch of 1, measured)", fontsize=12)
    ax.set_ylabel("ImageNet-1K top-1 (%), V1 weights", fontsize=12)
    ax.set_title("The trade-off on this machine", fontsize=13)
    ax.tick_params(labelsize=11)
    ax.grid(alpha=0.3)
    return fig
