"""Fashion-MNIST: find the files offline, load them once into uint8 tensors, make batches.

The lecture uses ``torchvision.datasets.FashionMNIST`` with a ``DataLoader`` and
``transforms.Resize(96)`` + ``ToTensor``: every image goes through PIL, one at a time,
on the CPU. Here the whole data set is four small files (30 MB gzipped), so it is
read once into tensors, and a batch is moved to the training device *as uint8*
(4x less to copy than float32), converted, normalised and, if asked, resized there
with ``F.interpolate``, all 256 images at once.

Where the files are looked for, in order (the first folder that has all four wins):

1. ``root``, if given;
2. the folder in the environment variable ``$RESNET_LESSONS_DATA``;
3. ``./data`` (relative to the working directory);
4. Debian's ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``);
5. torchvision's download (internet needed) into ``root``, or ``./data`` when no root is given.

In each folder the four original files (``train-images-idx3-ubyte.gz`` ...) may lie
directly or in torchvision's ``FashionMNIST/raw`` sub-folder, gzipped or not.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import check_int

#: The ten classes, in label order (label 0 is 'T-shirt/top').
CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: Mean and standard deviation of all 60000 x 28 x 28 training pixels scaled to [0, 1]
#: (computed from the files; ``tests/test_data.py`` recomputes them).
MEAN: float = 0.2860405969887955
STD: float = 0.3530242445659113

#: Where Debian's package ``dataset-fashion-mnist`` puts the four files.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Environment variable naming a folder with the files.
ENV_VAR = "RESNET_LESSONS_DATA"

#: The four files (without ``.gz``), what they hold, and how many items each has.
FILES: dict[str, tuple[str, int]] = {
    "train_images": ("train-images-idx3-ubyte", 60000),
    "train_labels": ("train-labels-idx1-ubyte", 60000),
    "test_images": ("t10k-images-idx3-ubyte", 10000),
    "test_labels": ("t10k-labels-idx1-ubyte", 10000),
}

#: IDX magic numbers: 0x08 = unsigned byte, then the number of dimensions.
_MAGIC_IMAGES = 0x00000803
_MAGIC_LABELS = 0x00000801
_SIDE = 28

_HOW_TO_GET = (
    "To get the data, do one of:\n"
    "  * sudo apt-get install dataset-fashion-mnist   (Debian/Ubuntu, no download later)\n"
    f"  * put the four .gz files in a folder and set {ENV_VAR}=/that/folder\n"
    "    (or pass root=... / --data-root ...)\n"
    "  * call with download=True on a machine with internet access (torchvision downloads\n"
    "    them into ./data)"
)


class DataNotFoundError(FileNotFoundError):
    """No folder with the four Fashion-MNIST files was found (and no download was possible)."""


class CorruptDataError(ValueError):
    """A Fashion-MNIST file exists but cannot be read: bad gzip, wrong header, truncated..."""


@dataclass(frozen=True, repr=False)
class FashionMNIST:
    """The whole data set in memory, on the CPU.

    ``train_images``: uint8 ``(60000, 1, 28, 28)``; ``train_labels``: int64 ``(60000,)``;
    ``test_images``: uint8 ``(10000, 1, 28, 28)``; ``test_labels``: int64 ``(10000,)``;
    ``classes``: the ten class names, ``classes[label]``; ``val_images``/``val_labels``: a
    validation split taken out of the training images (:meth:`split_validation`), else
    ``None``.

    The tensors are shared with the loader's cache: do not modify them in place.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...] = CLASSES
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.val_images is None) != (self.val_labels is None):
            raise TypeError("val_images and val_labels go together: give both or neither.")
        splits = ("train", "test") if self.val_images is None else ("train", "test", "val")
        for split in splits:
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if images.dtype != torch.uint8 or images.ndim != 4:
                raise TypeError(
                    f"{split}_images must be uint8 (N, C, H, W), got {images.dtype} with "
                    f"shape {tuple(images.shape)}."
                )
            if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
                raise TypeError(
                    f"{split}_labels must be int64 ({images.shape[0]},) to match "
                    f"{split}_images, got {labels.dtype} with shape {tuple(labels.shape)}."
                )

    def subset(self, train: int | None = None, test: int | None = None) -> FashionMNIST:
        """The first ``train`` training and first ``test`` test images (``None``: all), for quick
        runs. Slices share memory with ``self``."""
        n_train = _check_count("train", train, len(self.train_labels))
        n_test = _check_count("test", test, len(self.test_labels))
        return FashionMNIST(
            self.train_images[:n_train],
            self.train_labels[:n_train],
            self.test_images[:n_test],
            self.test_labels[:n_test],
            self.classes,
            self.val_images,
            self.val_labels,
        )

    def split_validation(self, n: int, seed: int = 0) -> FashionMNIST:
        """Hold ``n`` randomly chosen training images out as a validation set.

        The result trains on the other ``len(train) - n`` images and has them in
        ``val_images`` ``(n, 1, 28, 28)`` / ``val_labels`` ``(n,)``; the test set is
        unchanged. Decisions made while training (early stopping: ``fit(patience=...)``)
        look at the validation set, so the test set stays an honest final measurement.
        ``seed`` picks the images; the same seed picks the same ones.
        """
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"split_validation(n=...) must be a whole number, got {n!r}.")
        check_int("seed", seed, 0)
        if self.val_images is not None:
            raise ValueError(
                f"this data already has a validation split of {len(self.val_labels)} images; "
                "split the data without one (load it again, or split once with a larger n)."
            )
        available = len(self.train_labels)
        if not 1 <= n <= available - 1:
            raise ValueError(
                f"split_validation(n={n}) must leave training images: the training set has "
                f"{available}, so n must be between 1 and {available - 1} "
                f"(a fifth of it would be n={max(1, available // 5)})."
            )
        order = torch.randperm(available, generator=torch.Generator().manual_seed(seed))
        held, kept = order[:n].sort().values, order[n:].sort().values
        return FashionMNIST(
            self.train_images[kept],
            self.train_labels[kept],
            self.test_images,
            self.test_labels,
            self.classes,
            self.train_images[held],
            self.train_labels[held],
        )

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.train_images.shape[1:])
        val = "" if self.val_labels is None else f", val={len(self.val_labels)}"
        return (
            f"FashionMNIST(train={len(self.train_labels)}{val}, test={len(self.test_labels)}, "
            f"image={shape} uint8, classes={len(self.classes)})"
        )


