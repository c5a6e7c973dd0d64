"""seg.models: segmentation models by name, their size contract, and encoder pretraining.

- :func:`build_model` (registry in :mod:`seg.models.registry`): ``unet`` (:mod:`.unet`),
  ``fcn32s|fcn16s|fcn8s`` (:mod:`.fcn`), ``<decoder>-<encoder>`` smp models (:mod:`.smp_models`).
- :func:`output_size`, :func:`input_size_for`, :func:`size_divisor`, ``model.valid_border``.
- :func:`build_classifier`, :func:`load_encoder_weights`, :func:`load_pretrained`
  (:mod:`.classification`); ``seg pretrain`` (:mod:`.pretrain`).

The catalogue of classic architectures (``seg zoo``) lives in :mod:`seg.models.zoo`.
"""

from seg.models.classification import (
    build_classifier,
    classifier_to_encoder_state,
    encoder_for,
    load_encoder_weights,
    load_pretrained,
)
from seg.models.registry import (
    REGISTRY,
    ModelEntry,
    build_model,
    count_parameters,
    input_size_for,
    model_names,
    output_size,
    size_divisor,
)

__all__ = [
    "REGISTRY",
    "ModelEntry",
    "build_classifier",
    "build_model",
    "classifier_to_encoder_state",
    "count_parameters",
    "encoder_for",
    "input_size_for",
    "load_encoder_weights",
    "load_pretrained",
    "model_names",
    "output_size",
    "size_divisor",
]
