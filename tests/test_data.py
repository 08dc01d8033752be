"""Tests for resnet_lessons.data: finding, loading, validating Fashion-MNIST, and batches.

Fake data sets are written as real IDX files (gzipped or not) into ``tmp_path``, with the
expected counts shrunk (``small_counts``) so that they stay a few kilobytes.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from resnet_lessons import data
from resnet_lessons.data import (
    CLASSES,
    DEBIAN_DIR,
    MEAN,
    STD,
    CorruptDataError,
    DataNotFoundError,
    FashionMNIST,
    find_fashion_mnist,
    iterate_batches,
    load_fashion_mnist,
    prepare_batch,
)

N_TRAIN, N_TEST = 12, 5


# --------------------------------------------------------------------------- helpers


def idx_images(count: int, seed: int = 0, rows: int = 28, cols: int = 28) -> bytes:
    pixels = torch.randint(
        0, 256, (count, rows, cols), generator=torch.Generator().manual_seed(seed)
    )
    header = struct.pack(">IIII", 0x00000803, count, rows, cols)
    return header + pixels.to(torch.uint8).numpy().tobytes()


def idx_labels(count: int, seed: int = 0) -> bytes:
    labels = torch.arange(count) % 10
    labels = labels[torch.randperm(count, generator=torch.Generator().manual_seed(seed))]
    return struct.pack(">II", 0x00000801, count) + labels.to(torch.uint8).numpy().tobytes()


def write_dataset(
    folder: Path, *, gz: bool = True, raw_layout: bool = False, seed: int = 0
) -> Path:
    """Write the four files (N_TRAIN / N_TEST items) into ``folder`` (or its FashionMNIST/raw)."""
    target = folder / "FashionMNIST" / "raw" if raw_layout else folder
    target.mkdir(parents=True, exist_ok=True)
    contents = {
        "train-images-idx3-ubyte": idx_images(N_TRAIN, seed),
        "train-labels-idx1-ubyte": idx_labels(N_TRAIN, seed),
        "t10k-images-idx3-ubyte": idx_images(N_TEST, seed + 1),
        "t10k-labels-idx1-ubyte": idx_labels(N_TEST, seed + 1),
    }
    for name, content in contents.items():
        if gz:
            (target / f"{name}.gz").write_bytes(gzip.compress(content))
        else:
            (target / name).write_bytes(content)
    return target


@pytest.fixture
def small_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Expect N_TRAIN / N_TEST items instead of 60000 / 10000."""
    for field, (name, count) in data.FILES.items():
        monkeypatch.setitem(data.FILES, field, (name, N_TRAIN if count == 60000 else N_TEST))


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No env var, an empty working directory, a Debian folder that does not exist."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "debian-absent")
    data._CACHE.clear()
    yield tmp_path
    data._CACHE.clear()


# --------------------------------------------------------------------------- finding


