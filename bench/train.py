"""Training throughput on this machine: patches/s per model family, data-wait fraction, fp32 vs bf16
autocast on CPU, and achieved FLOP/s as a fraction of the measured matmul peak of the precision used.

Run: ``.venv/bin/python bench/train.py [--steps N] [--config configs/config.yaml]``

Everything is measured in this one run with the training code itself (``seg.train.sampling``
PatchDataset + DataLoader with ``train.num_workers`` augmentation workers, ``seg.train.loop.train_step``,
the config's loss, optimiser, patch size, batch size, channels_last and determinism settings) on
real ISBI 2012 slices (full 512^2, with weight maps, written to a temporary canonical folder).

Precisions: every model family runs in the precision ``train.amp`` picks on this CPU (``auto``: bf16
where the CPU has native bf16, AVX512-BF16/AMX; fp32 elsewhere). On a CPU with native bf16 every
family also runs in the other precision (fp32), so both are measured; on one without, bf16 would
only be emulated (an order of magnitude slower) and is left out.

The machine is shared with other jobs, whose load comes in bursts, so the comparisons are paired:
after one warm-up step of every set-up, ``--steps`` rounds run; each round probes the matmul peak
(2048^3, best of 2) of each precision measured and then times one training step of every set-up. A
burst hits all of a round alike.

- patches/s = batch / median step time (compute only: batches are prefetched).
- flop_utilization = median over rounds of (FLOPs of one step / step time) / that round's matmul
  peak of the step's own precision (fp32 steps against the fp32 peak, bf16 steps against the bf16
  peak); FLOPs are nominal, from ``torch.utils.flop_counter.FlopCounterMode`` over one training step
  (forward + backward), so a value near 1 means the convolutions run at matmul speed.
- bf16 speedup = median over rounds of the paired fp32 / bf16 step-time ratio (native bf16 only).
- data_wait = time blocked on the loader / step time, over ``--steps`` consecutive steps with a
  fresh loader (as in training; its first batch, with worker start-up, is not counted), measured for
  the default model and for the fastest family (classic U-Net, the hardest case for the loader), in
  the config's precision.

Writes bench/results/train.json and ends with ``RESULT train patches_per_s=<x> flop_utilization=<f>
data_wait=<f> amp=<fp32|bf16>`` for the default model in the precision the config picks on this CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # toydata: the test fixtures' canonical ISBI subset
SHARED = ROOT.parent / "shared" / "data" / "isbi2012"
MODELS = ("unet", "unet-resnet34", "unet-densenet121", "fcn8s")  # config variant names
DEFAULT = "unet-resnet34"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 3) -> float:
    """Best-of-``reps`` FLOP/s of an n^3 matmul (after one untimed run)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def step_flops(runner: "Runner") -> int:
    """Nominal FLOPs of one training step (forward + backward) from FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        runner.step(runner.first)
    return int(fc.get_total_flops())


class Runner:
    """One (variant, precision) set-up exactly as ``seg train`` builds it, stepped on demand."""

    def __init__(self, cfg: dict, variant: str, ds_dir: Path, *, amp: str | None = None):
        from seg.config import variant_section
        from seg.device import precision_for, seed_everything
        from seg.train.loop import build_training_model
        from seg.train.losses import build_loss, needs_weights
        from seg.train.optim import build_optimizer
        from seg.train.sampling import PatchDataset, load_training_slices, patch_geometry

        tcfg = variant_section(cfg, variant, "train")
        if amp is not None:
            tcfg["amp"] = amp
        seed_everything(0)
        model = build_training_model({**cfg, "variants": {variant: {**cfg["variants"][variant], "pretrained": "none"}}},
                                     "isbi2012", variant, 2)
        self.variant, self.model_name, self.tcfg = variant, cfg["variants"][variant]["model"], tcfg
        self.params = sum(p.numel() for p in model.parameters())
        self.geo = patch_geometry(model, int(tcfg["patch_size"]))
        self.data = PatchDataset(load_training_slices(ds_dir, "train", with_weights=needs_weights(tcfg["loss"])),
                                 self.geo, augment_cfg=variant_section(cfg, variant, "augment"), seed=0,
                                 border_sampling=float(tcfg["border_sampling"]))
        self.prec = precision_for(tcfg, torch.device("cpu"))
        self.model = self.prec.prepare_model(model)
        self.opt = build_optimizer(self.model.parameters(), tcfg["optimizer"])
        self.scaler = self.prec.scaler()
        self.loss_fn = build_loss(tcfg["loss"])
        self.B = int(tcfg["batch_size"])
        self.batches = iter(self.loader(1000))
        self.first = next(self.batches)

    def loader(self, steps: int):
        from seg.train.sampling import make_loader

        return make_loader(self.data, start=0, stop=steps, batch_size=self.B, rank=0, world_size=1,
                           num_workers=int(self.tcfg["num_workers"]), seed=0)

    def step(self, batch) -> float:
        """One training step on ``batch``; returns its compute time in s."""
        from seg.train.loop import train_step

        t = time.perf_counter()
        train_step(self.model, batch, self.opt, self.scaler, self.loss_fn, self.prec)
        return time.perf_counter() - t

    def data_wait(self, steps: int) -> float:
        """Fraction of step time blocked on the loader, over ``steps`` consecutive steps with a fresh
        loader (its first batch, which includes worker start-up, is not counted)."""
        it = iter(self.loader(steps + 1))
        self.step(next(it))
        wait = total = 0.0
        tick = time.perf_counter()
        for batch in it:
            got = time.perf_counter()
            self.step(batch)
            done = time.perf_counter()
            wait, total, tick = wait + got - tick, total + done - tick, done
        return wait / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "config.yaml"))
    ap.add_argument("--steps", type=int, default=3, help="timed steps per model (default 3)")
    ap.add_argument("--slices", type=int, default=4, help="ISBI training slices to sample from (default 4)")
    args = ap.parse_args()

    import tifffile

    from seg.config import load_config
    from toydata import write_isbi_subset

    from seg.device import configure_determinism, cpu_has_native_bf16, precision_for

    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    cfg = load_config(args.config)
    configure_determinism(bool(cfg["train"]["deterministic"]), torch.device("cpu"))
    native = cpu_has_native_bf16()
    # the precision amp (auto) picks here first; on a native-bf16 CPU the other one (fp32) as well
    chosen = precision_for(cfg["train"], torch.device("cpu")).name
    precisions = [chosen] + (["fp32" if chosen == "bf16" else "bf16"] if native else [])
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks0 = {p: matmul_peak(dtypes[p]) for p in precisions}
    print("matmul 2048^3 peak: " + ", ".join(f"{p} {v / 1e9:.1f} GFLOP/s" for p, v in peaks0.items())
          + f" ({torch.get_num_threads()} threads; {'native' if native else 'no native'} bf16; "
          f"amp {cfg['train']['amp']} -> {chosen})")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ds = write_isbi_subset(Path(tmp) / "isbi2012", tifffile.imread(SHARED / "train-volume.tif"),
                               tifffile.imread(SHARED / "train-labels.tif"), splits=(args.slices, 0, 0))
        amp_of = {"fp32": "none", "bf16": "bf16"}
        runners = [Runner(cfg, v, ds, amp=amp_of[p]) for p in precisions for v in MODELS]
        for r in runners:  # warm-up (oneDNN kernel selection)
            r.step(r.first)
        # Interleaved rounds: every set-up steps once per round, right after the matmul peak probes,
        # so a burst of load from other jobs on this shared machine hits all of them alike.
        times = {id(r): [] for r in runners}
        util = {id(r): [] for r in runners}
        flops = {id(r): step_flops(r) for r in runners}
        peaks = {p: [] for p in precisions}
        for _ in range(args.steps):
            for p in precisions:
                peaks[p].append(matmul_peak(dtypes[p], reps=2))
            for r in runners:
                t = r.step(next(r.batches))
                times[id(r)].append(t)
                util[id(r)].append(flops[id(r)] / t / peaks[r.prec.name][-1])
        waits = {id(r): r.data_wait(args.steps) for r in runners
                 if r.prec.name == chosen and r.variant in (DEFAULT, "unet")}
        for r in runners:
            step_s = float(np.median(times[id(r)]))
            rows.append({
                "variant": r.variant, "model": r.model_name, "params": r.params, "amp": r.prec.name,
                "channels_last": r.prec.channels_last, "batch_size": r.B, "input_size": r.geo.input_size,
                "output_size": r.geo.output_size, "step_s": round(step_s, 4), "step_s_all": [round(t, 3) for t in times[id(r)]],
                "patches_per_s": round(r.B / step_s, 3),
                "data_wait": round(waits[id(r)], 4) if id(r) in waits else None,
                "gflop_per_step": round(flops[id(r)] / 1e9, 2), "achieved_gflop_s": round(flops[id(r)] / step_s / 1e9, 2),
                "flop_utilization": round(float(np.median(util[id(r)])), 4),
                "peak_precision": r.prec.name,
            })
            print(rows[-1])
        peak = {p: float(np.median(peaks[p] + [peaks0[p]])) for p in precisions}

    hdr = ("variant", "amp", "input_size", "output_size", "batch_size", "step_s", "patches_per_s", "data_wait",
           "gflop_per_step", "achieved_gflop_s", "flop_utilization")
    print("\n| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    for r in rows:
        print("| " + " | ".join(str(r[h]) for h in hdr) + " |")
    default = next(r for r in rows if r["variant"] == DEFAULT and r["amp"] == chosen)
    fp32 = next((r for r in rows if r["variant"] == DEFAULT and r["amp"] == "fp32"), None)
    bf16 = next((r for r in rows if r["variant"] == DEFAULT and r["amp"] == "bf16"), None)
    if fp32 is not None and bf16 is not None:
        ratios = [a / b for a, b in zip(fp32["step_s_all"], bf16["step_s_all"])]  # same rounds: paired
        speedup = round(float(np.median(ratios)), 3)
        print(f"\n{DEFAULT}: bf16 autocast vs fp32 = {speedup:.2f}x patches/s")
    else:
        speedup = None
        print(f"\n{DEFAULT}: bf16 not measured (no native bf16 on this CPU; amp: auto uses fp32)")
    result = {
        "machine": {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "native_bf16": native,
                    "python": sys.version.split()[0],
                    # the machine is shared: the load average says how much of it this run had
                    "load_average_1min_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)]},
        "matmul_peak_gflop_s": {p: round(peak[p] / 1e9, 2) if p in peak else None
                                for p in ("fp32", "bf16")},
        "amp_config": cfg["train"]["amp"], "amp_chosen": chosen,
        "config": str(Path(args.config).relative_to(ROOT)) if Path(args.config).is_relative_to(ROOT) else args.config,
        "steps": args.steps, "models": rows, "default": DEFAULT, "bf16_speedup": speedup,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    out = ROOT / "bench" / "results" / "train.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    from seg.io import write_json

    write_json(out, result)
    print(f"RESULT train patches_per_s={default['patches_per_s']} flop_utilization={default['flop_utilization']} "
          f"data_wait={default['data_wait']} amp={chosen}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
