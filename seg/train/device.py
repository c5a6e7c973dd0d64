"""Device, mixed precision, memory layout and determinism settings for training.

``resolve_device("auto")`` picks CUDA when available, else CPU. Mixed precision (``train.amp``) is
chosen by :func:`seg.device.amp_dtype`: ``auto`` = bf16 (or fp16 with a GradScaler) on CUDA, bf16
on CPUs with native bf16 (AVX512-BF16/AMX), fp32 on other CPUs; ``bf16``, ``fp16`` (CUDA only) and
``none`` (fp32) as asked. See :mod:`seg.device` for what is reproducible under each.

``configure_determinism`` switches on deterministic algorithms (bit-identical reruns on CPU; on CUDA
deterministic kernels where they exist); with determinism off on CUDA it enables ``cudnn.benchmark``.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch

from seg import device as _device



def resolve_device(name: str = "auto", *, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` if CUDA is available else ``cpu``; ``cuda`` without CUDA fails."""
    return _device.resolve_device(name, section="train", local_rank=local_rank)


@dataclass(frozen=True)
class Precision:
    """How a training step runs: device, autocast dtype (None = fp32), memory layout."""

    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def needs_scaler(self) -> bool:
        """fp16 needs loss scaling; bf16 and fp32 do not."""
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """Move an NCHW batch to the device in the chosen memory layout."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled only for fp16 (a disabled one is a no-op with a state dict)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.needs_scaler)


def precision_for(train_cfg: dict, device: torch.device) -> Precision:
    """Precision settings from the ``train`` config section (``amp``, ``channels_last``)."""
    # stacklevel 3: an emulated-bf16 warning names the line that asked for these settings
    dtype = _device.amp_dtype(device, train_cfg.get("amp", "auto"), section="train", stacklevel=3)
    return Precision(device, dtype, bool(train_cfg.get("channels_last", True)))


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (all CUDA devices included)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic algorithms on/off; cudnn.benchmark only when determinism is not asked for.

    On CPU every op the models use has a deterministic kernel (bit-identical reruns). On CUDA some
    ops have none (e.g. ``nll_loss2d`` forward inside cross-entropy, adaptive pooling backward), so
    there determinism is ``warn_only``: deterministic kernels where they exist, a warning elsewhere,
    never a crash.
    """
    warn_only = device.type == "cuda"
    if deterministic and device.type == "cuda":
        # cuBLAS needs a fixed workspace for deterministic matmuls; read when its handle is created.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if "torch._inductor" in sys.modules or not hasattr(torch._C, "_set_deterministic_algorithms"):
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    else:
        # torch.use_deterministic_algorithms also sets torch._inductor.config.deterministic, which
        # imports the whole compiler stack (~2 s CPU per process). Nothing here uses torch.compile,
        # so set only the eager-mode flag, exactly as that function does for eager code.
        torch._C._set_deterministic_algorithms(deterministic, warn_only=warn_only)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB: CUDA max allocated on ``device``, else the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