def _check_count(name: str, value: int | None, available: int) -> int:
    if value is None:
        return available
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"subset({name}=...) must be a whole number or None, got {value!r}.")
    if not 1 <= value <= available:
        raise ValueError(f"subset({name}={value}) must be between 1 and {available} (all of them).")
    return value


# --------------------------------------------------------------------------- finding


def _file_in(folder: Path, name: str) -> Path | None:
    """``folder/name`` if it exists uncompressed, else ``folder/name.gz``, else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _complete_folder(place: Path) -> tuple[Path | None, str]:
    """(the folder holding all four files, or None; why not, for the error message)."""
    notes = []
    for folder in (place, place / "FashionMNIST" / "raw"):
        if not folder.is_dir():
            continue
        found = [name for name, _ in FILES.values() if _file_in(folder, name)]
        if len(found) == len(FILES):
            return folder, ""
        if found:
            missing = [name for name, _ in FILES.values() if name not in found]
            notes.append(f"{folder.name or folder}/ lacks {', '.join(missing)} (.gz)")
    if not place.exists():
        return None, "does not exist"
    return None, "; ".join(notes) if notes else "no Fashion-MNIST files there"


def _places(root: str | os.PathLike | None) -> list[tuple[str, Path]]:
    places = []
    if root is not None:
        places.append(("root argument", Path(root)))
    env = os.environ.get(ENV_VAR)
    if env:
        places.append((f"${ENV_VAR}", Path(env)))
    places.append(("./data", Path.cwd() / "data"))
    places.append(("Debian package dataset-fashion-mnist", DEBIAN_DIR))
    return places


def find_fashion_mnist(root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The folder that holds the four Fashion-MNIST files (see the module docstring for the order).

    With ``download=True`` and nothing found, torchvision downloads the files into ``root``
    (or ``./data``) and that folder's ``FashionMNIST/raw`` is returned.

    Raises :class:`DataNotFoundError` listing every place looked at and how to get the data.
    """
    looked = []
    for label, place in _places(root):
        folder, why = _complete_folder(place)
        if folder is not None:
            return folder
        looked.append(f"  - {place}  ({label}): {why}")

    if download:
        target = Path(root) if root is not None else Path.cwd() / "data"
        try:
            from torchvision.datasets import FashionMNIST as _TorchvisionFashionMNIST

            _TorchvisionFashionMNIST(str(target), train=True, download=True)
        except Exception as error:  # no internet, proxy, disk full: all end the same way
            looked.append(f"  - download into {target} failed: {type(error).__name__}: {error}")
        else:
            folder, why = _complete_folder(target)
            if folder is not None:
                return folder
            looked.append(f"  - download into {target} left: {why}")
    else:
        looked.append("  - no download attempted (download=False)")

    raise DataNotFoundError(
        "Fashion-MNIST not found. Looked in:\n" + "\n".join(looked) + "\n" + _HOW_TO_GET
    )


