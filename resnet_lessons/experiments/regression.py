"""Residual networks for regression: a residual MLP, a regression head, rotation targets, a loop.

The lecture's answer to "do ResNets work for regression?" is yes: nothing in a residual
block cares whether the number at the end is a class score or a quantity. This module holds
what notebook 08 needs to show it:

* :class:`ResidualMLP` / :func:`residual_mlp`: fully connected blocks ``x + g(x)`` with
  ``g = Linear -> LayerNorm -> ReLU -> Linear``, and their plain twin (``shortcuts=False``:
  the same layers, ``g(x)`` alone);
* :func:`regression_head`: ``LayerNorm -> Linear``, the output layer of both the MLP and
  :func:`resnet18_regressor` (the lecture's ResNet-18 with one output instead of ten);
* :func:`rotate` and :func:`random_rotations`: a target that needs no labels, the angle by
  which an image was turned;
* :func:`wiggly_dataset`: a 1-d function that takes a deep network to fit;
* :func:`fit_regression` and :func:`predict_regression`: one small training loop (Adam,
  cosine learning rate, mean squared error) for every model here;
* :func:`block_outputs` (what flows between the MLP's blocks) and :func:`show_rotations`
  (turned images titled with true and predicted angles), for looking inside.

Why a normalisation right before the output: the residual stream ``x + g_1(x) + g_2(...)``
grows with depth, and a linear output layer fed with it starts with outputs (and gradients)
as large as the stream; ``LayerNorm`` rescales it to mean 0, variance 1 per example first.
(In a pilot for notebook 08, a deep residual regressor without it diverged to NaN.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from .._checks import check_int
from ..data import MEAN, STD
from ..network import ResNet, resnet18
from ..plots import image_grid
from ..training.evaluation import outputs
from ..training.recipes import one_cycle_schedule
from ..training.steps import run_steps

#: The value of a black pixel after :func:`~resnet_lessons.data.prepare_batch` normalises
#: it; :func:`rotate` fills the corners that turn into the picture with it.
BLACK: float = (0.0 - MEAN) / STD


# --------------------------------------------------------------------------- models


class MLPBlock(nn.Module):
    """One fully connected block: ``x + g(x)`` (residual) or ``g(x)`` (plain).

    ``g = Linear(width, width) -> LayerNorm(width) -> ReLU -> Linear(width, width)``.

    Shapes: ``(N, width) -> (N, width)``.
    """

    def __init__(self, width: int, *, shortcut: bool = True) -> None:
        super().__init__()
        check_int("width", width)
        self.width = width
        self.shortcut = shortcut
        self.g = nn.Sequential(
            nn.Linear(width, width),
            nn.LayerNorm(width),
            nn.ReLU(),
            nn.Linear(width, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.g(x)  # (N, width)
        return x + out if self.shortcut else out

    def extra_repr(self) -> str:
        return f"{self.width}, shortcut={self.shortcut}"


def regression_head(in_features: int, out_features: int = 1) -> nn.Sequential:
    """``LayerNorm(in_features) -> Linear(in_features, out_features)``: the output layer.

    The normalisation keeps the output's scale independent of how large the features
    grew (see the module docstring). Shapes: ``(N, in_features) -> (N, out_features)``.
    """
    check_int("in_features", in_features)
    check_int("out_features", out_features)
    return nn.Sequential(nn.LayerNorm(in_features), nn.Linear(in_features, out_features))


class ResidualMLP(nn.Sequential):
    """A deep fully connected network for regression, with or without shortcuts.

    ``Linear(in_features, width)`` (``input``), then ``depth`` :class:`MLPBlock` s
    (``blocks``), then :func:`regression_head` (``head``). With ``shortcuts=False`` every
    block computes ``g(x)`` instead of ``x + g(x)``: the same layers and parameters, the
    plain network the residual one is compared with.

    Shapes: ``(N, in_features) -> (N, out_features)``.

    Args:
        in_features: inputs per example (1 for a function of one variable).
        width: features inside the network (every block keeps it).
        depth: number of blocks; each holds two linear layers.
        shortcuts: ``True`` for ``x + g(x)``, ``False`` for the plain twin.
        out_features: numbers predicted per example.
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        depth: int,
        *,
        shortcuts: bool = True,
        out_features: int = 1,
    ) -> None:
        check_int("in_features", in_features)
        check_int("width", width)
        check_int("depth", depth)
        check_int("out_features", out_features)
        if not isinstance(shortcuts, bool):
            raise TypeError(f"shortcuts must be True or False, got {shortcuts!r}.")
        super().__init__()
        self.input = nn.Linear(in_features, width)  # (N, in_features) -> (N, width)
        self.blocks = nn.Sequential(*(MLPBlock(width, shortcut=shortcuts) for _ in range(depth)))
        self.head = regression_head(width, out_features)  # (N, width) -> (N, out_features)
        self.in_features = in_features
        self.width = width
        self.depth = depth
        self.shortcuts = shortcuts
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"ResidualMLP expects inputs of shape (N, {self.in_features}), got "
                f"{tuple(x.shape)}. Fix: "
                + (
                    "add the feature axis with x.unsqueeze(1) (one feature per example)."
                    if x.dim() == 1 and self.in_features == 1
                    else f"build it with in_features={x.shape[-1]}, or reshape the inputs."
                )
            )
        return super().forward(x)


