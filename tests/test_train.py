"""The trainer: recipes, fit's history, evaluation, checkpoints and resume, on small subsets."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from resnet_lessons import resnet18, set_seed
from resnet_lessons.data import load_fashion_mnist
from resnet_lessons.training import (
    FAST,
    HISTORY_KEYS,
    LECTURE,
    History,
    Recipe,
    evaluate,
    fit,
    get_recipe,
    in_notebook,
    load_checkpoint,
    native_bf16,
    predict,
    resolve_device,
    save_checkpoint,
)
from resnet_lessons.training.budget import Plan
from resnet_lessons.training.distributed import share
from resnet_lessons.training.recipes import make_scheduler


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The CPU is shared: one thread per process avoids OpenMP threads waiting on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    return load_fashion_mnist()


@pytest.fixture(scope="module")
def tiny(data):
    return data.subset(256, 128)


TINY = dataclasses.replace(FAST, epochs=2, batch_size=64)


def test_lecture_recipe_is_the_lecture():
    assert (LECTURE.resize, LECTURE.lr, LECTURE.epochs, LECTURE.batch_size) == (96, 0.05, 10, 256)
    assert LECTURE.momentum == 0 and LECTURE.weight_decay == 0 and LECTURE.schedule == "constant"
    assert LECTURE.label_smoothing == 0 and not LECTURE.bf16 and not LECTURE.channels_last
    assert get_recipe("lecture") is LECTURE and get_recipe("fast") is FAST


def test_fast_recipe_uses_native_size_and_a_schedule():
    assert FAST.resize is None and FAST.schedule == "onecycle" and FAST.label_smoothing > 0


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("epochs", 0, ValueError),
        ("epochs", 2.5, TypeError),
        ("batch_size", -1, ValueError),
        ("lr", 0.0, ValueError),
        ("lr", float("nan"), ValueError),
        ("resize", 0, ValueError),
        ("warmup", 1.0, ValueError),
        ("label_smoothing", 1.0, ValueError),
        ("schedule", "step", ValueError),
        ("noise", -0.1, ValueError),
        ("noise", "0.1", TypeError),
    ],
)
def test_recipe_rejects_bad_values(field, value, error):
    with pytest.raises(error, match=field):
        dataclasses.replace(FAST, **{field: value})


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(ValueError, match="lecture, fast"):
        get_recipe("slow")


def test_recipes_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FAST.lr = 1.0  # type: ignore[misc]


def learning_rates(recipe: Recipe, steps_per_epoch: int) -> list[float]:
    """The learning rate of every step of ``recipe``'s schedule."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=recipe.lr)
    sched = make_scheduler(opt, recipe, steps_per_epoch=steps_per_epoch)
    lrs = []
    for _ in range(recipe.epochs * steps_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_one_cycle_schedule_warms_up_then_decays():
    recipe = dataclasses.replace(FAST, epochs=2, lr=0.2, warmup=0.25)
    lrs = learning_rates(recipe, steps_per_epoch=10)  # 20 steps, 5 warming up
    assert lrs[0] == pytest.approx(0.2 / 25)
    assert max(lrs) == pytest.approx(0.2) and lrs.index(max(lrs)) == 5
    assert all(a <= b for a, b in zip(lrs[:5], lrs[1:6], strict=True))
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:], strict=False))
    assert lrs[-1] == pytest.approx(0.2 / 25e3)


def test_warmup_schedule_ramps_up_then_stays_constant():
    recipe = dataclasses.replace(LECTURE, epochs=2, lr=0.4, schedule="warmup", warmup=0.25)
    lrs = learning_rates(recipe, steps_per_epoch=10)  # 20 steps, 5 warming up
    assert lrs[0] == pytest.approx(0.4 / 25)
    assert all(a < b for a, b in zip(lrs[:5], lrs[1:6], strict=True))
    assert lrs[5:] == pytest.approx([0.4] * 15)


def test_one_cycle_schedule_survives_a_single_step():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = make_scheduler(opt, dataclasses.replace(FAST, epochs=1), steps_per_epoch=1)
    opt.step()
    sched.step()
    assert math.isfinite(opt.param_groups[0]["lr"])


