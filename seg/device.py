"""Device, threads, mixed precision, memory layout and determinism: one module for training,
pretraining and inference.

- Device (:func:`resolve_device`): ``auto`` = CUDA when available, else CPU; ``cuda`` without CUDA
  is an error.
- Precision (``train.amp`` / ``inference.amp``, :func:`resolve_amp`):

  * ``auto``: on CUDA bf16 if the GPU supports it, else fp16 (training then scales the loss with a
    GradScaler). On a CPU with native bf16 arithmetic (AVX512-BF16 or AMX) the faster of bf16
    autocast and fp32 *for this model on this machine*, measured by a short timed probe and cached
    per machine (:mod:`seg.precision`: bf16 is 1.5-3.9x faster on an Intel Xeon with AMX and on
    an AMD EPYC with AVX512-BF16, but 0.7-0.85x for most models on an Intel Xeon with
    AVX512-BF16 and no AMX). On other CPUs fp32: bf16 is emulated there and several times
    *slower* (measured ~12x for a DenseNet-121 U-Net step on an AVX2-only AMD EPYC).
  * ``bf16``: bf16 autocast on any device; on a CPU without native bf16 it runs but warns.
  * ``fp16``: CUDA only. ``none``: fp32.

- What is reproducible: in fp32 (``amp: none``, or ``auto`` where fp32 is chosen) a rerun with
  the same seed and config gives bit-identical weights and outputs on CPU. Under bf16 autocast
  results are reproducible on the same machine but differ from fp32 (and between CPU kinds) at
  the 1e-2 level of probabilities (inference: up to ~0.05); so ``auto`` gives different numbers
  on different CPU kinds, and every exactness test pins ``amp: none``. The probe decides before
  anything is trained and its cached answer makes every rerun on the machine decide the same.
- The native-bf16 check (:func:`cpu_has_native_bf16`, cached per process) can be forced with the
  environment variable ``SEG_NATIVE_BF16=1`` or ``=0``: ``auto`` then takes bf16 / fp32 on a CPU
  without timing anything (tests exercise both branches on every machine; it also lets a user
  compare the two precisions on one machine).
- :class:`Precision` carries the choice: autocast context, channels_last layout (faster
  convolutions on CPU and GPU, same values up to float rounding), :meth:`Precision.to_input` for
  batches, :meth:`Precision.predictor` for tiled inference (training validation and ``seg
  predict`` alike) and the GradScaler of a training run.
- :func:`configure_determinism` switches on deterministic algorithms (bit-identical reruns on CPU;
  on CUDA deterministic kernels where they exist); with determinism off on CUDA it enables
  ``cudnn.benchmark``.

``section`` names the config section in error messages (``train``, ``inference``, ``pretrain``).
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from seg.errors import SegError
from seg.precision import choose_precision

DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("auto", "none", "bf16", "fp16")
NATIVE_BF16_ENV = "SEG_NATIVE_BF16"


# ----------------------------------------------------------------------------- device and threads
def resolve_device(name: str | torch.device = "auto", *, section: str = "train",
                   local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` if CUDA is available else ``cpu``; a torch.device passes.

    Raises:
        SegError: ``name`` is not one of :data:`DEVICES`, or ``cuda`` without a CUDA device.
    """
    if isinstance(name, torch.device):
        return name
    if name not in DEVICES:
        raise SegError(f"{section}.device: {name!r} is not one of {list(DEVICES)}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SegError(f"{section}.device: 'cuda' requested but no CUDA device is available")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op threads, capped at the machine's cores (a rule may ask for more threads
    than a laptop has); None keeps torch's default."""
    if threads is None:
        return
    if threads < 1:
        raise SegError(f"--threads: must be >= 1, got {threads}")
    torch.set_num_threads(max(1, min(int(threads), os.cpu_count() or 1)))


# ----------------------------------------------------------------------------- precision
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


def resolve_amp(device: torch.device, amp: str = "auto", *, section: str = "train",
                model: torch.nn.Module | None = None, shape: tuple[int, ...] | None = None,
                mode: str = "train", channels_last: bool = True,
                stacklevel: int = 2) -> tuple[torch.dtype | None, str, float | None]:
    """The autocast dtype for ``amp`` on ``device`` and why (see the module doc for ``auto``).

    Args:
        model, shape, mode, channels_last: what ``auto`` times on a CPU with native bf16
            (:func:`seg.precision.choose_precision`: ``model`` on an input batch of ``shape``,
            ``mode`` ``"train"`` or ``"infer"``); not needed in every other case.
        stacklevel: passed to the emulated-bf16 warning (wrappers add one per level).

    Returns:
        (dtype or None for fp32, source, ratio): source is ``config`` (an explicit value), ``cuda``,
        ``SEG_NATIVE_BF16=<v>`` (forced), ``no native bf16``, ``measured`` or ``cache`` (the probe);
        ratio is the probe's fp32 / bf16 time (> 1: bf16 faster), else None.

    Raises:
        SegError: unknown ``amp``; fp16 on a CPU; ``auto`` on a native-bf16 CPU without a model.
    """
    if amp not in AMP_MODES:
        raise SegError(f"{section}.amp: {amp!r} is not one of {list(AMP_MODES)}")
    if amp == "none":
        return None, "config", None
    if device.type == "cuda":
        if amp == "auto":
            return (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16), "cuda", None
        return (torch.bfloat16 if amp == "bf16" else torch.float16), "config", None
    if amp == "fp16":
        raise SegError(f"{section}.amp: 'fp16' needs a CUDA device (use 'bf16', 'auto' or 'none' on CPU)")
    if amp == "bf16":
        if not cpu_has_native_bf16():
            warnings.warn(f"{section}.amp: 'bf16' on a CPU without native bf16 (AVX512-BF16/AMX) is "
                          "emulated and usually several times slower than fp32; 'auto' picks fp32 here",
                          RuntimeWarning, stacklevel=stacklevel)
        return torch.bfloat16, "config", None
    forced = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if forced:
        native = cpu_has_native_bf16()  # validates the value
        return (torch.bfloat16 if native else None), f"{NATIVE_BF16_ENV}={forced}", None
    if not _probe_native_bf16():
        return None, "no native bf16", None
    if model is None or shape is None:
        raise SegError(f"{section}.amp: 'auto' on this CPU times the model in both precisions; "
                       "the caller must pass the model and its input shape")

    choice = choose_precision(model, shape, mode=mode, channels_last=channels_last)
    return (torch.bfloat16 if choice.dtype == "bf16" else None), choice.source, choice.ratio


