"""Which precision is faster for a model on this machine: a short timed probe, cached per machine.

``amp: auto`` on a CPU whose oneDNN runs bf16 natively (AVX512-BF16 or AMX) does not simply take
bf16: whether bf16 autocast beats fp32 depends on the CPU and the model. Measured with
``bench/train.py`` (2 cores, batch 4, 256 px): on an Intel Xeon with AMX bf16 trains 1.5-3.9x
faster; on an Intel Xeon with AVX512-BF16 but no AMX it is *slower* for three of four families
(U-Net 0.76x, ResNet-34 0.71x, DenseNet-121 0.84x; only FCN-8s gains); on an AMD EPYC with
AVX512-BF16 it is 1.5-2.2x faster for all four. No CPU flag tells these apart, so
:func:`choose_precision` times the model itself:

- **What is timed.** ``mode="train"``: forward under autocast + backward of a stand-in loss on a
  batch of the run's shape (batch size, input channels, patch size), the weights' gradients
  included (an optimiser step costs the same in both precisions: its weights stay fp32).
  ``mode="infer"``: the forward pass under ``torch.inference_mode`` on a batch of tiles.
  One warm-up call per precision (oneDNN builds its kernels), then :data:`ROUNDS` rounds of one
  fp32 and one bf16 call in alternating order; ``ratio`` = median over rounds of the paired
  fp32 time / bf16 time (> 1: bf16 is faster). A burst of load from other jobs hits both calls of
  a round alike.
- **Decision.** bf16 when ``ratio >= MARGIN`` (bf16 at least 5 % faster), else fp32: a near-tie
  goes to the more accurate precision, and a rerun of the probe near the margin cannot flip a
  clear result.
- **No side effects.** The probe runs on a deep copy of the model (batch-norm statistics and
  gradients of the caller's model untouched), with inputs from a private generator, and restores
  torch's global random state: a run whose probe came from the cache and one that measured give
  bit-identical training.
- **Cache.** One JSON file per machine kind and torch version (``precision-<key>.json`` in
  :func:`cache_dir`), one entry per (mode, architecture, input shape, memory layout, threads).
  The first run on a machine measures (seconds: a few steps of each precision) and every later
  run, job or process reads the same decision: the same machine and seed give the same results.
  A file lock serialises the probes of concurrent jobs (Snakemake's parallel jobs, DDP ranks on one
  node), so no two probes disturb each other's timing and each key is measured once.
  Delete the file to measure again (e.g. after a BIOS or kernel change).

What decides before any probe (see :func:`seg.device.resolve_amp`): an explicit ``amp:`` value, the
environment variable ``SEG_NATIVE_BF16=1|0`` (forces bf16 / fp32 for ``auto`` without timing),
CUDA (bf16 if supported, else fp16), a CPU without native bf16 (fp32: emulated bf16 is 3-12x
slower there).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from seg.errors import SegError
from seg.io import write_json

MODES = ("train", "infer")
ROUNDS = 3
MARGIN = 1.05
CACHE_ENV = "SEG_CACHE_DIR"
FORMAT = 1


@dataclass(frozen=True)
class Choice:
    """The outcome of :func:`choose_precision`.

    Attributes:
        dtype: ``"bf16"`` or ``"fp32"``.
        source: ``"measured"`` (timed now) or ``"cache"`` (timed by an earlier run on this machine).
        ratio: fp32 time / bf16 time, median of the paired rounds (> 1: bf16 faster).
        fp32_s, bf16_s: median seconds per call of each precision.
        key: the cache entry's key; cache_file: where it is stored ("" when nothing was cached).
    """

    dtype: str
    source: str
    ratio: float
    fp32_s: float
    bf16_s: float
    key: str
    cache_file: str = ""

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``bf16 (measured: 1.68x fp32's speed)``."""
        return f"{self.dtype} ({self.source}: bf16 {self.ratio:.2f}x fp32's speed)"


# ----------------------------------------------------------------------------- machine and cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key() -> str:
    """12 hex digits naming this machine kind for the cache: CPU model and torch version."""
    return hashlib.sha256(f"{cpu_model()}|torch {torch.__version__}".encode()).hexdigest()[:12]


def cache_dir() -> Path:
    """``$SEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/seg``, else ``~/.cache/seg``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "seg"


def cache_file() -> Path:
    """The probe results of this machine kind: ``<cache_dir>/precision-<machine_key>.json``."""
    return cache_dir() / f"precision-{machine_key()}.json"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``path.lock`` (yields False, without lock, if the folder cannot be
    written: then every process measures for itself)."""
    import fcntl

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path.with_suffix(".lock"), "a")
    except OSError:
        yield False
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise SegError(f"{path}: unreadable precision cache ({e}); delete it to measure again") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("entries"), dict):
        raise SegError(f"{path}: not a precision cache of format {FORMAT}; delete it to measure again")
    return doc["entries"]


