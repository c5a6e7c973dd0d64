"""Measure a network: parameter count, multiply-adds, output shape of each stage.

All measurements run on PyTorch's ``meta`` device by default: modules built inside
``torch.device("meta")`` have shaped but storage-less tensors, so a forward pass only propagates shapes
and costs no arithmetic (a ResNet-152 "forward" takes milliseconds). ``torch.utils.flop_counter``
works on meta tensors, and the counts are identical to a real CPU pass (tests check this).

Multiply-adds: ``FlopCounterMode`` counts 2 FLOPs per multiply-accumulate of convolutions and matrix
products (conv, mm, addmm, bmm, ...); bias additions, batch norm, activations and pooling are not
counted. We report **mult-adds = FLOPs / 2**, the unit of the papers (VGG-16 15.5 G, ResNet-50
4.1 G in torchvision's convention) and of torchvision's "GFLOPS" column.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from seg.errors import SegError


def count_params(model: nn.Module, *, exclude_prefixes: Iterable[str] = ()) -> int:
    """Number of trainable parameter elements, skipping parameters whose name starts with a prefix.

    Buffers (batch-norm statistics, LeNet's fixed RBF code) are not parameters and are not counted.
    """
    ex = tuple(exclude_prefixes)
    return sum(
        p.numel()
        for n, p in model.named_parameters()
        if p.requires_grad and not (ex and n.startswith(ex))
    )


def _device_of(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def count_mult_adds(model: nn.Module, input_chw: tuple[int, int, int], *, batch: int = 1) -> int:
    """Multiply-adds of one forward pass in eval mode for one (C, H, W) input (FLOPs / 2, per image).

    The input is created on the model's device (meta for a meta-built model). Raises SegError if the
    forward fails for this size.
    """
    return profile(model, (), input_chw, batch=batch)[0]


def stage_shapes(
    model: nn.Module,
    stages: Iterable[str],
    input_chw: tuple[int, int, int],
    *,
    train: bool = False,
    batch: int = 2,
) -> list[tuple[str, tuple[int, ...]]]:
    """Output shape (without the batch axis) of each named submodule, in the given order.

    Forward hooks are registered on ``model.get_submodule(name)`` for each stage name; ``train=True``
    runs the pass in training mode (needed for torchvision GoogLeNet's auxiliary heads, which only
    run while training). A stage that did not run is reported with shape ``()``.
    """
    return profile(model, stages, input_chw, train=train, batch=batch)[1]


def profile(
    model: nn.Module,
    stages: Iterable[str],
    input_chw: tuple[int, int, int],
    *,
    train: bool = False,
    batch: int = 1,
) -> tuple[int, list[tuple[str, tuple[int, ...]]]]:
    """One forward pass of a zero (batch, C, H, W) input: (mult-adds per image, stage shapes).

    Mult-adds are FLOPs / 2 / batch from ``FlopCounterMode``; shapes as in :func:`stage_shapes`.
    The model's train/eval mode is restored afterwards. Raises SegError if the forward fails.
    """
    from torch.utils.flop_counter import FlopCounterMode

    stages = list(stages)
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name in stages:
        try:
            mod = model.get_submodule(name)
        except AttributeError:
            raise SegError(f"stage {name!r}: no such submodule in {type(model).__name__}") from None

        def hook(_m, _inp, out, name=name):
            t = out[0] if isinstance(out, (tuple, list)) else out
            shapes[name] = tuple(t.shape[1:])

        handles.append(mod.register_forward_hook(hook))
    was_training = model.training
    model.train(train)
    counter = FlopCounterMode(display=False)
    x = torch.zeros((batch, *input_chw), device=_device_of(model))
    try:
        with torch.no_grad(), counter:
            model(x)
    except RuntimeError as e:
        raise SegError(f"input {tuple(input_chw)}: forward pass failed ({e})") from None
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return counter.get_total_flops() // (2 * batch), [(n, shapes.get(n, ())) for n in stages]


def replace_first_conv(module: nn.Module, in_channels: int) -> nn.Module:
    """Swap the first ``nn.Conv2d`` of ``module`` for a fresh one reading ``in_channels`` channels.

    Kernel, stride, padding, dilation, groups and bias are kept; the new weights are freshly
    initialised (PyTorch default). Returns ``module`` (changed in place). No-op if the count matches.
    """
    for name, conv in module.named_modules():
        if isinstance(conv, nn.Conv2d):
            break
    else:
        raise SegError(f"{type(module).__name__}: no Conv2d to adapt to in_channels={in_channels}")
    if conv.in_channels == in_channels:
        return module
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
    )
    parent_name, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent_name) if parent_name else module, child, new)
    return module
