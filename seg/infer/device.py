"""Device, mixed precision and memory layout for inference (``inference.device`` / ``inference.amp``).

- device ``auto``: CUDA when available, else CPU; ``cuda`` without CUDA is an error.
- amp ``auto``: bf16 on a CUDA device that supports it, else fp16; fp32 on CPU (so CPU results are
  exact). ``bf16`` works on CPU too (faster, changes outputs ~1e-2); ``fp16`` needs CUDA.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from seg.errors import SegError

DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("auto", "none", "bf16", "fp16")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda if available else cpu; a torch.device passes through."""
    if isinstance(name, torch.device):
        return name
    if name not in DEVICES:
        raise SegError(f"inference.device: unknown option {name!r} (choices: {', '.join(DEVICES)})")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SegError("inference.device: 'cuda' requested but no CUDA device is available")
    return torch.device("cuda")


def amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """Autocast dtype for ``amp`` on ``device``; None = fp32."""
    if amp not in AMP_MODES:
        raise SegError(f"inference.amp: unknown option {amp!r} (choices: {', '.join(AMP_MODES)})")
    if amp == "none" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise SegError("inference.amp: 'fp16' needs a CUDA device (use 'bf16' or 'none' on CPU)")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def make_predictor(
    model: torch.nn.Module,
    *,
    device: torch.device,
    dtype: torch.dtype | None = None,
    channels_last: bool = True,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A batch predictor for :func:`seg.infer.tiling.predict_tiled`: (N, C, h, w) float32 on
    ``device`` -> float32 logits, under autocast ``dtype`` (None = fp32) and in channels_last layout
    (faster convolutions on CPU and GPU; same values up to float rounding).

    The model is moved to ``device`` (and to channels_last) in place; the caller sets eval mode.
    """
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with ctx:
            out = model(batch)
        return out.float()

    return predictor
