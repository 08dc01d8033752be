"""Data parallel: run_world, the hand-made all-reduce, synchronised batch norm, the costs.

Worlds of 2 (or 3) gloo processes on this machine; every worker is a fresh interpreter
(~2-4 s to start on a 2-core CPU), so each test starts one world and checks several things.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch
import torch.distributed as dist
from torch import nn

from resnet_lessons import resnet18
from resnet_lessons.experiments.parallel import (
    BN_SETTINGS,
    DEFAULT_TIMEOUT,
    AllReduceBatchNorm,
    WorkerError,
    all_reduce_demo,
    big_batch_gradients,
    convert_sync_batchnorm,
    gradient_bytes,
    process_group,
    relative_difference,
    ring_all_reduce,
    ring_bytes,
    run_world,
    scale_lr,
    share,
    train_sgd,
    world_gradients,
)

# --------------------------------------------------------------------------- worker functions
# (module level: the spawned workers import them from this file by name)


def _three_ranks(sizes):
    """Who am I, ring all-reduces of several sizes (some smaller than the world) against
    gloo's, and the notebook's demo."""
    rank = dist.get_rank()
    rings = []
    for size in sizes:
        mine = torch.arange(size, dtype=torch.float64) * (rank + 1) + rank
        before = mine.clone()
        builtin = mine.clone()
        dist.all_reduce(builtin)
        rings.append((torch.equal(ring_all_reduce(mine), builtin), torch.equal(mine, before)))
    who = (rank, dist.get_world_size(), torch.get_num_threads())
    return who, rings, all_reduce_demo(4)


def _raise_on_rank_one():
    if dist.get_rank() == 1:
        raise ValueError("rank one is broken on purpose")
    return "fine"


def _kill_rank_one():
    if dist.get_rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    dist.barrier()  # rank 0 waits for a rank that is gone


def _stall_rank_one():
    """Rank 1 sleeps instead of joining the all-reduce: rank 0's collective must time out."""
    if dist.get_rank() == 1:
        time.sleep(60)
    dist.all_reduce(torch.ones(3))


def _return_rank():
    return dist.get_rank(), dist.get_world_size(), torch.get_num_threads()


def _bn_outputs(x, momenta):
    """Synchronised BN on this rank's share, two steps: output, input gradient, running
    statistics, for each momentum."""
    out = []
    for momentum in momenta:
        bn = convert_sync_batchnorm(nn.BatchNorm2d(x.shape[1], momentum=momentum).double())
        part = share(x.shape[0], dist.get_rank(), dist.get_world_size())
        xi = x[part].clone().requires_grad_()
        bn(xi * 2)  # a first step moves the running statistics
        y = bn(xi)
        (y * _weights(x)).sum().backward()
        out.append((type(bn).__name__, y.detach(), xi.grad, bn.running_mean, bn.running_var))
    return out


def _weights(x):
    return torch.linspace(-1, 1, x[0].numel(), dtype=x.dtype).reshape(x.shape[1:])


def _small_net(batch_norm: bool) -> nn.Sequential:
    norm = (lambda c: nn.BatchNorm2d(c)) if batch_norm else (lambda c: nn.Identity())
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), norm(4), nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2), norm(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )  # fmt: skip


# --------------------------------------------------------------------------- run_world


@pytest.mark.slow
def test_run_world_returns_each_rank_and_the_ring_matches_gloo():
    results = run_world(_three_ranks, 3, args=([1, 2, 3, 7, 100],))
    assert [who for who, _, _ in results] == [(0, 3, 1), (1, 3, 1), (2, 3, 1)]  # 1 thread each
    for _, rings, demo in results:
        assert rings == [(True, True)] * 5  # equal to gloo's; the input is untouched
        assert demo["ring"] == demo["builtin"] == [33, 36, 39, 42]
    assert [demo["before"] for _, _, demo in results] == [
        [1, 2, 3, 4], [11, 12, 13, 14], [21, 22, 23, 24]
    ]  # fmt: skip


