"""The students' questions, measured: the code of the Q&A notebooks 06-09.

One module per notebook, each imported by its notebook by name:

* :mod:`~resnet_lessons.experiments.depth` (06): plain vs residual at depth, gradients at
  initialisation, zero-init, lesions ("deviation from the identity, not from zero").
* :mod:`~resnet_lessons.experiments.regularisation` (07): batch norm's noise and scale
  invariance, weight decay, the regularisers side by side, Adam vs AdamW.
* :mod:`~resnet_lessons.experiments.compression` (07): dropout and normalisation layers in
  torchvision's conv nets, L1 training, magnitude pruning, quantised weights.
* :mod:`~resnet_lessons.experiments.regression` (08): residual MLPs and a ResNet-18 that
  predicts a number.
* :mod:`~resnet_lessons.experiments.parallel` (09): all-reduce by hand, the same gradient as
  one big batch, synchronised batch norm, the costs of data parallelism.

They train with the trainer (:mod:`resnet_lessons.training`); nothing in the trainer or the
lecture's modules imports them, so ``import resnet_lessons`` stays light.
"""

from . import compression, depth, parallel, regression, regularisation
from .depth import PlainBlock, ThinResNet, thin_resnet
from .regression import ResidualMLP, residual_mlp, resnet18_regressor

__all__ = [
    "PlainBlock",
    "ResidualMLP",
    "ThinResNet",
    "compression",
    "depth",
    "parallel",
    "regression",
    "regularisation",
    "residual_mlp",
    "resnet18_regressor",
    "thin_resnet",
]
