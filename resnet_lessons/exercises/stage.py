"""Exercise 3 (notebook 03): the stage builder ``resnet_block`` and its ``first_block`` rule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .feedback import Feedback, describe_error, failure, not_done, success

# --- 3. the stage builder ---------------------------------------------------------------

_STAGE_CASES = (  # (in_channels, out_channels, num_residuals, first_block, size)
    (4, 8, 2, False, 8),
    (4, 4, 2, True, 8),
    (4, 8, 3, False, 7),
    (8, 16, 1, False, 8),
)


def check_resnet_block(fn: Callable[..., nn.Module] | None) -> Feedback:
    """Check a stage builder ``fn(in_channels, out_channels, num_residuals,
    first_block=False)`` that returns the stage (e.g. an ``nn.Sequential`` of blocks).

    Each stage runs on a small batch ``(2, C_in, H, H)``: it must give
    ``(2, out_channels, H', H')`` with ``H' = H`` when ``first_block`` else ``ceil(H / 2)``,
    and hold ``num_residuals`` blocks. When the stage is an ``nn.Sequential`` each block's
    output is checked too: the first block already gives that shape and the others keep
    it. Hints: downsampling in every block instead of the first, downsampling in a later
    block than the first (at the end of the stage), downsampling in the first stage too
    (the ``first_block`` rule), no downsampling at all, channels not changed by the first
    block, the 1x1 conv missing, the wrong number of blocks. The praise says only what
    was checked.
    """
    name = "resnet_block"
    if fn is None or fn is Ellipsis:
        return not_done(name, "your stage builder")
    if not callable(fn):
        return failure(name, "wrong_type", f"Pass your function itself; got {fn!r}.")
    by_block = True  # whether every stage's blocks could be checked one by one
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for c_in, c_out, n, first_block, size in _STAGE_CASES:
            result = _check_stage(fn, c_in, c_out, n, first_block, size)
            if isinstance(result, Feedback):
                return result
            by_block = by_block and result
    cases = f"Right on {len(_STAGE_CASES)} stages"
    if not by_block:
        return success(
            name,
            f"{cases}: each gives the right output shape. Their blocks were not checked one "
            "by one (a stage is not an nn.Sequential of blocks here), so neither their "
            "number nor which block downsamples was.",
        )
    return success(
        name,
        f"{cases}, checked block by block: each holds num_residuals blocks, the first block "
        "gives the stage's output shape (out_channels, half the size unless first_block) "
        "and the blocks after it keep that shape.",
    )


def _check_stage(
    fn: Callable[..., nn.Module], c_in: int, c_out: int, n: int, first_block: bool, size: int
) -> Feedback | bool:
    """The mistake found in one stage, or whether its blocks were checked one by one."""
    name = "resnet_block"
    call = f"resnet_block({c_in}, {c_out}, {n}, first_block={first_block})"
    try:
        stage = fn(c_in, c_out, n, first_block)
    except NotImplementedError:
        return not_done(name, "your stage builder")
    except Exception as err:  # noqa: BLE001 - the student's code
        text = describe_error(err)
        if "use_1x1conv" in text:
            return failure(
                name,
                "no_1x1conv",
                f"{call} raised {text} The first block of a stage changes the channels (and "
                "the size), so it needs use_1x1conv=True.",
            )
        return failure(name, "crashed", f"{call} raised {text}")
    if not isinstance(stage, nn.Module):
        return failure(
            name,
            "wrong_type",
            f"{call} returned {type(stage).__name__}; return the blocks as one module, "
            "nn.Sequential(*blocks)" + (" (did you forget return?)." if stage is None else "."),
        )
    blocks = list(stage.children()) if isinstance(stage, nn.Sequential) else []
    if blocks and len(blocks) != n:
        return failure(
            name,
            "block_count",
            f"{call} holds {len(blocks)} blocks; a stage with num_residuals={n} holds {n}.",
        )
    shapes: list[tuple[int, ...]] = []
    handles = [
        b.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape))) for b in blocks
    ]
    x = torch.randn(2, c_in, size, size)
    try:
        with torch.no_grad():
            out = stage.eval()(x)
    except NotImplementedError:
        return not_done(name, "your stage builder")
    except Exception as err:  # noqa: BLE001 - the student's code
        return failure(name, "crashed", f"{call} on {tuple(x.shape)} raised {describe_error(err)}")
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, torch.Tensor):
        return failure(name, "wrong_return", f"{call} returned {type(out).__name__} on a batch.")
    mistake = _stage_shape_mistake(call, c_in, c_out, first_block, size, blocks, shapes, out)
    return mistake if mistake is not None else bool(blocks) and len(shapes) == len(blocks)


def _stage_shape_mistake(
    call: str,
    c_in: int,
    c_out: int,
    first_block: bool,
    size: int,
    blocks: list[nn.Module],
    shapes: list[tuple[int, ...]],
    out: torch.Tensor,
) -> Feedback | None:
    """What the stage's output shape, and the shapes its blocks gave, say went wrong."""
    name = "resnet_block"
    h = size if first_block else math.ceil(size / 2)
    want = (2, c_out, h, h)
    sizes = [size] + [s[2] for s in shapes if len(s) == 4]
    halvings = sum(1 for a, b in zip(sizes, sizes[1:], strict=False) if b < a)
    if first_block and tuple(out.shape[2:]) != (size, size):
        return failure(
            name,
            "first_block_ignored",
            f"{call} gives {tuple(out.shape)}, but with first_block=True the stage keeps the "
            f"{size}x{size} size: the first stage follows the stem's max pool, which has just "
            "halved it, so no block of it downsamples (stride 1, no 1x1 conv unless the "
            "channels change).",
        )
    if not first_block and (halvings > 1 or (not blocks and tuple(out.shape[2:]) < (h, h))):
        return failure(
            name,
            "downsample_every",
            f"{call} gives {tuple(out.shape)}: every block downsamples. Only the first block "
            f"of a stage has stride 2 (and the 1x1 conv); the rest use stride 1.",
        )
    if not first_block and tuple(out.shape[2:]) == (size, size) and size > 1:
        return failure(
            name,
            "no_downsample",
            f"{call} gives {tuple(out.shape)}: nothing halves the size. The first block of a "
            "stage (unless first_block=True) uses stride=2 and use_1x1conv=True.",
        )
    late = _late_downsample(call, first_block, size, h, shapes)
    if late is not None:
        return late
    if shapes and c_in != c_out and shapes[0][1] == c_in:
        return failure(
            name,
            "channels_unchanged",
            f"In {call} the first block keeps {c_in} channels: it is the one that changes "
            f"them, Residual({c_in}, {c_out}, use_1x1conv=True, stride=2); the rest take "
            f"{c_out} in and out.",
        )
    if tuple(out.shape) != want:
        return failure(
            name,
            "wrong_shape",
            f"{call} on {(2, c_in, size, size)} gives {tuple(out.shape)}; it should give {want}.",
        )
    for i, shape in enumerate(shapes):
        if shape != want:
            return failure(
                name,
                "wrong_shape",
                f"In {call} block {i + 1} of {len(shapes)} gives {shape}; every block of the "
                f"stage should give {want}: the first sets the shape, the others keep it.",
            )
    return None


def _late_downsample(
    call: str, first_block: bool, size: int, h: int, shapes: list[tuple[int, ...]]
) -> Feedback | None:
    """The size halved by a later block than the first: downsampling at the end of the stage."""
    if first_block or h == size or len(shapes) < 2 or any(len(s) != 4 for s in shapes):
        return None
    first = shapes[0]
    if first[2] != size:  # the first block changed the size itself
        return None
    halving = next((i for i, s in enumerate(shapes) if s[2] < size), None)
    if halving is None:
        return None
    where = f"block {halving + 1} of {len(shapes)}"
    where += " (the last)" if halving == len(shapes) - 1 else ""
    return failure(
        "resnet_block",
        "downsample_at_end",
        f"In {call} the first block gives {first}: it keeps the full {size}x{size} size, and "
        f"{where} halves it to {shapes[halving][2]}x{shapes[halving][3]}: the stage "
        "downsamples at its end. ResNet halves at the start, so that every block after the "
        "first runs on the smaller map, for fewer FLOPs. Fix: give the first block stride=2 "
        "and use_1x1conv=True, and the others stride 1.",
    )
