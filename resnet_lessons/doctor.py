"""``python -m resnet_lessons doctor``: is this machine ready for the course, and how fast is it?

Each check is a :class:`Check` (what, whether it is fine, what was found, the fix). The
essential ones (PyTorch, the packages the notebooks import, the data) make the command
exit non-zero with the fix; the others are advice. Then, unless ``--no-probe``, a few
seconds of real training steps measure this machine and turn into expected times.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

#: Packages whose versions the doctor reports: (distribution, essential, why it is needed).
PACKAGES = (
    ("torch", True, "the networks and training"),
    ("torchvision", True, "reference models and the data download"),
    ("numpy", True, "plots and tests"),
    ("matplotlib", True, "every figure"),
    ("ipywidgets", True, "the sliders of notebook 02"),
    ("tqdm", True, "progress bars"),
    ("jupyterlab", False, "opening the notebooks (make lab installs it)"),
    ("jupyterlab_widgets", False, "drawing the sliders inside JupyterLab"),
)

#: Test accuracy of the fast recipe by epochs trained (one-cycle schedule spanning the run),
#: measured on the full data: (epochs, accuracy, where). The doctor quotes the nearest one.
MEASURED_ACCURACY = (
    (1.9, 0.905, "3-min budget, 2-core AVX2 CPU"),
    (6.5, 0.924, "10-min budget, 2-core AVX2 CPU"),
)


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    essential: bool = False

    def line(self) -> str:
        mark = "ok  " if self.ok else ("FAIL" if self.essential else "warn")
        text = f"[{mark}] {self.name}: {self.detail}"
        if not self.ok and self.fix:
            text += f"\n       fix: {self.fix}"
        return text


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_packages(version: Callable[[str], str | None] = _version) -> list[Check]:
    """Python and the packages the course needs, with their versions."""
    checks = [
        Check(
            "python",
            sys.version_info >= (3, 10),
            f"{platform.python_version()} ({sys.executable})",
            "install Python 3.10 or newer and run: make PYTHON=python3.11 lab",
            essential=True,
        )
    ]
    for name, essential, why in PACKAGES:
        found = version(name)
        checks.append(
            Check(
                name,
                found is not None,
                found or f"not installed (needed for {why})",
                "run `make lab` (it installs everything into .venv), or `pip install -e '.[lab]'`",
                essential=essential,
            )
        )
    return checks


def check_hardware() -> list[Check]:
    """The CPU (model, features, threads) and any GPU."""
    import torch

    from .runtime import default_device
    from .training.recipes import recipe_for
    from .training.speed import cpu_info, native_bf16

    info = cpu_info()
    features = ", ".join(info.features) or "none of " + ", ".join(("AVX2", "AVX-512", "NEON"))
    checks = [
        Check("cpu", True, info.describe()),
        Check(
            "cpu features",
            True,
            f"{features}; bf16 autocast {'native' if info.native_bf16 else 'not native (float32)'}",
        ),
    ]
    device = default_device()
    recipe = f"notebook 05 trains the {recipe_for(device).name} recipe"
    if device.type == "cuda":
        count, name = torch.cuda.device_count(), torch.cuda.get_device_name(0)
        major, minor = torch.cuda.get_device_capability(0)
        bf16 = "bf16 autocast native" if native_bf16(device) else "no native bf16 (float32)"
        gpus = f"{count} x {name}" if count > 1 else name
        gpu = f"CUDA: {gpus}, compute capability {major}.{minor}, {bf16}; {recipe}"
    elif device.type == "mps":
        gpu = f"Apple MPS, float32 (no bf16 autocast there); {recipe}"
    else:
        gpu = f"none: training runs on the CPU; {recipe} on a time budget"
    checks.append(Check("gpu", True, gpu))
    return checks


def check_data(find: Callable[..., object] | None = None) -> Check:
    """Where Fashion-MNIST is, or how to get it (no download is attempted)."""
    from .data import CorruptDataError, DataNotFoundError, find_fashion_mnist, load_fashion_mnist

    find = find or find_fashion_mnist
    try:
        folder = find(download=False)
        load_fashion_mnist(folder, download=False)  # reads and checks all four files
    except DataNotFoundError as error:
        return Check(
            "fashion-mnist",
            False,
            "not found on this machine",
            "let it download once (python -c 'from resnet_lessons.data import "
            "load_fashion_mnist; load_fashion_mnist()'), or `sudo apt-get install "
            "dataset-fashion-mnist`, or put the four .gz files in ./data or "
            f"$RESNET_LESSONS_DATA. Looked: {' '.join(str(error).split())}",
            essential=True,
        )
    except CorruptDataError as error:
        return Check(
            "fashion-mnist",
            False,
            " ".join(str(error).split()),
            "delete the damaged file and get it again",
            essential=True,
        )
    return Check("fashion-mnist", True, f"found in {folder}")


def check_widgets(version: Callable[[str], str | None] = _version) -> Check:
    """Whether JupyterLab will draw the ipywidgets sliders."""
    lab, widgets, lab_widgets = (
        version("jupyterlab"),
        version("ipywidgets"),
        version("jupyterlab_widgets"),
    )
    if lab and widgets and lab_widgets and int(widgets.split(".")[0]) >= 8:
        return Check("widgets", True, f"ipywidgets {widgets} with jupyterlab_widgets {lab_widgets}")
    return Check(
        "widgets",
        False,
        "JupyterLab or its widget extension is missing: the sliders would show as text",
        "run `make lab`, or `pip install 'ipywidgets>=8' jupyterlab`",
    )


def nearest_measured(epochs: float) -> tuple[float, float, str]:
    """The measured (epochs, accuracy, where) closest to ``epochs`` from below, if any."""
    below = [row for row in MEASURED_ACCURACY if row[0] <= epochs + 1e-9]
    return below[-1] if below else MEASURED_ACCURACY[0]


def speed_report(seconds: float = 4.0) -> list[str]:
    """Time a few training steps of both recipes here (about ``seconds`` each, the way
    ``fit(budget=...)`` probes) and turn them into expected times, as lines of text."""
    import torch

    from . import resnet18
    from ._checks import format_seconds
    from .data import load_fashion_mnist
    from .runtime import resolve_device
    from .training import FAST, LECTURE, prepare_model
    from .training.budget import PROBE_FRACTION, measure_speed, plan_run
    from .training.speed import device_name

    device = resolve_device(None)
    data = load_fashion_mnist(download=False)
    n_train = len(data.train_labels)
    lines = []
    for recipe in (FAST, LECTURE):
        # the lecture's 96x96 steps are slow on a CPU: time batches of 32 and scale up
        probed = recipe if recipe is FAST else dataclasses.replace(recipe, batch_size=32)
        torch.manual_seed(0)
        model = resnet18()
        speedups = prepare_model(model, recipe, device)
        per_step, per_eval = measure_speed(model, data, probed, device, speedups, seconds)
        per_image = per_step / probed.batch_size
        whole = recipe.epochs * (n_train * per_image + per_eval)
        lines.append(
            f"{recipe.name} recipe: ~{1 / per_image:,.0f} training images/s here "
            f"({speedups.describe()}); its {recipe.epochs} epochs would take "
            f"~{format_seconds(whole)}"
        )
        if recipe is FAST:
            three = plan_run(  # the plan `train --minutes 3` and fit(budget=180) make
                180,
                recipe,
                n_train,
                seconds_per_step=per_step,
                seconds_per_eval=per_eval,
                probe_seconds=PROBE_FRACTION * 180,
                device=device_name(device),
            )
            epochs, accuracy, where = nearest_measured(three.epochs)
            lines.append(
                f"a 3-minute budget (train --minutes 3, notebook 05) is ~{three.epochs:.1f} "
                f"epochs here: expect about {accuracy:.0%} test accuracy (measured "
                f"{accuracy:.3f} after {epochs:g} epochs, {where})"
            )
    return lines


def run(probe: bool = True, out: Callable[[str], object] = print) -> int:
    """Print the report; 0 when every essential check passes, else 1."""
    checks = check_packages()
    if not any(c.name == "torch" and not c.ok for c in checks):
        checks += check_hardware()
        checks.append(check_data())
    checks.append(check_widgets())
    for check in checks:
        out(check.line())
    failed = [c for c in checks if c.essential and not c.ok]
    if failed:
        out(f"\n{len(failed)} essential check(s) failed: {', '.join(c.name for c in failed)}.")
        return 1
    if probe:
        out("\nmeasuring a few training steps of both recipes (about 20 s) ...")
        for line in speed_report():
            out(line)
    warnings = [c for c in checks if not c.ok]
    summary = "ready" + (f", with {len(warnings)} warning(s)" if warnings else "")
    out(f"\nsummary: {summary}.")
    return 0