# --------------------------------------------------------------------------- reading


def _read_bytes(path: Path) -> bytearray:
    """The file's content, un-gzipped if it ends in ``.gz``, as a writable buffer."""
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return bytearray(raw)
    try:
        # wbits=31: a gzip header; zlib is faster than the gzip module for a one-shot read
        return bytearray(zlib.decompress(raw, wbits=31))
    except zlib.error as error:
        raise CorruptDataError(
            f"{path}: not a valid gzip file ({error}); it is truncated or damaged. "
            "Delete it and get the data again."
        ) from None
    except (OSError, EOFError, gzip.BadGzipFile) as error:  # pragma: no cover - zlib covers it
        raise CorruptDataError(f"{path}: not a valid gzip file ({error}).") from None


def _parse_idx(path: Path, *, images: bool, count: int) -> torch.Tensor:
    """Parse one IDX file: uint8 ``(count, 1, 28, 28)`` images or int64 ``(count,)`` labels."""
    data = _read_bytes(path)
    ndim = 3 if images else 1
    header_size = 4 + 4 * ndim
    fix = "Delete it and get the data again."
    if len(data) < header_size:
        raise CorruptDataError(
            f"{path}: only {len(data)} bytes, shorter than the {header_size}-byte IDX header "
            f"(truncated). {fix}"
        )
    magic, *dims = (int(v) for v in np.frombuffer(data, dtype=">u4", count=1 + ndim))
    expected_magic = _MAGIC_IMAGES if images else _MAGIC_LABELS
    if magic != expected_magic:
        raise CorruptDataError(
            f"{path}: wrong magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(IDX {'images' if images else 'labels'}); it is not this file or it is damaged. "
            f"{fix}"
        )
    expected_dims = [count, _SIDE, _SIDE] if images else [count]
    if dims != expected_dims:
        raise CorruptDataError(
            f"{path}: the header says {' x '.join(map(str, dims))}, expected "
            f"{' x '.join(map(str, expected_dims))}. {fix}"
        )
    payload = int(np.prod(expected_dims))
    if len(data) - header_size != payload:
        what = "truncated" if len(data) - header_size < payload else "has extra bytes"
        raise CorruptDataError(
            f"{path}: {what}: {len(data) - header_size} bytes after the header, expected "
            f"{payload}. {fix}"
        )
    values = torch.frombuffer(data, dtype=torch.uint8, offset=header_size)
    if images:
        return values.view(count, 1, _SIDE, _SIDE)
    labels = values.to(torch.int64)
    if labels.numel() and int(labels.max()) >= len(CLASSES):
        bad = int(labels.max())
        index = int((labels >= len(CLASSES)).nonzero()[0])
        raise CorruptDataError(
            f"{path}: label {bad} at position {index} is outside 0..{len(CLASSES) - 1}. {fix}"
        )
    return labels


_CACHE: dict[tuple, FashionMNIST] = {}


def _file_key(folder: Path) -> tuple:
    """Cache key: the folder and, per file, its path, size and modification time."""
    key: list = [folder]
    for name, _ in FILES.values():
        path = _file_in(folder, name)
        stat = path.stat()
        key.append((path.name, stat.st_size, stat.st_mtime_ns))
    return tuple(key)


def load_fashion_mnist(
    root: str | os.PathLike | None = None, download: bool = True
) -> FashionMNIST:
    """Find (see :func:`find_fashion_mnist`), read and check the four files; cached per folder.

    Returns a :class:`FashionMNIST` with uint8 ``(60000, 1, 28, 28)`` / ``(10000, 1, 28, 28)``
    images and int64 labels in ``0..9``. A second call for the same unchanged files returns the
    same object without reading anything (about 0.25 s the first time on a laptop, gzip included).

    Raises :class:`DataNotFoundError` or :class:`CorruptDataError` (naming the file).
    """
    folder = find_fashion_mnist(root, download=download).resolve()
    key = _file_key(folder)
    if key in _CACHE:
        return _CACHE[key]
    parts = {}
    for field, (name, count) in FILES.items():
        path = _file_in(folder, name)
        parts[field] = _parse_idx(path, images=field.endswith("images"), count=count)
    data = FashionMNIST(**parts, classes=CLASSES)
    _CACHE.clear()  # one data set in memory at a time is enough
    _CACHE[key] = data
    return data


