"""The network as tiled inference runs it: prepared once per weights.

:func:`inference_predictor` turns a model into the batch predictor of
:func:`seg.infer.tiling.predict_batch`: an eval-mode copy with every batch norm folded into the
convolution before it (:func:`fold_batch_norm`), in the precision's device, layout (channels_last)
and autocast, called under ``torch.inference_mode`` by the tiler. The copy is cached per model and
rebuilt when any of its weights changed (training validates the same model object after every
few hundred steps), so ``seg predict``, ``seg segment`` and validation prepare it once per
weights, not once per slice.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from typing import Callable

import torch
from torch import nn

from seg.device import Precision

Predictor = Callable[[torch.Tensor], torch.Tensor]

_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every convolution -> batch norm pair folded into one
    convolution (``torch.fx``'s ``fuse``: w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma /
    sqrt(var + eps) + beta). Submodules ``torch.fx`` cannot trace (data-dependent Python control flow)
    are folded child by child. Same function as the eval-mode model up to float rounding; ``model``
    itself is not changed. A model without batch norm is returned as an eval-mode copy."""
    return _fold(copy.deepcopy(model).eval())


def _fold(module: nn.Module) -> nn.Module:
    from torch.fx.experimental.optimization import fuse

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        return module
    try:
        return fuse(module, inplace=True)
    except Exception:  # noqa: BLE001 - fx cannot trace it (control flow on values): fold its children
        for name, child in list(module.named_children()):
            setattr(module, name, _fold(child))
        return module


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
    copied), the model runs unfolded, with a warning.
    """
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
    predict = _predictor(net, precision)
    cached[precision] = (key, predict)
    return predict


def _predictor(net: nn.Module, precision: Precision) -> Predictor:
    def predict(batch: torch.Tensor) -> torch.Tensor:
        batch = precision.to_input(batch)
        with precision.autocast():
            out = net(batch)
        return out.float()

    return predict