def block_outputs(model: ResidualMLP, x: torch.Tensor) -> list[torch.Tensor]:
    """What flows between the blocks: the output of ``model.input`` and of every block.

    ``(N, in_features) -> [(N, width)] * (depth + 1)``; entry ``k`` is the input of block
    ``k + 1`` (entry 0 is before the first block). No gradients are kept.
    """
    if not isinstance(model, ResidualMLP):
        raise TypeError(f"block_outputs needs a ResidualMLP, got {type(model).__name__}.")
    with torch.no_grad():
        h = model.input(x)  # (N, width)
        outputs = [h]
        for block in model.blocks:
            h = block(h)  # (N, width)
            outputs.append(h)
    return outputs


def residual_mlp(
    in_features: int,
    width: int,
    depth: int,
    *,
    shortcuts: bool = True,
    out_features: int = 1,
) -> ResidualMLP:
    """A :class:`ResidualMLP`: ``(N, in_features) -> (N, out_features)``; ``shortcuts=False``
    builds its plain twin (same layers, no ``+ x``)."""
    return ResidualMLP(in_features, width, depth, shortcuts=shortcuts, out_features=out_features)


def resnet18_regressor(in_channels: int = 1, out_features: int = 1) -> ResNet:
    """The lecture's ResNet-18 predicting ``out_features`` numbers instead of 10 class scores.

    ``resnet18(num_classes=out_features)`` with its last layer ``fc`` (``Linear(512, 10)``
    in the lecture) replaced by :func:`regression_head` (``LayerNorm(512) -> Linear(512,
    out_features)``); everything else is unchanged. To do it by hand::

        model = resnet18(num_classes=1)           # fc: Linear(512, 1)
        model.fc = regression_head(512, 1)        # keep a normalisation before the output

    Shapes: ``(N, in_channels, H, W) -> (N, out_features)``.
    """
    model = resnet18(in_channels, num_classes=out_features)
    model.fc = regression_head(model.fc.in_features, out_features)
    return model


# --------------------------------------------------------------------------- targets


