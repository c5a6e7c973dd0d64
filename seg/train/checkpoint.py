"""Atomic, ``weights_only``-loadable training checkpoints and random-generator state.

A checkpoint is a dict of plain types and tensors only, so ``torch.load(..., weights_only=True)``
reads it:

- ``"model"``: the model's state dict (unwrapped from DDP), ``"optimizer"``, ``"scheduler"``,
  ``"scaler"``: their state dicts.
- ``"rng"``: ``{"python": int64 tensor (625,) + "python_gauss": float|None, "numpy": {"keys": uint32
  as int64 tensor (624,), "pos", "has_gauss", "cached_gaussian"}, "torch": uint8 tensor, "cuda":
  [uint8 tensor per device]}``.
- ``"iteration"`` (completed optimiser steps), ``"best_val_iou"`` (float or None), ``"best_iteration"``,
  ``"config_hash"``, ``"seed"``, ``"wall_time_s"`` (training time accumulated over resumes).

Writing goes to a temporary name beside the target and is renamed into place (``seg.io.atomic_path``),
so a process killed mid-write (SIGKILL included) leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seg.errors import SegError
from seg.io import atomic_path, load_torch_file


def rng_state() -> dict[str, Any]:
    """The global Python, numpy, torch and CUDA generator states as weights_only-safe values."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    return {
        "python_version": int(version),
        "python": torch.tensor(internal, dtype=torch.int64),
        "python_gauss": gauss,
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only if the same devices exist)."""
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"].tolist()), state["python_gauss"]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.cpu() for t in cuda])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save(state)`` to ``path`` atomically (temp file + fsync + rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())


def read_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The full resumable training state saved by ``seg train`` (keys: see the module doc), read
    with ``weights_only=True`` onto the CPU (:func:`seg.io.load_torch_file`).

    Raises:
        SegError: the file is missing, not a readable checkpoint, or has no ``model`` entry (names
            the file).
    """
    obj = load_torch_file(path, "checkpoint")
    if not isinstance(obj, dict) or "model" not in obj:
        raise SegError(f"{Path(path)}: not a training checkpoint (no 'model' entry)")
    return obj


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside a DDP wrapper."""
    return model.module if hasattr(model, "module") else model


def model_state_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The (unwrapped) model's state dict as contiguous CPU tensors (channels_last undone)."""
    return {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