@pytest.mark.slow
def test_a_worker_that_raises_names_itself_with_its_traceback():
    with pytest.raises(WorkerError) as info:
        run_world(_raise_on_rank_one, 2)
    error = info.value
    assert error.rank == 1
    assert "worker 1 of 2 (_raise_on_rank_one) raised ValueError: rank one is broken" in str(error)
    assert "Traceback" in error.worker_traceback and "_raise_on_rank_one" in str(error)


@pytest.mark.slow
def test_a_killed_worker_ends_the_world_with_a_clear_error():
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"worker 1 of 2 .* died with signal SIGKILL"):
        run_world(_kill_rank_one, 2, timeout=60)
    assert time.monotonic() - start < 30  # not the 60 s timeout: the death is noticed


@pytest.mark.slow
def test_a_stalled_worker_times_out_instead_of_hanging():
    """The process group's timeout turns rank 0's endless wait into an error."""
    start = time.monotonic()
    with pytest.raises((WorkerError, TimeoutError)) as info:
        run_world(_stall_rank_one, 2, timeout=3)
    assert time.monotonic() - start < 30
    assert "Timed out" in str(info.value) or "did not finish within 3 s" in str(info.value)


def test_run_world_refuses_what_workers_cannot_import():
    with pytest.raises(TypeError, match="module-level function"):
        run_world(lambda: 1, 2)

    def local():
        return 1

    with pytest.raises(TypeError, match="module-level function"):
        run_world(local, 2)
    with pytest.raises(ValueError, match="timeout must be"):
        run_world(_return_rank, 2, timeout=0)
    with pytest.raises(ValueError, match="world_size must be at least 1"):
        run_world(_return_rank, 0)


# --------------------------------------------------------------------------- same gradients


@pytest.mark.slow
def test_two_processes_give_the_gradient_of_one_big_batch_unless_bn_is_per_worker():
    """2 x 8 images vs 16 in float64: equal without BN, with BN in eval mode and with
    synchronised BN; different with each worker's own BN statistics."""
    torch.manual_seed(0)
    images = torch.randn(16, 1, 12, 12, dtype=torch.float64) * 2 + 1
    labels = torch.randint(0, 10, (16,))
    with_bn, without_bn = _small_net(True).double(), _small_net(False).double()
    settings = {**BN_SETTINGS, "no BN": (True, False)}
    nets = [with_bn, without_bn]
    # one world for all four comparisons: the workers start once
    worlds = run_world(_gradient_tables, 2, args=(nets, images, labels, settings))
    assert relative_difference(worlds[0]["BN in eval mode"], worlds[1]["BN in eval mode"]) == 0
    for name in settings:
        net = without_bn if name == "no BN" else with_bn
        reference = big_batch_gradients(net, images, labels, {name: settings[name]})[name]
        difference = relative_difference(worlds[0][name], reference)
        if name == "BN per worker":
            assert difference > 0.05, difference
        else:
            assert difference < 1e-10, (name, difference)


def _gradient_tables(nets, images, labels, settings):
    with_bn, without_bn = nets
    out = world_gradients(
        with_bn, images, labels, {k: v for k, v in settings.items() if k != "no BN"}
    )
    out.update(world_gradients(without_bn, images, labels, {"no BN": settings["no BN"]}))
    return out


@pytest.mark.slow
def test_synchronised_bn_matches_one_batch_norm_over_the_global_batch():
    torch.manual_seed(1)
    x = torch.randn(10, 3, 4, 5, dtype=torch.float64) * 3 + 50  # |mean| >> std
    momenta = (0.1, None)
    results = run_world(_bn_outputs, 3, args=(x, momenta))  # shares of 4, 3 and 3 images
    for i, momentum in enumerate(momenta):
        bn = nn.BatchNorm2d(3, momentum=momentum).double()
        xx = x.clone().requires_grad_()
        bn(xx * 2)
        out = bn(xx)
        (out * _weights(x)).sum().backward()
        ranks = [r[i] for r in results]
        assert ranks[0][0] == "AllReduceBatchNorm"
        assert torch.allclose(torch.cat([r[1] for r in ranks]), out, atol=1e-9)
        assert torch.allclose(torch.cat([r[2] for r in ranks]), xx.grad, atol=1e-9)
        for r in ranks:
            assert torch.allclose(r[3], bn.running_mean, atol=1e-9)
            assert torch.allclose(r[4], bn.running_var, atol=1e-9)