def _write(path: Path, entries: dict) -> None:
    write_json(path, {"format": FORMAT, "cpu": cpu_model(), "torch": torch.__version__, "entries": entries})


# ----------------------------------------------------------------------------- the probe
def probe_key(model: torch.nn.Module, shape: Sequence[int], mode: str, channels_last: bool) -> str:
    """16 hex digits for (mode, architecture, input shape, layout, threads): the architecture is
    the module classes and parameter shapes, so two variants of one family with other widths or
    depths are timed separately."""
    h = hashlib.sha256(f"{mode}|{tuple(int(s) for s in shape)}|cl={channels_last}|"
                       f"threads={torch.get_num_threads()}".encode())
    for name, m in model.named_modules():
        h.update(f"{name}:{type(m).__name__};".encode())
    for name, p in model.named_parameters():
        h.update(f"{name}:{tuple(p.shape)};".encode())
    return h.hexdigest()[:16]


def _one_call(model: torch.nn.Module, x: torch.Tensor, mode: str, bf16: bool) -> float:
    """Seconds of one forward (+ backward for ``train``) in the given precision."""
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    t = time.perf_counter()
    if mode == "infer":
        with torch.inference_mode(), ctx:
            model(x)
    else:
        with ctx:
            out = model(x)
        out.float().square().mean().backward()  # a stand-in loss: the backward pass is the cost
        model.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def measure(model: torch.nn.Module, shape: Sequence[int], mode: str, *, channels_last: bool = True,
            rounds: int = ROUNDS) -> dict:
    """Time ``model`` in fp32 and bf16 autocast on a CPU (see the module docstring).

    Args:
        model: the network (not modified: a deep copy is timed).
        shape: input batch shape (N, C, H, W).
        mode: ``"train"`` (forward + backward, train mode) or ``"infer"`` (forward, eval mode).
        channels_last: time in NHWC layout, as the run will use it.
        rounds: paired rounds after the warm-up.

    Returns:
        ``{"ratio", "fp32_s", "bf16_s", "rounds"}``: ratio = median over rounds of fp32 / bf16 time.
    """
    if mode not in MODES:
        raise SegError(f"precision probe: mode {mode!r} is not one of {list(MODES)}")
    state = torch.get_rng_state()
    try:
        net = copy.deepcopy(model).cpu().train(mode == "train")
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(*[int(s) for s in shape], generator=gen)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        for bf16 in (False, True):  # warm-up: oneDNN creates its kernels on the first call
            _one_call(net, x, mode, bf16)
        fp32, bf16, ratios = [], [], []
        for r in range(rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            t = {b: _one_call(net, x, mode, b) for b in order}
            fp32.append(t[False])
            bf16.append(t[True])
            ratios.append(t[False] / t[True])
    finally:
        torch.set_rng_state(state)
    return {"ratio": round(statistics.median(ratios), 4), "fp32_s": round(statistics.median(fp32), 5),
            "bf16_s": round(statistics.median(bf16), 5), "rounds": rounds}


_MEMO: dict[tuple[str, str], Choice] = {}


def choose_precision(model: torch.nn.Module, shape: Sequence[int], *, mode: str = "train",
                     channels_last: bool = True) -> Choice:
    """The faster precision for ``model`` on this CPU, from the cache or measured now (and cached).

    Only for CPUs with native bf16 (the caller decides that, :func:`seg.device.resolve_amp`).
    Within a process the answer is also kept in memory (``seg predict`` asks once per slice).

    Raises:
        SegError: the cache file exists but is not a precision cache (its path named).
    """
    key = probe_key(model, shape, mode, channels_last)
    path = cache_file()
    memo = _MEMO.get((str(path), key))
    if memo is not None:
        return memo
    with _locked(path) as writable:
        entries = _read(path) if writable else {}
        entry = entries.get(key)
        source = "cache"
        if entry is None:
            entry = {**measure(model, shape, mode, channels_last=channels_last), "mode": mode,
                     "shape": [int(s) for s in shape], "channels_last": channels_last,
                     "threads": torch.get_num_threads(), "model": type(model).__name__,
                     "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
            entry["choice"] = "bf16" if entry["ratio"] >= MARGIN else "fp32"
            source = "measured"
            if writable:
                _write(path, {**_read(path), key: entry})
    choice = Choice(dtype=entry["choice"], source=source, ratio=float(entry["ratio"]),
                    fp32_s=float(entry["fp32_s"]), bf16_s=float(entry["bf16_s"]), key=key,
                    cache_file=str(path) if writable else "")
    _MEMO[(str(path), key)] = choice
    return choice


def as_record(choice: Choice | None) -> dict | None:
    """A JSON-able record of a choice for summaries and packages (None stays None)."""
    return None if choice is None else asdict(choice)
