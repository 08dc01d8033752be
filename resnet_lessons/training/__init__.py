"""The trainer: notebook 05 and ``python -m resnet_lessons train``.

* :func:`fit` (:mod:`~resnet_lessons.training.loop`): one loop, one step function, the run's
  settings as one object; returns a :class:`History`, one dict per epoch.
* :class:`Recipe`, :data:`LECTURE`, :data:`FAST` (:mod:`~resnet_lessons.training.recipes`):
  every number training needs, and the optimizer and schedule they make.
* :class:`Plan`, :func:`measure_speed`, :func:`plan_run`
  (:mod:`~resnet_lessons.training.budget`): the probe and the plan of ``fit(budget=...)``,
  ``train --minutes`` and the doctor.
* :func:`predict`, :func:`evaluate` (:mod:`~resnet_lessons.training.evaluation`);
  :func:`save_checkpoint`, :func:`load_checkpoint` (:mod:`~resnet_lessons.training.checkpoints`);
  :func:`cpu_info`, :func:`pick_speedups`, :func:`use_small_map_convs`
  (:mod:`~resnet_lessons.training.speed`); the ``torchrun`` set-up
  (:mod:`~resnet_lessons.training.distributed`).

The trainer imports the lecture's modules and never the experiments of notebooks 06-09.
"""

from ..runtime import resolve_device
from .budget import PROBE_MARGIN, Plan, measure_speed, plan_run
from .checkpoints import CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
from .distributed import backend_for
from .evaluation import autocast_dtype, evaluate, predict, synchronize
from .live import in_notebook
from .loop import HISTORY_KEYS, History, fit, prepare_model
from .recipes import FAST, LECTURE, RECIPES, SCHEDULES, Recipe, get_recipe, recipe_for
from .settings import RunSettings, rank_device
from .speed import (
    Speedups,
    cpu_info,
    device_name,
    native_bf16,
    pick_speedups,
    use_small_map_convs,
)

__all__ = [
    "CHECKPOINT_VERSION",
    "FAST",
    "HISTORY_KEYS",
    "LECTURE",
    "PROBE_MARGIN",
    "RECIPES",
    "SCHEDULES",
    "History",
    "Plan",
    "Recipe",
    "RunSettings",
    "Speedups",
    "autocast_dtype",
    "backend_for",
    "cpu_info",
    "device_name",
    "evaluate",
    "fit",
    "get_recipe",
    "in_notebook",
    "load_checkpoint",
    "measure_speed",
    "native_bf16",
    "pick_speedups",
    "plan_run",
    "predict",
    "prepare_model",
    "rank_device",
    "recipe_for",
    "resolve_device",
    "save_checkpoint",
    "synchronize",
    "use_small_map_convs",
]
