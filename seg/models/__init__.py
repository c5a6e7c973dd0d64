"""seg.models: segmentation models by name, their size contract, and encoder pretraining.

- :func:`build_model` (registry in :mod:`seg.models.registry`): ``unet`` (:mod:`.unet`),
  ``fcn32s|fcn16s|fcn8s`` (:mod:`.fcn`), ``<decoder>-<encoder>`` smp models (:mod:`.smp_models`).
- :func:`output_size`, :func:`input_size_for`, :func:`size_divisor`, ``model.valid_border``.
- :func:`load_model_weights` (a trained checkpoint into a model) and :func:`load_pretrained_encoder`
  (a weights file into ``model.encoder``) (:mod:`.loading`).
- :func:`build_classifier`, :func:`load_encoder_weights` (:mod:`.classification`);
  ``seg pretrain`` (:mod:`.pretrain`).

The catalogue of classic architectures (``seg zoo``) lives in :mod:`seg.models.zoo`.

Names are imported lazily (PEP 562), so ``import seg.commands.models`` (``seg --help``) stays torch-free.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "build_classifier": "classification",
    "classifier_to_encoder_state": "classification",
    "encoder_for": "classification",
    "load_encoder_weights": "classification",
    "load_model_weights": "loading",
    "load_pretrained_encoder": "loading",
    "REGISTRY": "registry",
    "ModelEntry": "registry",
    "build_model": "registry",
    "count_parameters": "registry",
    "input_size_for": "registry",
    "model_names": "registry",
    "output_size": "registry",
    "size_divisor": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"seg.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'seg.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
