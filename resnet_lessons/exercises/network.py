"""Exercise 4 (notebook 04): the whole ResNet-18."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..network import resnet18
from .feedback import Feedback, describe_error, failure, not_done, success

#: The lecture's ResNet-18 (1 input channel, 10 classes).
RESNET18_PARAMS = 11_178_378


# --- 4. the whole network ---------------------------------------------------------------


def _stage_shapes(model: nn.Module, size: int) -> tuple[list[tuple[str, tuple[int, ...]]], object]:
    """(name, output shape) of each top-level child on a (1, 1, size, size) batch, and the
    output (or the exception)."""
    found: list[tuple[str, tuple[int, ...]]] = []
    children = list(model.named_children())
    handles = [
        child.register_forward_hook(
            lambda m, a, out, name=name: (
                found.append((name, tuple(out.shape))) if isinstance(out, torch.Tensor) else None
            )
        )
        for name, child in children
    ]
    training = model.training
    try:
        with torch.no_grad():
            out: object = model.eval()(torch.randn(1, 1, size, size))
    except Exception as err:  # noqa: BLE001 - reported by the caller
        out = err
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    return found, out


def check_resnet18(model: nn.Module | Callable[[], nn.Module] | None) -> Feedback:
    """Check a whole ResNet-18 (1 input channel, 10 classes) against the lecture's.

    ``model`` is the network (or a function or class that builds it). On inputs
    ``(1, 1, 224, 224)`` and ``(1, 1, 96, 96)`` it compares the output shape of each part
    with the reference (stem, stage1 ... stage4, pooling, fc) and names the first stage
    whose shape is wrong and what it should be; then the parameter count, 11,178,378.
    """
    name = "ResNet-18"
    if model is None or model is Ellipsis:
        return not_done(name, "your network")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if not isinstance(model, nn.Module):
            if not callable(model):
                return failure(name, "wrong_type", f"Pass your network; got {model!r}.")
            try:
                model = model()
            except NotImplementedError:
                return not_done(name, "your network")
            except Exception as err:  # noqa: BLE001 - the student's code
                return failure(
                    name, "crashed", f"Building the network raised {describe_error(err)}"
                )
            if not isinstance(model, nn.Module):
                return failure(
                    name, "wrong_type", f"Building the network gave a {type(model).__name__}."
                )
        reference = resnet18()
        for size in (224, 96):
            result = _compare_network(model, reference, size)
            if result is not None:
                return result
    count = sum(p.numel() for p in model.parameters())
    if count != RESNET18_PARAMS:
        return failure(
            name,
            "param_count",
            f"Every shape is right, but the network has {count:,} parameters, "
            f"{count - RESNET18_PARAMS:+,} against the lecture's {RESNET18_PARAMS:,}. Common "
            "causes: convolutions with bias=False, batch norm on the 1x1 shortcut, or a 1x1 "
            "conv where the identity would do.",
        )
    return success(
        name,
        f"Right: every stage's shape at 224x224 and 96x96 and {RESNET18_PARAMS:,} parameters, "
        "as in the lecture.",
    )


def _compare_network(model: nn.Module, reference: nn.Module, size: int) -> Feedback | None:
    name = "ResNet-18"
    want, _ = _stage_shapes(reference, size)
    got, out = _stage_shapes(model, size)
    x_shape = (1, 1, size, size)
    if isinstance(out, NotImplementedError):
        return not_done(name, "your network")
    if isinstance(out, BaseException) and (not got or len(list(model.children())) != len(want)):
        after = f" after your '{got[-1][0]}' gave {got[-1][1]}" if got else ""
        return failure(
            name, "crashed", f"On {x_shape} your network raised {describe_error(out)}{after}"
        )
    if len(list(model.children())) == len(want):
        for (ref_name, ref_shape), (my_name, my_shape) in zip(want, got, strict=True):
            if my_shape != ref_shape and (ref_name, ref_shape) == want[-1]:
                break  # only the output is wrong: said below
            if my_shape != ref_shape:
                return failure(
                    name,
                    "stage_shape",
                    f"On {x_shape} the first wrong part is {ref_name} (your '{my_name}'): it "
                    f"gives {my_shape}; it should give {ref_shape}."
                    + _why_stage(ref_name, want, ref_shape, my_shape),
                )
    elif not isinstance(out, BaseException):
        position = 0
        for ref_name, ref_shape in want:
            where = [i for i, (_, s) in enumerate(got) if s == ref_shape and i >= position]
            if not where:
                after = got[position - 1] if position else None
                return failure(
                    name,
                    "stage_shape",
                    f"On {x_shape} no part of your network gives {ref_name}'s {ref_shape}"
                    + (f" (after your '{after[0]}', {after[1]}" if after else " (")
                    + (f", comes {got[position][1]})." if position < len(got) else ").")
                    + _why_stage(
                        ref_name, want, ref_shape, got[position][1] if position < len(got) else None
                    ),
                )
            position = where[0] + 1
    if isinstance(out, BaseException):
        return failure(name, "crashed", f"On {x_shape} your network raised {describe_error(out)}")
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, 10):
        shown = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return failure(
            name,
            "output_shape",
            f"On {x_shape} your network returns {shown}; it should return (1, 10), one score "
            "per class.",
        )
    return None


def _why_stage(
    ref_name: str,
    want: list[tuple[str, tuple[int, ...]]],
    ref_shape: tuple[int, ...],
    my_shape: tuple[int, ...] | None,
) -> str:
    if my_shape is None or len(my_shape) != 4 or len(ref_shape) != 4:
        return ""
    if my_shape[1] != ref_shape[1]:
        return f" Its channels should be {ref_shape[1]}."
    if my_shape[2] < ref_shape[2]:
        if ref_name == "stage1":
            return " stage1 keeps the stem's size (first_block=True: no stride there)."
        return " It halves the size once too often: only its first block has stride 2."
    if my_shape[2] > ref_shape[2]:
        if ref_name == "stem":
            return " The stem divides by 4: 7x7 conv with stride 2, then 3x3 max pool stride 2."
        return " Its first block should halve the size (stride 2 with the 1x1 conv)."
    return ""
