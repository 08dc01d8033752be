"""The doctor's checks, one by one, with what is installed replaced by fakes."""

from __future__ import annotations

from resnet_lessons.data import DataNotFoundError
from resnet_lessons.doctor import (
    MEASURED_ACCURACY,
    check_data,
    check_packages,
    check_widgets,
    nearest_measured,
)


def test_a_missing_essential_package_fails_with_the_fix():
    versions = {"torch": "2.14.1", "torchvision": "0.29.1", "numpy": "2.0", "matplotlib": "3.9",
                "tqdm": "4.66", "jupyterlab": "4.2", "jupyterlab_widgets": "3.0"}  # fmt: skip
    checks = {c.name: c for c in check_packages(versions.get)}
    assert checks["torch"].ok and checks["torch"].detail == "2.14.1"
    widgets = checks["ipywidgets"]
    assert not widgets.ok and widgets.essential
    assert "not installed (needed for the sliders of notebook 02)" in widgets.detail
    assert "make lab" in widgets.line() and widgets.line().startswith("[FAIL]")


def test_jupyterlab_is_advice_not_essential():
    checks = {c.name: c for c in check_packages(lambda name: None)}
    assert not checks["jupyterlab"].essential
    assert checks["jupyterlab"].line().startswith("[warn]")


def test_widgets_need_jupyterlab_and_its_widget_extension():
    ok = check_widgets({"jupyterlab": "4.2", "ipywidgets": "8.1", "jupyterlab_widgets": "3.0"}.get)
    assert ok.ok
    old = check_widgets({"jupyterlab": "4.2", "ipywidgets": "7.8", "jupyterlab_widgets": "1"}.get)
    assert not old.ok and "pip install 'ipywidgets>=8' jupyterlab" in old.fix


def test_missing_data_says_where_it_looked_and_how_to_get_it():
    def nowhere(**kwargs):
        raise DataNotFoundError("Fashion-MNIST not found. Looked in: ./data, /usr/share/...")

    check = check_data(nowhere)
    assert not check.ok and check.essential
    assert "apt-get install dataset-fashion-mnist" in check.fix
    assert "./data" in check.fix


def test_the_quoted_accuracy_is_one_measured_at_or_below_the_epochs():
    first = MEASURED_ACCURACY[0]
    assert nearest_measured(0.3) == first  # nothing below: the smallest measured
    assert nearest_measured(100) == MEASURED_ACCURACY[-1]
    for epochs, _, where in MEASURED_ACCURACY:
        assert nearest_measured(epochs)[0] == epochs
        assert "CPU" in where  # every figure says where it was measured


def test_the_speed_report_turns_the_probe_into_times(monkeypatch):
    """What the doctor prints from its probe, with the probe replaced by a fake (a real one
    takes half a minute on a 2-core CPU; `fit(budget=...)` tests run it for real)."""
    from resnet_lessons import doctor
    from resnet_lessons._checks import format_seconds
    from resnet_lessons.training import budget as probing
    from resnet_lessons.training.recipes import FAST

    asked = []

    def fake_measure(model, data, recipe, device, speedups, limit):
        asked.append((recipe.name, recipe.batch_size, limit))
        return recipe.batch_size / 1000, 2.0  # 1,000 training images/s, 2 s per test pass

    monkeypatch.setattr(probing, "measure_speed", fake_measure)
    lines = doctor.speed_report(seconds=3.0)
    assert asked == [("fast", FAST.batch_size, 3.0), ("lecture", 32, 3.0)]  # lecture: 32s
    fast, budget, lecture = lines
    # 60,000 images at 1,000/s and a 2 s test, per epoch
    assert fast.startswith("fast recipe: ~1,000 training images/s here (")
    assert fast.endswith(f"its {FAST.epochs} epochs would take ~{format_seconds(FAST.epochs * 62)}")
    # (180 s - a 5.4 s probe - 3 tests of 2 s) / 0.256 s a step = 658 steps of 235 an epoch
    assert budget.startswith("a 3-minute budget (train --minutes 3, notebook 05) is ~2.8 epochs")
    assert "measured" in budget and "CPU" in budget  # a quoted accuracy says where
    assert lecture.startswith("lecture recipe: ~1,000 training images/s here (")


def test_run_prints_the_speed_report_unless_told_not_to(monkeypatch):
    from resnet_lessons import doctor

    monkeypatch.setattr(doctor, "speed_report", lambda: ["fast recipe: ~7 training images/s"])
    printed: list[str] = []
    assert doctor.run(probe=True, out=printed.append) == 0
    assert "fast recipe: ~7 training images/s" in printed and printed[-1] == "\nsummary: ready."
    printed.clear()
    assert doctor.run(probe=False, out=printed.append) == 0
    assert not any("training images/s" in line for line in printed)
