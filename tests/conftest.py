"""What every test gets: a guard that keeps the quick loop quick.

``make test-fast`` runs ``-m "not slow"`` with ``RESNET_LESSONS_QUICK=1``. A test that
trains with ``fit`` (or probes for a budget), spawns a process or starts a browser must be
marked ``@pytest.mark.slow``; there the guard fails an unmarked one that does, naming the
mark to add, so the quick loop cannot grow slow unnoticed. Checking ``fit``'s arguments,
which fails before training, stays quick. ``make test`` runs every test, unguarded.
"""

from __future__ import annotations

import multiprocessing.process
import os
import subprocess

import pytest


def _refuse(what: str):
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError(
            f"this test {what} but is not marked slow: add @pytest.mark.slow (the quick loop, "
            "`make test-fast`, runs only unit tests without training, processes or a browser)."
        )

    return refuse


@pytest.fixture(autouse=True)
def _slow_work_needs_the_slow_mark(request: pytest.FixtureRequest, monkeypatch):
    quick = os.environ.get("RESNET_LESSONS_QUICK") == "1"
    if not quick or request.node.get_closest_marker("slow") is not None:
        yield
        return
    from resnet_lessons.training import budget, loop

    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("spawns a process"))
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", _refuse("starts a process"))
    monkeypatch.setattr(loop, "_train_epoch", _refuse("trains with fit"))
    monkeypatch.setattr(budget, "probe", _refuse("times training steps for a budget"))
    yield
