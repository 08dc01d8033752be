"""Exercises that check themselves: each checker runs the student's code against the
package's reference and, when it is wrong, names the likely mistake in one sentence.

Every checker returns a :class:`Feedback` (truthy when correct, with ``.passed``,
``.message`` and ``.hint``, the key of the mistake it found) and never raises on wrong
student code: a crash, a wrong return type or a stub that raises ``NotImplementedError``
("not done yet") is reported, not re-raised. The checkers leave PyTorch's global random
state as they found it, so a notebook's seeded numbers do not change.

* :func:`check_conv_output_size` (:mod:`.conv_size`): the size formula
  ``floor((H + 2p - d(k-1) - 1) / s) + 1``.
* :func:`check_residual` (:mod:`.residual`): the lecture's block (shapes, then outputs given
  the same weights, in training and evaluation mode).
* :func:`check_resnet_block` (:mod:`.stage`): the stage builder and its ``first_block`` rule.
* :func:`check_resnet18` (:mod:`.network`): the whole network (per-stage shapes, 11,178,378
  parameters).
* :func:`check_bottleneck`, :func:`check_preactivation` (:mod:`.bottleneck`,
  :mod:`.preactivation`): the two stretch exercises.
* :func:`check_shape` (:mod:`.shape`): a shape worked out by hand, such as ``"(4, 6, 3, 3)"``.

The core they share: :mod:`.feedback` (the verdict) and :mod:`.tracing` (run a student's
block with hooks and compare it with the expected wiring).
"""

from .bottleneck import check_bottleneck
from .conv_size import check_conv_output_size
from .feedback import NOT_DONE, Feedback
from .network import RESNET18_PARAMS, check_resnet18
from .preactivation import check_preactivation
from .residual import check_residual
from .shape import check_shape
from .stage import check_resnet_block

__all__ = [
    "NOT_DONE",
    "RESNET18_PARAMS",
    "Feedback",
    "check_bottleneck",
    "check_conv_output_size",
    "check_preactivation",
    "check_residual",
    "check_resnet18",
    "check_resnet_block",
    "check_shape",
]
