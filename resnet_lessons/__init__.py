"""resnet_lessons: the code shared by the ResNet lecture notebooks.

Three parts, as the course has them: the lecture's modules here at the top (blocks, network,
shapes, readouts, widgets, data, figures), the trainer in :mod:`resnet_lessons.training`,
and the students' questions (notebooks 06-09) in :mod:`resnet_lessons.experiments`; the
exercises' checkers are in :mod:`resnet_lessons.exercises`.

Nothing runs on import: no seeding, no device choice, no printing. Call
:func:`set_seed` and :func:`default_device` yourself. Importing this package loads neither
matplotlib nor the experiments: the experiments' networks named here (``thin_resnet``,
``residual_mlp``, ...) are loaded the first time they are used.
"""

import importlib

from .blocks import Bottleneck, Residual
from .network import (
    ResNet,
    from_torchvision,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnet_block,
    stem,
)
from .preactivation import PreActResidual
from .readouts import ResidualShape, ResNetShapes, conv_formula, residual_shape, resnet_shapes
from .runtime import default_device, set_seed
from .shapes import (
    LayerShape,
    ShapeTable,
    check_channel_progression,
    conv_output_size,
    count_flops,
    trace_shapes,
)
from .stride_picture import stride_picture

__all__ = [
    "Bottleneck",
    "LayerShape",
    "PlainBlock",
    "PreActResidual",
    "ResNet",
    "ResNetShapes",
    "ResidualMLP",
    "Residual",
    "ResidualShape",
    "ShapeTable",
    "ThinResNet",
    "check_channel_progression",
    "conv_formula",
    "conv_output_size",
    "count_flops",
    "default_device",
    "from_torchvision",
    "residual_mlp",
    "resnet18",
    "resnet18_regressor",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet_block",
    "resnet_shapes",
    "residual_shape",
    "set_seed",
    "stem",
    "stride_picture",
    "thin_resnet",
    "trace_shapes",
]

__version__ = "0.1.0"

#: Names of the experiments' networks offered here, and the module that holds each.
_FROM_EXPERIMENTS = {
    "PlainBlock": "depth",
    "ThinResNet": "depth",
    "thin_resnet": "depth",
    "ResidualMLP": "regression",
    "residual_mlp": "regression",
    "resnet18_regressor": "regression",
}


def __getattr__(name: str) -> object:
    """``resnet_lessons.thin_resnet`` and the other experiments' networks, imported on first
    use (PEP 562), so that ``import resnet_lessons`` stays light."""
    if name in _FROM_EXPERIMENTS:
        module = importlib.import_module(f".experiments.{_FROM_EXPERIMENTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
