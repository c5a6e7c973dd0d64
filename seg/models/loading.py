"""Loading weights files into models: one function per contract, named for what it loads.

- :func:`load_model_weights`: a whole trained model (``seg train``'s ``best.pt``/``last.pt``, or a
  bare state dict), as ``seg predict`` and ``seg package`` use it.
- :func:`load_pretrained_encoder`: pretrained weights for ``model.encoder`` only (``seg pretrain``'s
  ``encoder.pt``, or a classifier's state dict such as an ImageNet ``.pth``).

Both read with :func:`seg.io.load_torch_file` (``weights_only=True``, on the CPU; nothing is
downloaded) and raise :class:`seg.errors.SegError` naming the file.
(The full resumable training state is :func:`seg.train.checkpoint.read_training_checkpoint`.)
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from seg.errors import SegError
from seg.io import load_torch_file
from seg.models.classification import load_encoder_weights


def load_model_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a trained checkpoint into ``model`` (in place, strictly) and return the model.

    Args:
        model: the configured model (``seg.models.build_model`` of the variant), on any device.
        path: a dict with key ``model`` (the trainer's checkpoints) or a bare state dict;
            ``module.`` / ``_orig_mod.`` key prefixes (DDP, torch.compile) are stripped.

    Returns:
        ``model`` with the checkpoint's tensors (dtypes as the model's own).

    Raises:
        SegError: the file is missing or unreadable, holds no state dict, or does not fit the model
            (missing/unexpected keys, shapes).
    """
    path = Path(path)
    ck = load_torch_file(path, "checkpoint")
    state = ck["model"] if isinstance(ck, dict) and isinstance(ck.get("model"), dict) else ck
    if not isinstance(state, dict):
        raise SegError(f"{path}: expected a state dict or a dict with key 'model', got {type(state).__name__}")
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise SegError(f"{path}: does not fit the configured model ({' '.join(first[:3])[:300]})") from None
    return model


def load_pretrained_encoder(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Load a local ``.pt``/``.pth`` state dict into ``model.encoder`` (every encoder tensor is set).

    Args:
        model: a model with ``.encoder`` (``seg.models.build_model`` of an encoder model).
        path: a plain state dict, or one wrapped under ``state_dict`` / ``model``; classifier keys
            (torchvision layout) or encoder keys; a 3-channel first conv is adapted to the model's
            input channels (:func:`seg.models.classification.load_encoder_weights`).

    Returns:
        The encoder keys transferred.

    Raises:
        SegError: the file is missing or unreadable, or its tensors do not match the encoder.
    """

    path = Path(path)
    obj = load_torch_file(path, "pretrained weights file")
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise SegError(f"{path}: expected a state dict, got {type(obj).__name__}")
    try:
        return load_encoder_weights(model, obj)
    except SegError as e:
        raise SegError(f"{path}: {e}") from None
