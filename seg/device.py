"""Device, mixed-precision and thread selection shared by training, pretraining and inference.

- device ``auto``: CUDA when available, else CPU; ``cuda`` without CUDA is an error.
- amp ``auto``: bf16 on a CUDA device that supports it, else fp16; fp32 on CPU (CPU results stay
  exact and reproducible). ``bf16`` also works on CPU (faster on CPUs with bf16 support, changes
  outputs at the 1e-2 level); ``fp16`` needs CUDA.

``section`` names the config section in error messages (``train``, ``inference``).
"""

from __future__ import annotations

import os

import torch

from seg.errors import SegError

DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("auto", "none", "bf16", "fp16")


def resolve_device(name: str | torch.device = "auto", *, section: str = "train",
                   local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` if CUDA is available else ``cpu``; a torch.device passes."""
    if isinstance(name, torch.device):
        return name
    if name not in DEVICES:
        raise SegError(f"{section}.device: {name!r} is not one of {list(DEVICES)}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SegError(f"{section}.device: 'cuda' requested but no CUDA device is available")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def amp_dtype(device: torch.device, amp: str = "auto", *, section: str = "train") -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None = fp32)."""
    if amp not in AMP_MODES:
        raise SegError(f"{section}.amp: {amp!r} is not one of {list(AMP_MODES)}")
    if amp == "none" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise SegError(f"{section}.amp: 'fp16' needs a CUDA device (use 'bf16' or 'none' on CPU)")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op threads, capped at the machine's cores (a rule may ask for more threads
    than a laptop has); None keeps torch's default."""
    if threads is None:
        return
    if threads < 1:
        raise SegError(f"--threads: must be >= 1, got {threads}")
    torch.set_num_threads(max(1, min(int(threads), os.cpu_count() or 1)))
