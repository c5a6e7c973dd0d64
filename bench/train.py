"""Training throughput on this machine: patches/s per model family, data-wait fraction, fp32 vs bf16
autocast on CPU, and achieved FLOP/s as a fraction of the measured fp32 matmul peak.

Run: ``.venv/bin/python bench/train.py [--steps N] [--config configs/config.yaml]``

Everything is measured in this one run with the training code itself (``seg.train.sampling``
PatchDataset + DataLoader with ``train.num_workers`` augmentation workers, ``seg.train.loop.train_step``,
the config's loss, optimiser, patch size, batch size, channels_last and determinism settings) on
real ISBI 2012 slices (full 512^2, with weight maps, written to a temporary canonical folder).

- peak: best of 3 timed 2048^3 fp32 (and bf16) matmuls, in FLOP/s.
- per model: 1 warm-up step, then ``--steps`` timed steps; patches/s = batch / mean step time;
  data_wait = time blocked on the loader / total step time; FLOPs of one training step (forward +
  backward) from ``torch.utils.flop_counter.FlopCounterMode`` -> achieved FLOP/s and utilisation.
- the default model (unet-resnet34) is also run with bf16 autocast.

Writes bench/results/train.json and ends with ``RESULT train patches_per_s=<x> flop_utilization=<f>
data_wait=<f>`` for the default model in the config's default precision.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "isbi2012"
MODELS = ("unet", "unet-resnet34", "unet-densenet121", "fcn8s")  # config variant names
DEFAULT = "unet-resnet34"


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 3) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def step_flops(model, batch, optimizer, scaler, loss_fn, prec) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    from seg.train.loop import train_step

    with FlopCounterMode(display=False) as fc:
        train_step(model, batch, optimizer, scaler, loss_fn, prec)
    return int(fc.get_total_flops())


def bench_model(cfg: dict, variant: str, ds_dir: Path, *, steps: int, amp: str | None, peak: float) -> dict:
    from seg.config import variant_section
    from seg.train.device import precision_for, seed_everything
    from seg.train.loop import build_training_model, train_step
    from seg.train.losses import build_loss, needs_weights
    from seg.train.optim import build_optimizer
    from seg.train.sampling import PatchDataset, load_training_slices, make_loader, patch_geometry

    tcfg = variant_section(cfg, variant, "train")
    if amp is not None:
        tcfg["amp"] = amp
    seed_everything(0)
    model = build_training_model({**cfg, "variants": {variant: {**cfg["variants"][variant], "pretrained": "none"}}},
                                 "isbi2012", variant, 2)
    geo = patch_geometry(model, int(tcfg["patch_size"]))
    data = PatchDataset(load_training_slices(ds_dir, "train", with_weights=needs_weights(tcfg["loss"])), geo,
                        augment_cfg=variant_section(cfg, variant, "augment"), seed=0,
                        border_sampling=float(tcfg["border_sampling"]))
    prec = precision_for(tcfg, torch.device("cpu"))
    model = prec.prepare_model(model)
    opt = build_optimizer(model.parameters(), tcfg["optimizer"])
    scaler = prec.scaler()
    loss_fn = build_loss(tcfg["loss"])
    B = int(tcfg["batch_size"])
    loader = make_loader(data, start=0, stop=steps + 2, batch_size=B, rank=0, world_size=1,
                         num_workers=int(tcfg["num_workers"]), seed=0)
    it = iter(loader)
    first = next(it)
    train_step(model, first, opt, scaler, loss_fn, prec)  # warm-up (oneDNN kernel selection)
    wait = total = 0.0
    tick = time.perf_counter()
    for _ in range(steps):
        batch = next(it)
        got = time.perf_counter()
        train_step(model, batch, opt, scaler, loss_fn, prec)
        done = time.perf_counter()
        wait, total = wait + got - tick, total + done - tick
        tick = done
    del it, loader
    flops = step_flops(model, first, opt, scaler, loss_fn, prec)
    step_s = total / steps
    return {
        "variant": variant, "model": cfg["variants"][variant]["model"], "params": sum(p.numel() for p in model.parameters()),
        "amp": prec.name, "channels_last": prec.channels_last, "batch_size": B,
        "input_size": geo.input_size, "output_size": geo.output_size, "step_s": round(step_s, 4),
        "patches_per_s": round(B / step_s, 3), "data_wait": round(wait / total, 4),
        "gflop_per_step": round(flops / 1e9, 2), "achieved_gflop_s": round(flops / step_s / 1e9, 2),
        "flop_utilization": round(flops / step_s / peak, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "config.yaml"))
    ap.add_argument("--steps", type=int, default=3, help="timed steps per model (default 3)")
    ap.add_argument("--slices", type=int, default=4, help="ISBI training slices to sample from (default 4)")
    args = ap.parse_args()

    import tifffile

    from seg.config import load_config
    from seg.train.device import configure_determinism
    from seg.train.toy import write_isbi_subset

    t_start = time.perf_counter()
    cfg = load_config(args.config)
    configure_determinism(bool(cfg["train"]["deterministic"]), torch.device("cpu"))
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"matmul 2048^3 peak: fp32 {peak32 / 1e9:.1f} GFLOP/s, bf16 {peak16 / 1e9:.1f} GFLOP/s "
          f"({torch.get_num_threads()} threads)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ds = write_isbi_subset(Path(tmp) / "isbi2012", tifffile.imread(SHARED / "train-volume.tif"),
                               tifffile.imread(SHARED / "train-labels.tif"), splits=(args.slices, 0, 0))
        for v in MODELS:
            rows.append(bench_model(cfg, v, ds, steps=args.steps, amp=None, peak=peak32))
            print(rows[-1])
        rows.append(bench_model(cfg, DEFAULT, ds, steps=args.steps, amp="bf16", peak=peak32))
        print(rows[-1])

    hdr = ("variant", "amp", "input_size", "output_size", "batch_size", "step_s", "patches_per_s", "data_wait",
           "gflop_per_step", "achieved_gflop_s", "flop_utilization")
    print("\n| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    for r in rows:
        print("| " + " | ".join(str(r[h]) for h in hdr) + " |")
    default = next(r for r in rows if r["variant"] == DEFAULT and r["amp"] == "fp32")
    bf16 = next(r for r in rows if r["variant"] == DEFAULT and r["amp"] == "bf16")
    speedup = bf16["patches_per_s"] / default["patches_per_s"]
    print(f"\n{DEFAULT}: bf16 autocast vs fp32 = {speedup:.2f}x patches/s")
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": sys.version.split()[0]},
        "matmul_peak_gflop_s": {"fp32": round(peak32 / 1e9, 2), "bf16": round(peak16 / 1e9, 2)},
        "config": str(Path(args.config).relative_to(ROOT)) if Path(args.config).is_relative_to(ROOT) else args.config,
        "steps": args.steps, "models": rows, "default": DEFAULT, "bf16_speedup": round(speedup, 3),
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    out = ROOT / "bench" / "results" / "train.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    from seg.io import write_json

    write_json(out, result)
    print(f"RESULT train patches_per_s={default['patches_per_s']} flop_utilization={default['flop_utilization']} "
          f"data_wait={default['data_wait']}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