def test_search_order_root_env_cwd_debian(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_dataset(isolated / "root")
    env = write_dataset(isolated / "env")
    cwd_data = write_dataset(isolated / "cwd" / "data")
    debian = write_dataset(isolated / "debian")
    monkeypatch.setattr(data, "DEBIAN_DIR", debian)
    monkeypatch.setenv(data.ENV_VAR, str(env))

    assert find_fashion_mnist(root, download=False) == root
    assert find_fashion_mnist(download=False) == env
    monkeypatch.delenv(data.ENV_VAR)
    assert find_fashion_mnist(download=False).resolve() == cwd_data.resolve()
    for path in cwd_data.iterdir():
        path.unlink()
    assert find_fashion_mnist(download=False) == debian
    # a root without the files falls through to the next place
    assert find_fashion_mnist(isolated / "nothing-here", download=False) == debian


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("raw_layout", [False, True], ids=["flat", "FashionMNIST-raw"])
def test_layouts_found_and_loaded(
    isolated: Path, small_counts: None, gz: bool, raw_layout: bool
) -> None:
    folder = write_dataset(isolated / "root", gz=gz, raw_layout=raw_layout)
    assert find_fashion_mnist(isolated / "root", download=False) == folder
    ds = load_fashion_mnist(isolated / "root", download=False)
    assert ds.train_images.shape == (N_TRAIN, 1, 28, 28)
    assert ds.test_images.shape == (N_TEST, 1, 28, 28)
    assert ds.train_images.dtype == ds.test_images.dtype == torch.uint8
    assert ds.train_labels.dtype == ds.test_labels.dtype == torch.int64
    assert ds.classes == CLASSES
    # the pixels are the ones written, in order
    expected = idx_images(N_TRAIN, 0)[16:]
    assert ds.train_images.numpy().tobytes() == expected


def test_uncompressed_preferred_and_mixed_files(isolated: Path, small_counts: None) -> None:
    folder = write_dataset(isolated / "root", gz=True)
    # torchvision's raw folder holds both the .gz and the extracted file; a mix must work too
    (folder / "train-images-idx3-ubyte").write_bytes(idx_images(N_TRAIN, seed=7))
    ds = load_fashion_mnist(folder, download=False)
    assert ds.train_images.numpy().tobytes() == idx_images(N_TRAIN, seed=7)[16:]


def test_nothing_found_offline_lists_places(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(data.ENV_VAR, str(isolated / "env-folder"))
    with pytest.raises(DataNotFoundError) as info:
        find_fashion_mnist(isolated / "my-root", download=False)
    message = str(info.value)
    for place in ("my-root", "env-folder", "data", "debian-absent"):
        assert place in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert data.ENV_VAR in message
    assert "download=True" in message
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(DataNotFoundError):
        load_fashion_mnist(download=False)


def test_incomplete_folder_says_what_is_missing(isolated: Path) -> None:
    folder = write_dataset(isolated / "root")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match="lacks t10k-labels-idx1-ubyte"):
        find_fashion_mnist(folder, download=False)


def test_download_goes_through_torchvision_into_root(
    isolated: Path, small_counts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    class FakeTorchvisionFashionMNIST:
        def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
            calls.append((Path(root), download))
            write_dataset(Path(root), raw_layout=True)

    monkeypatch.setattr("torchvision.datasets.FashionMNIST", FakeTorchvisionFashionMNIST)
    assert (
        find_fashion_mnist(download=True).resolve()
        == (isolated / "cwd" / "data" / "FashionMNIST" / "raw").resolve()
    )
    assert calls == [(Path.cwd() / "data", True)]
    ds = load_fashion_mnist(isolated / "elsewhere", download=True)  # ./data now has it
    assert len(ds.train_labels) == N_TRAIN


def test_failed_download_is_reported(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_internet(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr("torchvision.datasets.FashionMNIST", no_internet)
    with pytest.raises(DataNotFoundError, match="download into .* failed: RuntimeError"):
        find_fashion_mnist(download=True)


# --------------------------------------------------------------------------- real data


def test_real_debian_files() -> None:
    if not DEBIAN_DIR.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{DEBIAN_DIR} is missing on CI: apt-get install dataset-fashion-mnist")
        pytest.skip(f"{DEBIAN_DIR} absent (apt-get install dataset-fashion-mnist)")
    data._CACHE.clear()
    ds = load_fashion_mnist(DEBIAN_DIR, download=False)
    assert ds.train_images.shape == (60000, 1, 28, 28)
    assert ds.test_images.shape == (10000, 1, 28, 28)
    assert ds.train_images.dtype == torch.uint8
    assert ds.train_labels.shape == (60000,) and ds.train_labels.dtype == torch.int64
    assert ds.test_labels.shape == (10000,) and ds.test_labels.dtype == torch.int64
    # balanced classes: 6000 / 1000 of each of the ten labels
    assert ds.train_labels.bincount().tolist() == [6000] * 10
    assert ds.test_labels.bincount().tolist() == [1000] * 10
    pixels = ds.train_images.double() / 255
    assert pixels.mean().item() == pytest.approx(MEAN, abs=1e-6)
    assert pixels.std(unbiased=False).item() == pytest.approx(STD, abs=1e-6)
    assert load_fashion_mnist(DEBIAN_DIR, download=False) is ds  # cached
    assert "60000" in repr(ds) and "tensor" not in repr(ds)


# --------------------------------------------------------------------------- corrupt files


def _corrupt(folder: Path, name: str, content: bytes, *, gz: bool = True) -> None:
    if gz:
        (folder / f"{name}.gz").write_bytes(gzip.compress(content))
    else:
        (folder / f"{name}.gz").unlink()
        (folder / name).write_bytes(content)


TRAIN_IMAGES = "train-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"


@pytest.mark.parametrize(
    ("name", "content", "gz", "match"),
    [
        (TRAIN_IMAGES, None, True, "not a valid gzip"),  # bytes that are not gzip
        (TRAIN_IMAGES, "truncated-gzip", True, "not a valid gzip"),
        (TRAIN_IMAGES, b"\x00\x00\x08", False, "shorter than the 16-byte IDX header"),
        (TRAIN_IMAGES, struct.pack(">IIII", 0x801, N_TRAIN, 28, 28), True, "wrong magic"),
        (TRAIN_IMAGES, idx_images(N_TRAIN + 1), True, f"header says {N_TRAIN + 1} x 28 x 28"),
        (TRAIN_IMAGES, idx_images(N_TRAIN, rows=32, cols=32), False, "expected 12 x 28 x 28"),
        (TRAIN_IMAGES, idx_images(N_TRAIN)[:-100], True, "truncated"),
        (TRAIN_IMAGES, idx_images(N_TRAIN) + b"\x00", False, "has extra bytes"),
        (
            TEST_LABELS,
            struct.pack(">II", 0x801, N_TEST) + bytes([0, 1, 12, 3, 4]),
            True,
            "label 12 at position 2 is outside 0..9",
        ),
        (TEST_LABELS, idx_images(N_TEST), True, "wrong magic number 0x00000803"),
    ],
    ids=[
        "not-gzip",
        "truncated-gzip",
        "short-header",
        "magic",
        "count",
        "size",
        "truncated",
        "extra",
        "label-range",
        "images-as-labels",
    ],
)
def test_corrupt_files_named_in_error(
    isolated: Path,
    small_counts: None,
    name: str,
    content: bytes | str | None,
    gz: bool,
    match: str,
) -> None:
    folder = write_dataset(isolated / "root")
    if content is None:
        (folder / f"{name}.gz").write_bytes(b"this is not gzip at all")
    elif content == "truncated-gzip":
        whole = gzip.compress(idx_images(N_TRAIN))
        (folder / f"{name}.gz").write_bytes(whole[: len(whole) // 2])
    else:
        _corrupt(folder, name, content, gz=gz)
    with pytest.raises(CorruptDataError, match=match) as info:
        load_fashion_mnist(folder, download=False)
    assert name in str(info.value)
    assert isinstance(info.value, ValueError)


def test_cache_reloads_changed_files(isolated: Path, small_counts: None) -> None:
    folder = write_dataset(isolated / "root", gz=False)
    first = load_fashion_mnist(folder, download=False)
    assert load_fashion_mnist(folder, download=False) is first
    path = folder / TRAIN_IMAGES
    path.write_bytes(idx_images(N_TRAIN, seed=3))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = load_fashion_mnist(folder, download=False)
    assert second is not first
    assert second.train_images.numpy().tobytes() == idx_images(N_TRAIN, seed=3)[16:]


# --------------------------------------------------------------------------- the dataclass


def fake_dataset(n_train: int = N_TRAIN, n_test: int = N_TEST) -> FashionMNIST:
    g = torch.Generator().manual_seed(0)
    return FashionMNIST(
        torch.randint(0, 256, (n_train, 1, 28, 28), generator=g, dtype=torch.uint8),
        torch.arange(n_train) % 10,
        torch.randint(0, 256, (n_test, 1, 28, 28), generator=g, dtype=torch.uint8),
        torch.arange(n_test) % 10,
    )


def test_subset_takes_the_first_items() -> None:
    ds = fake_dataset()
    small = ds.subset(train=4, test=3)
    assert small.train_images.shape == (4, 1, 28, 28) and small.test_labels.shape == (3,)
    assert torch.equal(small.train_images, ds.train_images[:4])
    assert torch.equal(small.test_labels, ds.test_labels[:3])
    assert ds.subset(test=2).train_labels.shape == (N_TRAIN,)
    with pytest.raises(ValueError, match="between 1 and 12"):
        ds.subset(train=13)
    with pytest.raises(ValueError, match="between 1 and 5"):
        ds.subset(test=0)
    with pytest.raises(TypeError, match="whole number"):
        ds.subset(train=2.5)


def test_dataclass_checks_dtypes() -> None:
    ds = fake_dataset()
    with pytest.raises(TypeError, match="train_images must be uint8"):
        FashionMNIST(ds.train_images.float(), ds.train_labels, ds.test_images, ds.test_labels)
    with pytest.raises(TypeError, match="test_labels must be int64"):
        FashionMNIST(ds.train_images, ds.train_labels, ds.test_images, ds.test_labels[:-1])


def test_split_validation_holds_out_training_images_and_loses_none() -> None:
    ds = fake_dataset()
    split = ds.split_validation(4, seed=1)
    assert split.train_images.shape == (N_TRAIN - 4, 1, 28, 28)
    assert split.val_images.shape == (4, 1, 28, 28) and split.val_labels.shape == (4,)
    assert torch.equal(split.test_images, ds.test_images)
    together = torch.cat([split.train_labels, split.val_labels]).sort().values
    assert torch.equal(together, ds.train_labels.sort().values)  # nothing lost, nothing twice
    again = ds.split_validation(4, seed=1)
    assert torch.equal(again.val_images, split.val_images)
    assert not torch.equal(ds.split_validation(4, seed=2).val_labels, split.val_labels)
    assert "val=4" in repr(split)
    assert split.subset(train=3).val_labels.shape == (4,)  # a subset keeps the split
    assert ds.val_images is None


@pytest.mark.parametrize(
    ("n", "error", "match"),
    [
        (N_TRAIN, ValueError, f"between 1 and {N_TRAIN - 1}"),
        (N_TRAIN + 5, ValueError, f"the training set has {N_TRAIN}"),
        (0, ValueError, "between 1"),
        (0.2, TypeError, "whole number"),
    ],
)
def test_split_validation_rejects_bad_sizes(n, error, match) -> None:
    with pytest.raises(error, match=match):
        fake_dataset().split_validation(n)


def test_split_validation_only_once() -> None:
    with pytest.raises(ValueError, match="already has a validation split of 2"):
        fake_dataset().split_validation(2).split_validation(2)
    ds = fake_dataset()
    with pytest.raises(TypeError, match="give both or neither"):
        FashionMNIST(
            ds.train_images,
            ds.train_labels,
            ds.test_images,
            ds.test_labels,
            val_images=ds.test_images,
        )


# --------------------------------------------------------------------------- prepare_batch


def test_prepare_batch_normalises_with_mean_and_std() -> None:
    images = torch.tensor([0, 255, 51], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 28, 28)
    out = prepare_batch(images)
    assert out.shape == (3, 1, 28, 28) and out.dtype == torch.float32
    expected = (torch.tensor([0.0, 1.0, 0.2]) - MEAN) / STD
    torch.testing.assert_close(out[:, 0, 0, 0], expected)
    assert torch.all(out == out[:, :, :1, :1])
    # the real data set comes out with mean 0 and std 1
    ds = fake_dataset()
    assert not torch.equal(prepare_batch(ds.train_images), ds.train_images.float())


def test_prepare_batch_on_training_data_is_standardised() -> None:
    if not DEBIAN_DIR.is_dir():
        pytest.skip(f"{DEBIAN_DIR} absent")
    x = prepare_batch(load_fashion_mnist(DEBIAN_DIR, download=False).train_images[:20000])
    assert x.mean().item() == pytest.approx(0.0, abs=0.01)
    assert x.std().item() == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("size", [96, 32, 28, 14])
def test_prepare_batch_resize_matches_interpolate(size: int) -> None:
    images = fake_dataset().train_images[:4]
    out = prepare_batch(images, resize=size)
    assert out.shape == (4, 1, size, size)
    reference = F.interpolate(
        (images.float() / 255 - MEAN) / STD,
        size=(size, size),
        mode="bilinear",
        align_corners=False,
        antialias=False,
    )
    torch.testing.assert_close(out, reference)


def test_prepare_batch_resize_like_torchvision_resize_when_enlarging() -> None:
    from torchvision.transforms.v2 import functional as TF

    images = fake_dataset().train_images[:4]
    ours = prepare_batch(images, resize=96)
    theirs = (TF.resize(images.float() / 255, [96, 96], antialias=True) - MEAN) / STD
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_prepare_batch_channels_last_dtype_device() -> None:
    images = fake_dataset().train_images[:6]
    out = prepare_batch(images, "cpu", resize=32, channels_last=True, dtype=torch.bfloat16)
    assert out.shape == (6, 1, 32, 32)
    assert out.dtype == torch.bfloat16
    assert out.device == torch.device("cpu")
    assert out.is_contiguous(memory_format=torch.channels_last)
    colour = torch.zeros(2, 3, 28, 28, dtype=torch.uint8)  # with C > 1 the strides show NHWC
    assert prepare_batch(colour, resize=32, channels_last=True).stride() == (3 * 32 * 32, 1, 96, 3)
    torch.testing.assert_close(out.float(), prepare_batch(images, resize=32), atol=0.05, rtol=0.01)
    meta = prepare_batch(images, torch.device("meta"), resize=96)
    assert meta.device.type == "meta" and meta.shape == (6, 1, 96, 96)
    assert images.dtype == torch.uint8  # the input is not modified
    assert prepare_batch(images, dtype=torch.float64).dtype == torch.float64


def test_prepare_batch_rejects_bad_input() -> None:
    images = fake_dataset().train_images[:2]
    with pytest.raises(TypeError, match="must be uint8"):
        prepare_batch(images.float())
    with pytest.raises(ValueError, match=r"\(N, C, H, W\), got shape \(2, 28, 28\)"):
        prepare_batch(images[:, 0])
    with pytest.raises(ValueError, match="at least 1 pixel"):
        prepare_batch(images, resize=0)
    with pytest.raises(TypeError, match="floating-point"):
        prepare_batch(images, dtype=torch.int32)
    with pytest.raises(TypeError, match="torch.Tensor"):
        prepare_batch(images.numpy())


# --------------------------------------------------------------------------- iterate_batches


def _all_labels(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[int]:
    return torch.cat([labels for _, labels in batches]).tolist()


@pytest.mark.parametrize("shuffle", [False, True])
def test_iterate_batches_covers_every_index_once(shuffle: bool) -> None:
    n = 23
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 28, 28)
    labels = torch.arange(n)
    batches = list(iterate_batches(images, labels, 5, shuffle=shuffle))
    assert [len(b) for _, b in batches] == [5, 5, 5, 5, 3]
    seen = _all_labels(batches)
    assert sorted(seen) == list(range(n))
    if not shuffle:
        assert seen == list(range(n))
    for batch_images, batch_labels in batches:  # images and labels stay paired
        assert batch_images.shape[1:] == (1, 28, 28)
        assert batch_images[:, 0, 0, 0].long().tolist() == batch_labels.tolist()


def test_iterate_batches_shuffle_is_reproducible_with_a_generator() -> None:
    labels = torch.arange(100)
    images = torch.zeros(100, 1, 28, 28, dtype=torch.uint8)

    def order(seed: int) -> list[int]:
        g = torch.Generator().manual_seed(seed)
        return _all_labels(list(iterate_batches(images, labels, 16, shuffle=True, generator=g)))

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert order(0) != list(range(100))
    g = torch.Generator().manual_seed(0)  # one generator: a fresh order each epoch
    epoch1 = _all_labels(list(iterate_batches(images, labels, 16, shuffle=True, generator=g)))
    epoch2 = _all_labels(list(iterate_batches(images, labels, 16, shuffle=True, generator=g)))
    assert epoch1 != epoch2 and sorted(epoch1) == sorted(epoch2)


def test_iterate_batches_drop_last() -> None:
    labels = torch.arange(23)
    images = torch.zeros(23, 1, 28, 28, dtype=torch.uint8)
    batches = list(iterate_batches(images, labels, 5, drop_last=True))
    assert [len(b) for _, b in batches] == [5, 5, 5, 5]
    shuffled = list(iterate_batches(images, labels, 5, shuffle=True, drop_last=True))
    assert len(set(_all_labels(shuffled))) == 20
    exact = list(iterate_batches(images[:20], labels[:20], 5, drop_last=True))
    assert len(exact) == 4
    assert list(iterate_batches(images[:3], labels[:3], 5, drop_last=True)) == []


def test_iterate_batches_rejects_bad_input() -> None:
    images = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    # errors come at the call, not at the first batch
    with pytest.raises(ValueError, match="4 images, 3 labels"):
        iterate_batches(images, torch.arange(3), 2)
    with pytest.raises(ValueError, match="at least 1"):
        iterate_batches(images, torch.arange(4), 0)
    with pytest.raises(TypeError, match="whole number"):
        iterate_batches(images, torch.arange(4), 2.0)
