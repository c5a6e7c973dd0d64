"""Device, mixed precision and memory layout for inference (``inference.device`` / ``inference.amp``).

The choice is :func:`seg.device.amp_dtype`'s: ``auto`` = bf16 (or fp16) on CUDA, bf16 on CPUs with
native bf16 (AVX512-BF16/AMX; probabilities then differ from fp32 by up to ~0.05), fp32 on other
CPUs; ``none`` pins fp32 (exact, the same on every CPU kind).
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