# --------------------------------------------------------------------------- BN without a world


def test_all_reduce_batch_norm_in_one_process_is_batch_norm():
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(4)
    plain.weight.data.uniform_()
    x = torch.randn(6, 4, 3, 3)
    synced = convert_sync_batchnorm(_copy(plain), backend="gloo")
    assert isinstance(synced, AllReduceBatchNorm)
    assert synced.state_dict().keys() == plain.state_dict().keys()
    assert torch.allclose(synced(x), plain(x))  # no process group: plain batch norm
    synced.eval(), plain.eval()
    assert torch.allclose(synced(x), plain(x))
    with pytest.raises(ValueError, match="has 4 channels but the input has 3"):
        synced(torch.randn(2, 3, 2, 2))


def test_convert_keeps_the_parameters_and_picks_pytorch_under_nccl():
    model = resnet18()
    weight = model.stem[1].weight
    converted = convert_sync_batchnorm(model, backend="gloo")
    kinds = {type(m) for m in converted.modules()}
    assert AllReduceBatchNorm in kinds and nn.BatchNorm2d not in kinds
    assert converted.stem[1].weight is weight  # the same parameter, not a copy
    assert converted.stem[1].training
    # the state dict is that of an unconverted net: checkpoints load either way
    resnet18().load_state_dict(converted.state_dict())

    nccl = convert_sync_batchnorm(resnet18(), backend="nccl")
    assert any(isinstance(m, nn.SyncBatchNorm) for m in nccl.modules())

    with pytest.raises(ValueError, match="needs the backend"):
        convert_sync_batchnorm(resnet18())
    with pytest.raises(ValueError, match="'gloo' or 'nccl'"):
        convert_sync_batchnorm(resnet18(), backend="mpi")


def _copy(module):
    import copy

    return copy.deepcopy(module)


def test_process_group_without_torchrun_does_nothing(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with process_group(torch.device("cpu"), timeout=5) as (rank, world):
        assert (rank, world) == (0, 1)
        assert not dist.is_initialized()
    with pytest.raises(ValueError, match="timeout must be"):
        with process_group(torch.device("cpu"), timeout=float("inf")):
            pass
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        with process_group(torch.device("cpu")):
            pass


def test_the_command_line_default_timeout_is_the_package_one():
    from resnet_lessons.__main__ import DIST_TIMEOUT

    assert DIST_TIMEOUT == DEFAULT_TIMEOUT


# --------------------------------------------------------------------------- lr and costs


def test_scale_lr_is_linear_in_the_batch():
    assert scale_lr(0.1, 1024, 256) == pytest.approx(0.4)
    assert scale_lr(0.05, 64, 256) == pytest.approx(0.0125)
    with pytest.raises(ValueError, match="lr must be"):
        scale_lr(0.0, 512, 256)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        scale_lr(0.1, 0, 256)


def test_train_sgd_warms_up_and_counts_steps():
    torch.manual_seed(0)
    x, y = torch.randn(100, 5), torch.randint(0, 3, (100,))
    model = nn.Linear(5, 3)
    losses = train_sgd(model, x, y, batch_size=32, lr=0.1, epochs=2, warmup_steps=4)
    assert len(losses) == 2 * (100 // 32)  # the incomplete last batch is dropped
    assert all(torch.isfinite(torch.tensor(losses)))
    with pytest.raises(ValueError, match="larger than the 100 images"):
        train_sgd(model, x, y, batch_size=101, lr=0.1)


def test_gradient_bytes_and_ring_bytes():
    model = resnet18()
    n_params = sum(p.numel() for p in model.parameters())
    assert gradient_bytes(model) == 4 * n_params
    assert 11e6 < n_params < 11.5e6  # ResNet-18 for 10 classes and 1 channel
    assert ring_bytes(100, 2) == 100  # two workers: each sends half twice
    assert ring_bytes(100, 1) == 0
    assert ring_bytes(800, 8) == 1400  # 2 (W - 1) / W: below twice the data for any W