@pytest.mark.parametrize(("batch", "world"), [(256, 1), (256, 2), (7, 2), (10, 3), (5, 4)])
def test_shares_cover_every_global_batch_once(batch, world):
    parts = [share(batch, rank, world) for rank in range(world)]
    covered = [i for part in parts for i in range(batch)[part]]
    assert covered == list(range(batch))
    sizes = [part.stop - part.start for part in parts]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.slow
def test_fit_returns_one_entry_per_epoch(tiny):
    set_seed(0)
    history = fit(resnet18(), tiny, TINY, device="cpu", progress=False)
    assert [entry["epoch"] for entry in history] == [1, 2]
    for entry in history:
        assert tuple(entry) == HISTORY_KEYS
        assert entry["train_loss"] > 0 and math.isfinite(entry["train_loss"])
        assert 0 <= entry["train_acc"] <= 1 and 0 <= entry["test_acc"] <= 1
        assert entry["seconds"] > 0


@pytest.mark.slow
def test_overrides_change_the_recipe(tiny):
    set_seed(0)
    seen = []
    history = fit(
        resnet18(),
        tiny,
        "lecture",
        epochs=1,
        batch_size=128,
        resize=32,
        progress=False,
        on_epoch=seen.append,
    )
    assert len(history) == 1 and seen == history


@pytest.mark.slow
def test_fit_learns(data):
    set_seed(0)
    small = data.subset(3000, 500)
    recipe = dataclasses.replace(FAST, epochs=2, batch_size=64)  # 94 steps, not 36 of 256
    history = fit(resnet18(), small, recipe, progress=False)
    # 10 classes: guessing gives 0.1. Measured in float32 on a 2-core AVX2 CPU, seeds
    # 0/1/2: 0.752 / 0.770 / 0.734, so 0.6 leaves a wide margin for bf16's rounding on
    # AVX-512 BF16 machines too (emulated bf16 was too slow to measure here)
    assert history[-1]["test_acc"] > 0.6
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_predict_and_evaluate(tiny):
    set_seed(0)
    model = resnet18()
    model.train()
    scores = predict(model, tiny.test_images[:10], batch_size=4)
    assert scores.shape == (10, 10) and scores.dtype == torch.float32
    assert model.training  # the mode is restored
    acc = evaluate(model, tiny.test_images[:10], tiny.test_labels[:10], batch_size=4)
    expected = (scores.argmax(1) == tiny.test_labels[:10]).float().mean().item()
    assert acc == pytest.approx(expected)
    with pytest.raises(ValueError, match="differ in length"):
        evaluate(model, tiny.test_images[:10], tiny.test_labels[:9])


@pytest.mark.slow
def test_checkpoint_is_plain_data_and_written_atomically(tiny, tmp_path):
    set_seed(0)
    path = tmp_path / "run" / "checkpoint.pt"
    history = fit(resnet18(), tiny, TINY, progress=False, checkpoint=path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]  # no temp file
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["history"] == history
    assert set(state) >= {"model", "optimizer", "scheduler", "rng", "recipe", "history"}
    model = resnet18()
    model.load_state_dict(state["model"])


class Killed(Exception):
    """Stands for a kill (Ctrl-C, SIGKILL) between two epochs."""


def kill_after_first(entry: dict) -> None:
    if entry["epoch"] == 1:
        raise Killed