def rotate(images: torch.Tensor, degrees: torch.Tensor, *, fill: float = BLACK) -> torch.Tensor:
    """Turn each image by its angle (counter-clockwise for positive degrees) about its centre.

    ``images``: float ``(N, C, H, W)`` (e.g. from ``prepare_batch``); ``degrees``: ``(N,)``.
    Returns ``(N, C, H, W)``, bilinear interpolation; the corners that come into the
    picture are filled with ``fill`` (by default a black pixel, normalised).
    """
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(
            "rotate needs float images (N, C, H, W); turn uint8 pixels into floats first "
            "with prepare_batch(images)."
        )
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}.")
    degrees = torch.as_tensor(degrees, dtype=images.dtype, device=images.device)
    if degrees.shape != (images.shape[0],):
        raise ValueError(
            f"degrees must hold one angle per image: shape ({images.shape[0]},), got "
            f"{tuple(degrees.shape)}."
        )
    radians = degrees * (math.pi / 180)
    cos, sin = torch.cos(radians), torch.sin(radians)
    zero = torch.zeros_like(cos)
    # affine_grid maps output pixels to input pixels (x right, y down), so the inverse
    # rotation of the output grid turns the picture counter-clockwise on screen.
    theta = torch.stack(
        [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1
    )  # (N, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (N, H, W, 2)
    turned = F.grid_sample(
        images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return turned + fill


def random_rotations(
    images: torch.Tensor,
    max_degrees: float = 60.0,
    *,
    generator: torch.Generator | None = None,
    fill: float = BLACK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each image by an angle drawn uniformly from ``[-max_degrees, max_degrees]``.

    The angle is the regression target: it needs no labels, and the network has to look at
    the picture to know it. ``generator`` makes it reproducible:
    ``random_rotations(x, generator=torch.Generator().manual_seed(0))`` draws the same
    angles every time.

    Shapes: float ``(N, C, H, W)`` -> ``(rotated (N, C, H, W), degrees (N,))``.
    """
    if isinstance(max_degrees, bool) or not isinstance(max_degrees, int | float):
        raise TypeError(f"max_degrees must be a number, got {max_degrees!r}.")
    if not 0 < max_degrees <= 180:
        raise ValueError(
            f"max_degrees must be in (0, 180], got {max_degrees}; beyond 180 the angle is "
            "ambiguous (a turn by 190 degrees is a turn by -170)."
        )
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be (N, C, H, W), got {shape}.")
    u = torch.rand(images.shape[0], generator=generator)  # (N,) in [0, 1)
    degrees = ((2 * u - 1) * max_degrees).to(images.device)
    return rotate(images, degrees, fill=fill), degrees.to(images.dtype)


def wiggly_function(x: torch.Tensor) -> torch.Tensor:
    """The function notebook 08 fits: ``sin(4 pi x) + 0.5 sin(11 pi x) * x`` on ``[-1, 1]``."""
    return torch.sin(4 * math.pi * x) + 0.5 * torch.sin(11 * math.pi * x) * x


def wiggly_dataset(
    n_train: int = 512, n_test: int = 512, *, noise: float = 0.05, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noisy samples of :func:`wiggly_function` at random ``x`` in ``[-1, 1]``.

    Returns ``(x_train (n_train, 1), y_train (n_train, 1), x_test (n_test, 1),
    y_test (n_test, 1))``; the test targets are noise-free. The same ``seed`` gives the
    same tensors.
    """
    check_int("n_train", n_train)
    check_int("n_test", n_test)
    check_int("seed", seed, 0)
    if not 0 <= noise < math.inf:
        raise ValueError(f"noise is a standard deviation, >= 0; got {noise}.")
    generator = torch.Generator().manual_seed(seed)
    x_train = torch.rand(n_train, 1, generator=generator) * 2 - 1
    x_test = torch.rand(n_test, 1, generator=generator) * 2 - 1
    y_train = wiggly_function(x_train) + noise * torch.randn(n_train, 1, generator=generator)
    return x_train, y_train, x_test, wiggly_function(x_test)


# --------------------------------------------------------------------------- training


def fit_regression(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    *,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    warmup: int = 0,
) -> list[float]:
    """Train ``model`` for ``steps`` optimizer steps on ``(inputs, targets)`` from ``batches``.

    One loop for every regression model here: Adam(W), mean squared error, and ``fit``'s
    one-cycle schedule (:func:`~resnet_lessons.training.recipes.one_cycle_schedule`): the
    learning rate rises linearly from lr/25 over ``warmup`` steps, then falls along a cosine
    to lr/25000 at the last step.
    ``batches`` is any iterable of ``(inputs, targets)`` pairs, e.g. a generator that draws
    fresh random rotations; it must yield at least ``steps`` of them. ``targets`` must have
    the model's output shape, ``(B, out_features)``.

    Returns the training loss of every step (``steps`` floats). A loss that turns NaN or
    infinite stops training with a ``FloatingPointError`` naming the step.
    """
    check_int("steps", steps)
    check_int("warmup", warmup, 0)
    if not (isinstance(lr, int | float) and 0 < lr < math.inf):
        raise ValueError(f"lr must be a number above 0, got {lr!r}; 1e-3 suits Adam.")
    if warmup >= steps:
        raise ValueError(f"warmup ({warmup} steps) must be shorter than steps ({steps}).")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = one_cycle_schedule(optimizer, steps, warmup)  # fit's one-cycle schedule
    done = [0]  # steps taken, for the messages

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if outputs.shape != targets.shape:
            raise ValueError(
                f"the model's outputs {tuple(outputs.shape)} and the targets "
                f"{tuple(targets.shape)} differ in shape; give targets the shape (B, "
                "out_features), e.g. targets.unsqueeze(1) for one number per example."
            )
        loss = F.mse_loss(outputs, targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the loss became {loss.item()} at step {done[0]}; lower lr (now {lr}) or keep "
                "a normalisation before the output layer."
            )
        done[0] += 1
        return loss

    return run_steps(model, optimizer, _take(batches, steps), loss_fn, scheduler=schedule)


def _take(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], steps: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``steps`` pairs of ``batches``; a ``ValueError`` if there are fewer."""
    iterator = iter(batches)
    for step in range(steps):
        try:
            yield next(iterator)
        except StopIteration:
            raise ValueError(
                f"batches ran out after {step} of {steps} steps; pass an endless generator "
                "or more batches."
            ) from None


def predict_regression(
    model: nn.Module, inputs: torch.Tensor, *, batch_size: int = 1000
) -> torch.Tensor:
    """The model's outputs for ``inputs`` ``(N, ...) -> (N, out_features)``, in eval mode
    (batch norm uses its running statistics), ``batch_size`` examples at a time; the model
    is put back in the mode it was in."""
    check_int("batch_size", batch_size)
    if inputs.shape[0] == 0:
        raise ValueError("predict_regression got no inputs (shape[0] == 0).")
    return outputs(model, inputs, batch_size)


# --------------------------------------------------------------------------- figures


def show_rotations(
    images: torch.Tensor,
    true_degrees: torch.Tensor | Sequence[float],
    predicted_degrees: torch.Tensor | Sequence[float] | None = None,
    *,
    ncols: int = 8,
    scale: float = 1.3,
) -> Figure:
    """A grid of rotated images titled with their angle (and the predicted one, if given).

    ``images``: ``(N, 1, H, W)`` normalised, as the network saw them; ``true_degrees`` and
    ``predicted_degrees``: ``(N,)``. One panel per image, titled ``+23°`` or, with
    predictions, ``true +23°`` over ``pred +5°``.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be (N, 1, H, W), got {shape}.")
    n = images.shape[0]
    if len(true_degrees) != n or (predicted_degrees is not None and len(predicted_degrees) != n):
        predicted = "no" if predicted_degrees is None else len(predicted_degrees)
        raise ValueError(
            f"need one angle per image: {n} images, {len(true_degrees)} true, "
            f"{predicted} predicted."
        )
    check_int("ncols", ncols)
    fig, axes = image_grid(n, ncols, scale, title_lines=1 if predicted_degrees is None else 2)
    white = (1 - MEAN) / STD
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(images[i, 0].detach().cpu().numpy(), cmap="gray", vmin=BLACK, vmax=white)
        true = f"{float(true_degrees[i]):+.0f}\N{DEGREE SIGN}"
        if predicted_degrees is None:
            ax.set_title(true, fontsize="small")
        else:
            predicted = f"{float(predicted_degrees[i]):+.0f}\N{DEGREE SIGN}"
            ax.set_title(f"true {true}\npred {predicted}", fontsize="x-small")
    return fig
