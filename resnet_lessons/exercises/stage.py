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
    and hold ``num_residuals`` blocks. Hints: downsampling in every block instead of the
    first, downsampling in the first stage too (the ``first_block`` rule), no downsampling
    at all, channels not changed by the first block, the 1x1 conv missing, the wrong
    number of blocks.
    """
    name = "resnet_block"
    if fn is None or fn is Ellipsis:
        return not_done(name, "your stage builder")
    if not callable(fn):
        return failure(name, "wrong_type", f"Pass your function itself; got {fn!r}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for c_in, c_out, n, first_block, size in _STAGE_CASES:
            result = _check_stage(fn, c_in, c_out, n, first_block, size)
            if result is not None:
                return result
    return success(
        name,
        f"Right on {len(_STAGE_CASES)} stages: the first block changes the channels and "
        "halves the size (unless first_block), the others keep the shape.",
    )


def _check_stage(
    fn: Callable[..., nn.Module], c_in: int, c_out: int, n: int, first_block: bool, size: int
) -> Feedback | None:
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
    return _stage_shape_mistake(call, c_in, c_out, first_block, size, blocks, shapes, out)


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
    return None