@dataclass(frozen=True)
class Precision:
    """How a model runs: device, autocast dtype (None = fp32), memory layout.

    Attributes:
        device: where the model and its inputs live.
        dtype: ``torch.bfloat16`` / ``torch.float16`` autocast, or None for fp32.
        channels_last: NHWC memory layout for the model's 4D weights and its inputs.
        source: why this dtype (:func:`resolve_amp`: ``config``, ``cuda``, ``measured``, ...).
        ratio: the probe's fp32 / bf16 time where it was measured (> 1: bf16 faster), else None.
    """

    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool = True
    source: str = "config"
    ratio: float | None = None

    @property
    def name(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def record(self) -> dict:
        """The choice as a JSON-able dict for summaries, reports and packages."""
        return {"amp": self.name, "source": self.source, "bf16_vs_fp32_speed": self.ratio,
                "channels_last": self.channels_last}

    @property
    def needs_scaler(self) -> bool:
        """fp16 needs loss scaling; bf16 and fp32 do not."""
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of :attr:`dtype` on the device (a no-op context for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """An NCHW batch on the device in the chosen memory layout (values and dtype unchanged)."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move ``model`` to the device and memory layout, in place; returns it."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def predictor(self, model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """A batch predictor for :func:`seg.infer.tiling.predict_batch`: (N, C, h, w) float32 ->
        float32 logits (N, classes, h', w'), the forward pass under :meth:`autocast`.

        The model is prepared in place (:meth:`prepare_model`); the caller sets eval mode.
        """
        self.prepare_model(model)

        def predict(batch: torch.Tensor) -> torch.Tensor:
            batch = self.to_input(batch)
            with self.autocast():
                out = model(batch)
            return out.float()

        return predict

    def scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled only for fp16 (a disabled one is a no-op with a state dict)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.needs_scaler)


def precision_for(section_cfg: dict, device: torch.device, *, section: str = "train",
                  model: torch.nn.Module | None = None, shape: tuple[int, ...] | None = None,
                  mode: str = "train") -> Precision:
    """Precision settings from a config section (``amp``, ``channels_last``; defaults ``auto`` and
    true: the ``inference`` section has no ``channels_last`` and always runs channels_last).

    ``model``, ``shape`` and ``mode`` are what ``auto`` times on a CPU with native bf16 (see
    :func:`resolve_amp`). An emulated-bf16 warning names the caller's line.
    """
    channels_last = bool(section_cfg.get("channels_last", True))
    dtype, source, ratio = resolve_amp(device, section_cfg["amp"], section=section, model=model,
                                       shape=shape, mode=mode, channels_last=channels_last, stacklevel=3)
    return Precision(device, dtype, channels_last, source, ratio)


# ----------------------------------------------------------------------------- reproducibility
def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (all CUDA devices included)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool, device: torch.device, *, compiling: bool = False) -> None:
    """Deterministic algorithms on/off; cudnn.benchmark only when determinism is not asked for.

    On CPU every op the models use has a deterministic kernel (bit-identical reruns). On CUDA some
    ops have none (e.g. ``nll_loss2d`` forward inside cross-entropy, adaptive pooling backward), so
    there determinism is ``warn_only``: deterministic kernels where they exist, a warning elsewhere,
    never a crash. ``compiling``: the run will ``torch.compile`` (``train.compile``), so the
    compiler's own flag is set too.
    """
    warn_only = device.type == "cuda"
    if deterministic and device.type == "cuda":
        # cuBLAS needs a fixed workspace for deterministic matmuls; read when its handle is created.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if compiling or "torch._inductor" in sys.modules or not hasattr(torch._C, "_set_deterministic_algorithms"):
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    else:
        # torch.use_deterministic_algorithms also sets torch._inductor.config.deterministic, which
        # imports the whole compiler stack (~2 s CPU per process). Without torch.compile only the
        # eager-mode flag matters: set it exactly as that function does for eager code.
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
