"""The network as tiled inference runs it: prepared once per weights, on memory kept for reuse.

:func:`inference_predictor` turns a model into the batch predictor of
:func:`seg.infer.tiling.predict_batch`: an eval-mode copy with every batch norm folded into the
convolution before it (:func:`fold_batch_norm`), in the precision's device, layout (channels_last)
and autocast, called under ``torch.inference_mode`` by the tiler. The copy is cached per model and
rebuilt when any of its weights changed (training validates the same model object after every
few hundred steps), so ``seg predict``, ``seg segment`` and validation prepare it once per
weights, not once per slice.

:func:`keep_freed_memory` stops glibc from handing every large freed block back to the kernel: by
default a feature map above its (adaptive) mmap threshold is mapped and unmapped per allocation and
page-faulted in again on the next forward pass, which cost 17-20 % of a U-Net tile's time on the
2-core AMD EPYC (38 -> 31 ms per 256 px tile of the base-16 same-padding U-Net, fp32).
"""

from __future__ import annotations

import copy
import functools
import warnings
import weakref
from typing import Callable

import torch
from torch import nn

from seg.device import Precision

Predictor = Callable[[torch.Tensor], torch.Tensor]

_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Once per process, ask glibc's malloc to serve blocks up to 1 GiB from its heap and not to
    trim the heap below 2 GiB of free memory (``mallopt``), so the activations of one forward pass
    reuse the pages of the previous one instead of faulting in fresh ones. The process keeps its
    peak memory until it exits. Returns whether it applied (False without glibc, e.g. macOS)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 31))


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every convolution -> batch norm pair folded into the
    convolution (w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta;
    the batch norm becomes an identity). Same function as the eval-mode model up to float rounding;
    ``model`` itself is not changed, and the copy keeps its classes and attributes.

    The pairs are found with ``torch.fx``: a batch norm whose only input is a convolution called
    once whose output nothing else uses. Submodules fx cannot trace (Python control flow on values)
    are searched child by child; a batch norm after anything else (DenseNet's pre-activation
    blocks) stays.
    """
    copied = copy.deepcopy(model).eval()
    _fold(copied)
    return copied


def _fold(module: nn.Module) -> None:
    """Fold the conv -> batch norm pairs of ``module`` in place (see :func:`fold_batch_norm`)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        return
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception:  # noqa: BLE001 - fx cannot trace it (control flow on values): fold its children
        for child in module.children():
            _fold(child)
        return
    mods = dict(module.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in graph.nodes:
        bn = mods.get(node.target) if node.op == "call_module" else None
        if not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats or calls[node.target] != 1:
            continue
        prev = node.args[0]
        conv = mods.get(prev.target) if getattr(prev, "op", None) == "call_module" else None
        if not isinstance(conv, nn.Conv2d) or calls[prev.target] != 1 or len(prev.users) != 1:
            continue
        fused = fuse_conv_bn_eval(conv, bn)
        conv.weight, conv.bias = fused.weight, fused.bias
        parent, _, name = node.target.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, name, nn.Identity())


def _weights_key(model: nn.Module) -> tuple:
    """Identity and version counter of every parameter and buffer: any in-place update (an
    optimiser step, ``load_state_dict``) or replacement changes it."""
    return tuple((t.data_ptr(), t._version, tuple(t.shape))
                 for t in (*model.parameters(), *model.buffers()))


def inference_predictor(model: nn.Module, precision: Precision) -> Predictor:
    """(N, C, h, w) float32 batch -> float32 logits (N, classes, h', w') of ``model`` as inference
    runs it (see module doc); the caller puts ``model`` in eval mode.

    ``model`` is moved to ``precision``'s device and layout in place
    (:meth:`seg.device.Precision.prepare_model`), as training and export expect; the folded copy
    is cached per (model, precision, weights). Should folding fail (a module that cannot be
    copied), the model runs unfolded, with a warning. On the CPU it also calls
    :func:`keep_freed_memory`.
    """
    if precision.device.type == "cpu":
        keep_freed_memory()
    precision.prepare_model(model)
    key = _weights_key(model)
    cached = _PREPARED.setdefault(model, {})
    hit = cached.get(precision)
    if hit is not None and hit[0] == key:
        return hit[1]
    try:
        net = precision.prepare_model(fold_batch_norm(model))
    except Exception as e:  # noqa: BLE001 - an unusual module (cannot be copied or traced): run it as it is
        warnings.warn(f"inference: batch norm folding failed ({type(e).__name__}: {str(e)[:200]}); running "
                      "the model unfolded", RuntimeWarning, stacklevel=2)
        return precision.predictor(model)  # not cached: the cache must not hold its own key
    predict = precision.predictor(net)
    cached[precision] = (key, predict)
    return predict

