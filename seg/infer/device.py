"""Device, mixed precision and memory layout for inference (``inference.device`` / ``inference.amp``).

- device ``auto``: CUDA when available, else CPU; ``cuda`` without CUDA is an error.
- amp ``auto``: bf16 on a CUDA device that supports it, else fp16; fp32 on CPU (so CPU results are
  exact). ``bf16`` works on CPU too (faster, changes outputs ~1e-2); ``fp16`` needs CUDA.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from seg import device as _device



def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda if available else cpu; a torch.device passes through."""
    return _device.resolve_device(name, section="inference")


def amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """Autocast dtype for ``amp`` on ``device``; None = fp32."""
    return _device.amp_dtype(device, amp, section="inference", stacklevel=3)


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
