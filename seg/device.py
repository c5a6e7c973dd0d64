"""Device, mixed-precision and thread selection shared by training, pretraining and inference.

- device ``auto``: CUDA when available, else CPU; ``cuda`` without CUDA is an error.
- amp ``auto``: bf16 on a CUDA device that supports it, else fp16; on CPU bf16 only where the CPU
  has native bf16 arithmetic (AVX512-BF16 or AMX: 1.5-3.9x faster steps, bench/train.py), else
  fp32. Without native support bf16 is emulated and several times *slower* than fp32 (measured
  ~12x for a DenseNet-121 U-Net step on an AVX2-only AMD EPYC), so ``bf16`` on such a CPU runs
  but warns. ``fp16`` needs CUDA.
- What holds per machine kind: in fp32 (``amp: none``, or ``auto`` on a CPU without native bf16)
  a rerun with the same seed and config gives bit-identical weights and outputs. Under bf16
  autocast results are reproducible on the same machine, but differ from fp32 (and between CPU
  kinds) at the 1e-2 level of probabilities; so ``auto`` gives different numbers on the two CPU
  kinds of our machines, and every exactness test pins ``amp: none``.
- The native-bf16 probe (:func:`cpu_has_native_bf16`) can be forced with the environment
  variable ``SEG_NATIVE_BF16=1`` or ``=0`` (tests exercise both branches on every machine; it also
  lets a user compare the two precisions on one machine).

``section`` names the config section in error messages (``train``, ``inference``).
"""

from __future__ import annotations

import os
import warnings
from functools import lru_cache

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


NATIVE_BF16_ENV = "SEG_NATIVE_BF16"


@lru_cache(maxsize=1)
def _probe_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX), i.e. bf16 autocast
    is faster than fp32 rather than emulated. ``SEG_NATIVE_BF16=1|0`` overrides the probe."""
    forced = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if forced in ("1", "0"):
        return forced == "1"
    if forced:
        raise SegError(f"environment variable {NATIVE_BF16_ENV}={forced!r}: must be 1 or 0 (or unset)")
    return _probe_native_bf16()


def amp_dtype(device: torch.device, amp: str = "auto", *, section: str = "train",
              stacklevel: int = 2) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None = fp32); see the module doc for ``auto``.
    ``stacklevel`` is passed to the emulated-bf16 warning (wrappers add one per level)."""
    if amp not in AMP_MODES:
        raise SegError(f"{section}.amp: {amp!r} is not one of {list(AMP_MODES)}")
    if amp == "none":
        return None
    if device.type != "cuda":
        if amp == "fp16":
            raise SegError(f"{section}.amp: 'fp16' needs a CUDA device (use 'bf16', 'auto' or 'none' on CPU)")
        if amp == "auto":
            return torch.bfloat16 if cpu_has_native_bf16() else None
        if not cpu_has_native_bf16():
            warnings.warn(f"{section}.amp: 'bf16' on a CPU without native bf16 (AVX512-BF16/AMX) is "
                          "emulated and usually several times slower than fp32; 'auto' picks fp32 here",
                          RuntimeWarning, stacklevel=stacklevel)
        return torch.bfloat16
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op threads, capped at the machine's cores (a rule may ask for more threads
    than a laptop has); None keeps torch's default."""
    if threads is None:
        return
    if threads < 1:
        raise SegError(f"--threads: must be >= 1, got {threads}")
    torch.set_num_threads(max(1, min(int(threads), os.cpu_count() or 1)))