@pytest.mark.slow
def test_resume_continues_the_interrupted_run(tiny, tmp_path):
    set_seed(0)
    straight = fit(resnet18(), tiny, TINY, progress=False, checkpoint=tmp_path / "a.pt")

    set_seed(0)
    with pytest.raises(Killed):
        fit(
            resnet18(),
            tiny,
            TINY,
            progress=False,
            checkpoint=tmp_path / "b.pt",
            on_epoch=kill_after_first,
        )
    assert [e["epoch"] for e in load_checkpoint(tmp_path / "b.pt")["history"]] == [1]
    set_seed(123)  # a different fresh model and RNG: the checkpoint must restore both
    resumed = fit(resnet18(), tiny, TINY, progress=False, checkpoint=tmp_path / "b.pt", resume=True)
    assert [e["epoch"] for e in resumed] == [1, 2]
    for a, b in zip(straight, resumed, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["train_acc"] == pytest.approx(a["train_acc"], abs=1e-6)
        assert b["test_acc"] == pytest.approx(a["test_acc"], abs=1e-6)


@pytest.mark.slow
def test_resume_of_a_finished_run_returns_its_history(tiny, tmp_path):
    set_seed(0)
    history = fit(resnet18(), tiny, TINY, progress=False, checkpoint=tmp_path / "c.pt")
    again = fit(resnet18(), tiny, TINY, progress=False, checkpoint=tmp_path / "c.pt", resume=True)
    assert again == history


@pytest.mark.slow
def test_resume_with_other_settings_is_refused(tiny, tmp_path):
    set_seed(0)
    fit(resnet18(), tiny, TINY, epochs=1, progress=False, checkpoint=tmp_path / "d.pt")
    with pytest.raises(ValueError, match=r"lr: 0.1 -> 0.05"):
        fit(
            resnet18(),
            tiny,
            TINY,
            epochs=1,
            lr=0.05,
            progress=False,
            checkpoint=tmp_path / "d.pt",
            resume=True,
        )
    with pytest.raises(ValueError, match="data sizes"):
        fit(
            resnet18(),
            tiny.subset(128),
            TINY,
            epochs=1,
            progress=False,
            checkpoint=tmp_path / "d.pt",
            resume=True,
        )


def test_bad_checkpoints_are_reported(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    save_checkpoint(tmp_path / "other.pt", {"weights": torch.zeros(2)})
    with pytest.raises(ValueError, match="not a resnet_lessons checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_fit_checks_its_arguments(tiny):
    with pytest.raises(TypeError, match="FashionMNIST"):
        fit(resnet18(), (tiny.train_images, tiny.train_labels), TINY)
    with pytest.raises(ValueError, match="checkpoint"):
        fit(resnet18(), tiny, TINY, resume=True)
    with pytest.raises(ValueError, match="epochs"):
        fit(resnet18(), tiny, TINY, epochs=0)
    with pytest.raises(ValueError, match="batch_size=1"):
        fit(resnet18(), tiny, TINY, batch_size=1)


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert isinstance(resolve_device(None), torch.device)
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_bf16_only_where_it_is_native():
    assert native_bf16("meta") is False  # emulated bf16 would be slower than float32
    assert isinstance(native_bf16("cpu"), bool)


@pytest.mark.slow
def test_training_with_flips(tiny):
    """flip=True mirrors random images of every batch (on the device) and still trains."""
    set_seed(0)
    history = fit(resnet18(), tiny, dataclasses.replace(TINY, flip=True), progress=False)
    assert len(history) == 2 and math.isfinite(history[-1]["train_loss"])


@pytest.mark.slow
def test_no_live_plot_outside_a_notebook(tiny, capsys):
    assert not in_notebook()
    set_seed(0)
    fit(resnet18(), tiny, TINY, epochs=1, progress=False)
    assert "Image" not in capsys.readouterr().out


@pytest.mark.slow
def test_live_plot_when_asked(tiny, capsys):
    """plot=True draws the curves with IPython's display (here, outside a kernel, as text)."""
    pytest.importorskip("IPython")
    set_seed(0)
    fit(resnet18(), tiny, TINY, progress=False, plot=True, live_points=0)
    out = capsys.readouterr().out
    assert out.count("IPython.core.display.Image") == 2  # shown, then updated, once per epoch


@pytest.mark.slow
def test_a_drawn_run_takes_live_points_between_its_epochs(tiny, capsys):
    """plot=True takes 20 live points by default: a 2-epoch run of 4 steps each has 8 steps,
    so every step is one; the points at the epochs' ends carry the whole test set's test."""
    pytest.importorskip("IPython")
    set_seed(0)
    history = fit(resnet18(), tiny, TINY, progress=False, plot=True)
    assert [p["epoch"] for p in history.points] == [0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2]
    for point in history.points:
        assert set(point) == {"epoch", "train_loss", "train_acc", "test_acc"}
        assert 0 <= point["test_acc"] <= 1 and point["train_loss"] > 0
    assert history.points[3]["test_acc"] == history[0]["test_acc"]  # epoch 1's whole test
    assert history.points[-1]["test_acc"] == history[1]["test_acc"]
    # drawn at every point but the epochs' last ones, and after each epoch: 6 + 2
    assert capsys.readouterr().out.count("IPython.core.display.Image") == 8
    # the training loss of the points, weighted by their steps, is the epoch's mean loss
    assert sum(p["train_loss"] for p in history.points[:4]) / 4 == pytest.approx(
        history[0]["train_loss"], rel=1e-5
    )


def test_each_history_has_its_own_points():
    """A point added to one run's history is not in another's (no list shared by the class)."""
    first, second = History(), History([{"epoch": 1}])
    first.points.append({"epoch": 0.5})
    assert second.points == [] and History().points == []
    assert second == [{"epoch": 1}]


@pytest.mark.slow
def test_live_points_are_checkpointed_and_a_resumed_run_keeps_them(tiny, tmp_path):
    path = tmp_path / "run.pt"
    set_seed(0)
    with pytest.raises(Killed):
        fit(resnet18(), tiny, TINY, progress=False, checkpoint=path, live_points=4,
            on_epoch=kill_after_first)  # fmt: skip
    assert [p["epoch"] for p in load_checkpoint(path)["points"]] == [0.5, 1]
    resumed = fit(resnet18(), tiny, TINY, progress=False, checkpoint=path, resume=True,
                  live_points=4)  # fmt: skip
    assert [p["epoch"] for p in resumed.points] == [0.5, 1, 1.5, 2]


@pytest.mark.slow
def test_live_plot_shows_a_reference_before_the_first_epoch(tiny, capsys):
    pytest.importorskip("IPython")
    set_seed(0)
    reference = {"recipe": "fast", "history": [dict(epoch=1, train_loss=1, train_acc=0.5,
                 test_acc=0.5)]}  # fmt: skip
    fit(resnet18(), tiny, TINY, epochs=1, progress=False, plot=True, reference=reference,
        live_points=0)  # fmt: skip
    assert capsys.readouterr().out.count("IPython.core.display.Image") == 2  # before + epoch 1
    with pytest.raises(TypeError, match="reference must be a recorded run"):
        fit(resnet18(), tiny, TINY, epochs=1, progress=False, plot=True, reference=[1])


def test_recipe_defaults_are_documented():
    """Every field of Recipe carries its reason inline (the nanoGPT style)."""
    import inspect

    source = inspect.getsource(Recipe)
    for field in dataclasses.fields(Recipe):
        line = next(line for line in source.splitlines() if line.strip().startswith(field.name))
        assert "#" in line, f"Recipe.{field.name} has no comment saying why"


def test_recipe_equals_itself_after_a_round_trip():
    recipe = Recipe(**dataclasses.asdict(FAST))
    assert recipe == FAST


# --------------------------------------------------------------------------- time budgets


def _plan(steps: int, steps_per_epoch: int = 4) -> Plan:
    return Plan(
        budget=60.0,
        probe_seconds=1.0,
        seconds_per_step=0.1,
        seconds_per_eval=0.5,
        batch_size=64,
        steps_per_epoch=steps_per_epoch,
        steps=steps,
        device="cpu (test)",
    )


@pytest.mark.slow
def test_fit_follows_a_plan_to_the_step(tiny):
    # 256 images in batches of 64: 4 steps an epoch; a plan of 6 steps is 1.5 epochs
    set_seed(0)
    plan = _plan(6)
    seen = []
    history = fit(resnet18(), tiny, TINY, progress=False, plan=plan, on_epoch=seen.append)
    assert [e["epoch"] for e in history] == [1, 1.5]
    assert history.plan == plan
    assert history is not seen and list(history) == seen


def test_a_plans_one_cycle_ends_annealed():
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = make_scheduler(opt, FAST, steps_per_epoch=4, total_steps=6)
    rates = []
    for _ in range(6):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(rates) == pytest.approx(0.1, rel=0.2)
    assert rates[-1] == pytest.approx(0.1 / 25e3)  # the last of the 6 steps is fully annealed


@pytest.mark.slow
def test_a_plan_is_checkpointed_and_resume_follows_it(tiny, tmp_path):
    set_seed(0)
    straight = fit(resnet18(), tiny, TINY, progress=False, plan=_plan(6))
    set_seed(0)
    with pytest.raises(Killed):
        fit(
            resnet18(),
            tiny,
            TINY,
            progress=False,
            plan=_plan(6),
            checkpoint=tmp_path / "p.pt",
            on_epoch=kill_after_first,
        )
    assert load_checkpoint(tmp_path / "p.pt")["plan"] == _plan(6).to_dict()
    set_seed(5)
    # a budget given again is not re-probed: the stored plan wins
    resumed = fit(
        resnet18(),
        tiny,
        TINY,
        progress=False,
        budget=999,
        checkpoint=tmp_path / "p.pt",
        resume=True,
    )
    assert resumed.plan == _plan(6)
    assert [e["epoch"] for e in resumed] == [1, 1.5]
    assert resumed[-1]["test_acc"] == pytest.approx(straight[-1]["test_acc"], abs=1e-6)


@pytest.mark.slow
def test_a_budget_cannot_resume_a_run_started_without_one(tiny, tmp_path):
    set_seed(0)
    fit(resnet18(), tiny, TINY, epochs=1, progress=False, checkpoint=tmp_path / "e.pt")
    with pytest.raises(ValueError, match="started without one"):
        fit(
            resnet18(),
            tiny,
            TINY,
            epochs=1,
            progress=False,
            budget=60,
            checkpoint=tmp_path / "e.pt",
            resume=True,
        )


def test_a_plan_for_other_data_is_refused(tiny):
    with pytest.raises(ValueError, match="plan counts 5 steps per epoch"):
        fit(resnet18(), tiny, TINY, progress=False, plan=_plan(6, steps_per_epoch=5))


@pytest.mark.parametrize(("budget", "error"), [(0, ValueError), ("3 min", TypeError)])
def test_bad_budgets_are_refused(tiny, budget, error):
    with pytest.raises(error, match="budget"):
        fit(resnet18(), tiny, TINY, progress=False, budget=budget)


@pytest.mark.slow
def test_fit_with_a_budget_probes_plans_and_says_so(tiny, capsys):
    set_seed(0)
    model = resnet18()
    history = fit(model, tiny, TINY, budget=20)
    out = capsys.readouterr().out
    plan = history.plan
    assert plan is not None and plan.steps >= 1
    # how long the probe may take is tested on a fake clock (test_budget.py), not here
    assert plan.expected_seconds <= 20
    # the probe's plan is printed, then its revisions: after the run's own first 10 steps,
    # and after 30% and 60% of the steps (when those come before the last step)
    first, revised = out.splitlines()[1:3]
    assert first.startswith("this CPU trains ~") and "20 s is ~" in first
    assert revised.startswith("after 10 steps: ~")
    revisions = [line for line in out.splitlines() if line.startswith("after ")]
    assert 1 <= len(revisions) <= 3 and plan.revised_at >= 10
    assert revisions[-1].startswith(f"after {plan.revised_at} steps: ~")
    assert f"; {plan.steps} steps, not " in revisions[-1] or "steps stand" in revisions[-1]
    assert "fast recipe on cpu" in out and history.speedups.describe() in out
    assert history[-1]["epoch"] == pytest.approx(plan.epochs, abs=0.01)
    # the model comes back with plain convolutions, whatever fit computed with
    assert not any(type(m).__name__ == "SmallMapConv2d" for m in model.modules())


# --------------------------------------------------------------------------- regularisers


@pytest.fixture(scope="module")
def with_val(tiny):
    return tiny.split_validation(64, seed=0)


@pytest.mark.slow
def test_a_validation_split_is_evaluated_every_epoch(with_val):
    set_seed(0)
    history = fit(resnet18(), with_val, TINY, progress=False)
    assert [tuple(e) for e in history] == [HISTORY_KEYS[:4] + ("val_acc", "seconds")] * 2
    assert all(0 <= e["val_acc"] <= 1 for e in history)
    assert history.best_epoch is None and not history.stopped_early  # no patience given


class CountingLinear(nn.Module):
    """A linear classifier that also counts its training batches in a buffer: its predictions
    cannot change when the learning rate is 0-ish, but its state does, every epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)
        self.register_buffer("batches", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.batches += 1
        return self.fc(x.flatten(1))


@pytest.mark.slow
def test_early_stopping_stops_and_gives_back_the_best_weights(with_val):
    """With a learning rate of 1e-12 the validation accuracy cannot improve after epoch 1, so
    patience=2 stops after epoch 3 of 6 and hands back epoch 1's state."""
    set_seed(0)
    model = CountingLinear()
    recipe = dataclasses.replace(TINY, epochs=6, lr=1e-12, schedule="constant")
    history = fit(model, with_val, recipe, progress=False, patience=2)
    assert [e["epoch"] for e in history] == [1, 2, 3]
    assert len({e["val_acc"] for e in history}) == 1
    assert history.stopped_early and history.best_epoch == 1
    assert model.batches.item() == 3  # epoch 1's count: 192 training images / 64 per batch


@pytest.mark.slow
def test_a_run_that_stopped_early_resumes_as_stopped(with_val, tmp_path):
    recipe = dataclasses.replace(TINY, epochs=6, lr=1e-12, schedule="constant")
    kwargs = {"progress": False, "patience": 2, "checkpoint": tmp_path / "stopped.pt"}
    set_seed(0)
    first = fit(CountingLinear(), with_val, recipe, **kwargs)
    model = CountingLinear()
    again = fit(model, with_val, recipe, resume=True, **kwargs)
    assert again == first and [e["epoch"] for e in again] == [1, 2, 3]  # no epoch 4
    assert again.stopped_early and again.best_epoch == 1
    assert model.batches.item() == 3  # the best epoch's state, from the checkpoint


@pytest.mark.slow
def test_early_stopping_keeps_the_first_best_epoch(with_val):
    set_seed(0)
    history = fit(resnet18(), with_val, TINY, epochs=3, progress=False, patience=5)
    val = [e["val_acc"] for e in history]
    assert not history.stopped_early and len(history) == 3
    assert history.best_epoch == val.index(max(val)) + 1


@pytest.mark.slow
def test_early_stopping_resumes_with_its_best_epoch(with_val, tmp_path):
    recipe = dataclasses.replace(TINY, epochs=3)
    set_seed(0)
    straight = fit(resnet18(), with_val, recipe, progress=False, patience=1)
    set_seed(0)
    with pytest.raises(Killed):
        fit(
            resnet18(),
            with_val,
            recipe,
            progress=False,
            patience=1,
            checkpoint=tmp_path / "e.pt",
            on_epoch=kill_after_first,
        )
    resumed = fit(
        resnet18(), with_val, recipe, progress=False, patience=1, checkpoint=tmp_path / "e.pt",
        resume=True,
    )  # fmt: skip
    assert [e["epoch"] for e in resumed] == [e["epoch"] for e in straight]
    assert resumed.best_epoch == straight.best_epoch
    with pytest.raises(ValueError, match="patience=1, not 2"):
        fit(
            resnet18(), with_val, recipe, progress=False, patience=2,
            checkpoint=tmp_path / "e.pt", resume=True,
        )  # fmt: skip


@pytest.mark.slow
def test_testing_once_at_the_end_trains_the_same(with_val):
    """test_each_epoch=False skips the test set until the last epoch (or the one early
    stopping stops at); training, validation and the final test are the same."""
    recipe = dataclasses.replace(TINY, epochs=3)
    runs = {}
    for each in (True, False):
        set_seed(0)
        runs[each] = fit(CountingLinear(), with_val, recipe, progress=False, test_each_epoch=each)
    for every, once in zip(runs[True], runs[False], strict=True):
        for key in ("epoch", "train_loss", "train_acc", "val_acc"):
            assert once[key] == every[key]
    assert [math.isnan(e["test_acc"]) for e in runs[False]] == [True, True, False]
    assert runs[False][-1]["test_acc"] == runs[True][-1]["test_acc"]

    set_seed(0)
    stopped = dataclasses.replace(TINY, epochs=6, lr=1e-12, schedule="constant")
    history = fit(
        CountingLinear(), with_val, stopped, progress=False, patience=2, test_each_epoch=False
    )
    assert history.stopped_early and [math.isnan(e["test_acc"]) for e in history] == [
        True,
        True,
        False,
    ]
    with pytest.raises(TypeError, match="test_each_epoch must be True or False, got 'no'"):
        fit(CountingLinear(), with_val, recipe, test_each_epoch="no")


def test_patience_is_checked(tiny, with_val):
    with pytest.raises(ValueError, match=r"needs a validation split.*split_validation"):
        fit(resnet18(), tiny, TINY, patience=2)
    with pytest.raises(ValueError, match="patience must be at least 1, got 0"):
        fit(resnet18(), with_val, TINY, patience=0)
    with pytest.raises(TypeError, match="patience must be a whole number"):
        fit(resnet18(), with_val, TINY, patience=1.5)


@pytest.mark.slow
def test_input_noise_changes_training_only(tiny):
    """Noise on the training images changes what is learned (same seed, other losses); the
    evaluation sees clean images, so a model trained with noise=0 evaluates the same."""
    runs = {}
    for noise in (0.0, 0.5):
        set_seed(0)
        runs[noise] = fit(
            resnet18(), tiny, dataclasses.replace(TINY, epochs=1, noise=noise), progress=False
        )
    assert math.isfinite(runs[0.5][0]["train_loss"])
    assert runs[0.5][0]["train_loss"] != pytest.approx(runs[0.0][0]["train_loss"], rel=1e-6)


def test_the_budget_counts_the_validation_images_too(tiny, monkeypatch):
    """Every epoch evaluates the test images and, with a split, the validation images: the
    probe's estimate of an evaluation covers both (timed with a fake probe)."""
    from resnet_lessons.training import budget as probing
    from resnet_lessons.training.budget import ProbeResult
    from resnet_lessons.training.speed import Speedups

    fake = ProbeResult(seconds_per_step=0.5, seconds_per_eval_batch=2.0, timed_steps=2, seconds=1)
    monkeypatch.setattr(probing, "probe", lambda step, eval_batch, limit: fake)
    recipe = dataclasses.replace(TINY, eval_batch_size=50)
    speedups = Speedups(channels_last=False, bf16=False, small_maps=False, reason="test")
    args = (resnet18(), recipe, torch.device("cpu"), speedups, 1.0)
    step, evaluation = probing.measure_speed(args[0], tiny, *args[1:])
    assert step == pytest.approx(0.5 * probing.PROBE_MARGIN)
    assert evaluation == pytest.approx(2.0 * 3)  # 128 test images: 3 batches of 50
    _, evaluation = probing.measure_speed(args[0], tiny.split_validation(120), *args[1:])
    assert evaluation == pytest.approx(2.0 * (3 + 3))  # and 120 validation images: 3 more


def test_a_notebooks_progress_bar_is_one_line_that_ends_finished(monkeypatch):
    """In a notebook the bar is one text output replaced in place, so the saved notebook
    shows the finished bar (a widget's saved text would read 0%)."""
    import IPython.display

    from resnet_lessons.training.live import OutputLine

    shown = []

    class Handle:
        def update(self, bundle, raw):
            shown[-1] = bundle["text/plain"]

    def display(bundle, raw, display_id):
        shown.append(bundle["text/plain"])
        return Handle()

    monkeypatch.setattr(IPython.display, "display", display)
    line = OutputLine()
    assert line.write("\rfast:   0%|   | 0/3") == len("\rfast:   0%|   | 0/3")
    line.write("\rfast:  67%|## | 2/3")
    line.write("\rfast: 100%|###| 3/3\n")
    line.write("\n")  # nothing to show: the line stays
    assert shown == ["fast: 100%|###| 3/3"]