# --------------------------------------------------------------------------- batches


def prepare_batch(
    images: torch.Tensor,
    device: torch.device | str | None = None,
    *,
    resize: int | None = None,
    channels_last: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 ``(N, 1, 28, 28)`` -> normalised ``dtype`` ``(N, 1, S, S)`` on ``device``.

    The uint8 batch is moved first (4x less to copy than float32), then on the device:
    ``(x / 255 - MEAN) / STD``, then, if ``resize`` is given, ``F.interpolate`` to
    ``S = resize`` (bilinear, ``antialias=False``: what torchvision's ``Resize`` does when
    it enlarges a tensor image). ``channels_last=True`` returns NHWC memory layout (same shape;
    with one channel NCHW and NHWC are the same bytes, so it is the model's
    ``model.to(memory_format=torch.channels_last)`` that makes the convolutions use NHWC).
    ``device=None`` keeps the batch where it is.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}.")
    if images.dtype != torch.uint8:
        raise TypeError(
            f"images must be uint8 (raw pixels 0..255), got {images.dtype}; "
            "pass the tensors from load_fashion_mnist() unchanged."
        )
    if images.ndim != 4:
        raise ValueError(
            f"images must be (N, C, H, W), got shape {tuple(images.shape)}; "
            "add the channel axis with images.unsqueeze(1)."
        )
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point type, got {dtype}.")
    if resize is not None and (isinstance(resize, bool) or not isinstance(resize, int)):
        raise TypeError(f"resize must be a whole number or None, got {resize!r}.")
    if resize is not None and resize < 1:
        raise ValueError(f"resize must be at least 1 pixel, got {resize}.")

    if device is not None:
        device = torch.device(device)
        # non_blocking overlaps the copy with compute on CUDA; elsewhere it buys nothing
        images = images.to(device, non_blocking=device.type == "cuda")
    x = images
    # Arithmetic in float32 (bf16 loses the small differences), then cast once at the end.
    x = x.to(torch.float32).div_(255.0).sub_(MEAN).div_(STD)  # (N, C, H, W)
    if resize is not None and tuple(x.shape[-2:]) != (resize, resize):
        x = F.interpolate(
            x, size=(resize, resize), mode="bilinear", align_corners=False, antialias=False
        )  # (N, C, S, S)
    x = x.to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def iterate_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images[i], labels[i])`` batches of ``batch_size`` (the last one smaller unless
    ``drop_last``), in order or, with ``shuffle``, in a random order drawn from ``generator``.

    Shapes: ``(N, ...)``, ``(N,)`` -> ``(B, ...)``, ``(B,)``. No ``DataLoader``, no PIL: the
    tensors are already in memory, so a batch is one indexing operation.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be a whole number, got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    n = images.shape[0]
    if labels.shape[0] != n:
        raise ValueError(
            f"images and labels differ in length: {n} images, {labels.shape[0]} labels."
        )
    # A plain function returning a generator: bad arguments fail here, not at the first next().
    return _batches(images, labels, batch_size, shuffle, generator, drop_last)


def _batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None,
    drop_last: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    n = images.shape[0]
    order = torch.randperm(n, generator=generator) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        end = min(start + batch_size, n)
        if order is None:
            yield images[start:end], labels[start:end]
        else:
            index = order[start:end]
            yield images[index], labels[index]


def shuffled_batches(
    n: int, batch_size: int, steps: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """``steps`` batches of ``batch_size`` indices into ``n`` items, each ``(batch_size,)``:
    a shuffled pass, then a new shuffle when fewer than ``batch_size`` items are left."""
    order = torch.randperm(n, generator=generator)
    position = 0
    for _ in range(steps):
        if position + batch_size > len(order):  # next epoch: a new shuffle
            order = torch.randperm(n, generator=generator)
            position = 0
        yield order[position : position + batch_size]
        position += batch_size
