"""resnet_lessons: the code shared by the ResNet lecture notebooks.

Nothing runs on import: no seeding, no device choice, no printing. Call
:func:`set_seed` and :func:`default_device` yourself.
"""

from .blocks import Bottleneck, Residual
from .depth import PlainBlock, ThinResNet, thin_resnet
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
from .regression import ResidualMLP, residual_mlp, resnet18_regressor
from .runtime import default_device, set_seed
from .shapes import (
    LayerShape,
    ResidualShape,
    ResNetShapes,
    ShapeTable,
    check_channel_progression,
    conv_formula,
    conv_output_size,
    count_flops,
    residual_shape,
    resnet_shapes,
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
