"""Training throughput on this machine: patches/s per model family, data-wait fraction, fp32 vs bf16
autocast on CPU, and achieved FLOP/s as a fraction of the measured matmul peak of the precision used.

Run: ``.venv/bin/python bench/train.py [--steps N] [--config configs/config.yaml]``

Everything is measured in this one run with the training code itself (``seg.train.sampling``
PatchDataset + DataLoader with ``train.num_workers`` augmentation workers, ``seg.train.loop.train_step``,
the config's loss, optimiser, patch size, batch size, channels_last and determinism settings) on
real ISBI 2012 slices (full 512^2, with weight maps, written to a temporary canonical folder).

Precisions: every model family runs in both fp32 and bf16 autocast, on every CPU (where bf16 is
only emulated, an AVX2-only CPU, its steps are several times slower: measured so that the claim
"auto picks the faster one" is checked there too). ``amp: auto``'s choice for each family is made
by the pipeline's own selection (``seg.device.precision_for``: on a CPU with native bf16 the timed
probe of ``seg.precision``, run afresh here in a temporary cache; elsewhere fp32).

The machine is shared with other jobs, whose load comes in bursts, so the comparisons are paired:
after one warm-up step of every set-up, ``--steps`` rounds run; each round probes the matmul peak
(2048^3, best of 2) of each precision and then times one training step of every set-up. A burst
hits all of a round alike.

- patches/s = batch / median step time (compute only: batches are prefetched).
- flop_utilization = median over rounds of (FLOPs of one step / step time) / that round's matmul
  peak of the step's own precision (fp32 steps against the fp32 peak, bf16 steps against the bf16
  peak); FLOPs are nominal, from ``torch.utils.flop_counter.FlopCounterMode`` over one training step
  (forward + backward), so a value near 1 means the convolutions run at matmul speed.
- flop_utilization_vs_best_peak: the same against the larger of the two peaks (bf16's peak is half
  fp32's on some CPUs, where "0.7 of the bf16 peak" is a slow step).
- speedup_auto_vs_other (per family) = median over rounds of the paired (step time in the other
  precision / step time in auto's); auto_is_fastest (per family) = speedup_auto_vs_other >= 1 /
  MARGIN (auto's precision is faster, or within the probe's 5 % tie band, where it keeps fp32).
- data_wait = time blocked on the loader / step time, over ``--steps`` consecutive steps with a
  fresh loader (as in training; its first batch, with worker start-up, is not counted), measured for
  the default model and for the fastest family (classic U-Net, the hardest case for the loader), in
  the config's precision.

Writes bench/results/train.json and ends with ``RESULT train patches_per_s=<x> flop_utilization=<f>
data_wait=<f> amp=<fp32|bf16> auto_is_fastest=<0|1> speedup_auto_vs_other=<x>
flop_utilization_min=<f>``: the first four for the default model in auto's precision, then
auto_is_fastest over all families (1 = every family), the smallest speedup_auto_vs_other and the
smallest flop_utilization (auto's precision against its own peak) over the families.
"""

from __future__ import annotations

import argparse
import os
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

        from seg.settings.plan import data_plan

        tcfg = data_plan(cfg, "isbi2012", ds_dir=ds_dir).train(variant)  # patch_size: the config's or the plan's
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


def auto_choice(cfg: dict, runner: Runner) -> dict:
    """What ``amp: auto`` picks for this family's training run (the pipeline's own selection)."""
    from seg.device import precision_for

    tcfg = {**runner.tcfg, "amp": "auto"}
    size = runner.geo.input_size
    prec = precision_for(tcfg, torch.device("cpu"), model=runner.model, mode="train",
                         shape=(runner.B, 1, size, size))
    return prec.record()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "config.yaml"))
    ap.add_argument("--steps", type=int, default=3, help="timed steps per model (default 3)")
    ap.add_argument("--slices", type=int, default=4, help="ISBI training slices to sample from (default 4)")
    ap.add_argument("--models", default=",".join(MODELS), help=f"config variants (default {','.join(MODELS)})")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]

    import tifffile

    from seg.settings import load_config
    from seg.device import configure_determinism, cpu_has_native_bf16
    from seg.precision import MARGIN, cpu_model
    from toydata import write_isbi_subset

    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    cfg = load_config(args.config)
    configure_determinism(bool(cfg["train"]["deterministic"]), torch.device("cpu"))
    native = cpu_has_native_bf16()
    precisions = ["fp32", "bf16"]
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks0 = {p: matmul_peak(dtypes[p]) for p in precisions}
    print("matmul 2048^3 peak: " + ", ".join(f"{p} {v / 1e9:.1f} GFLOP/s" for p, v in peaks0.items())
          + f" ({torch.get_num_threads()} threads; {'native' if native else 'no native'} bf16)")
    rows, families = [], []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SEG_CACHE_DIR"] = str(Path(tmp) / "precision-cache")  # auto's probe runs afresh
        ds = write_isbi_subset(Path(tmp) / "isbi2012", tifffile.imread(SHARED / "train-volume.tif"),
                               tifffile.imread(SHARED / "train-labels.tif"), splits=(args.slices, 0, 0))
        amp_of = {"fp32": "none", "bf16": "bf16"}
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # bf16 asked for on an emulating CPU
            runners = {(v, p): Runner(cfg, v, ds, amp=amp_of[p]) for v in models for p in precisions}
        auto = {v: auto_choice(cfg, runners[(v, "fp32")]) for v in models}
        for v in models:
            print(f"{v}: amp auto -> {auto[v]['amp']} ({auto[v]['source']}, probe bf16/fp32 speed "
                  f"{auto[v]['bf16_vs_fp32_speed']})")
        for r in runners.values():  # warm-up (oneDNN kernel selection)
            r.step(r.first)
        # Interleaved rounds: every set-up steps once per round, right after the matmul peak probes,
        # so a burst of load from other jobs on this shared machine hits all of them alike.
        times = {k: [] for k in runners}
        util = {k: [] for k in runners}
        util_best = {k: [] for k in runners}
        flops = {k: step_flops(r) for k, r in runners.items()}
        peaks = {p: [] for p in precisions}
        for _ in range(args.steps):
            for p in precisions:
                peaks[p].append(matmul_peak(dtypes[p], reps=2))
            best = max(peaks[p][-1] for p in precisions)
            for k, r in runners.items():
                t = r.step(next(r.batches))
                times[k].append(t)
                util[k].append(flops[k] / t / peaks[k[1]][-1])
                util_best[k].append(flops[k] / t / best)
        waits = {(v, auto[v]["amp"]): runners[(v, auto[v]["amp"])].data_wait(args.steps)
                 for v in models if v in (DEFAULT, "unet")}
        for (v, p), r in runners.items():
            step_s = float(np.median(times[(v, p)]))
            rows.append({
                "variant": v, "model": r.model_name, "params": r.params, "amp": p, "auto": p == auto[v]["amp"],
                "channels_last": r.prec.channels_last, "batch_size": r.B, "input_size": r.geo.input_size,
                "output_size": r.geo.output_size, "step_s": round(step_s, 4),
                "step_s_all": [round(t, 3) for t in times[(v, p)]], "patches_per_s": round(r.B / step_s, 3),
                "data_wait": round(waits[(v, p)], 4) if (v, p) in waits else None,
                "gflop_per_step": round(flops[(v, p)] / 1e9, 2), "achieved_gflop_s": round(flops[(v, p)] / step_s / 1e9, 2),
                "flop_utilization": round(float(np.median(util[(v, p)])), 4),
                "flop_utilization_vs_best_peak": round(float(np.median(util_best[(v, p)])), 4),
                "peak_precision": p,
            })
            print(rows[-1])
        for v in models:
            mine, other = auto[v]["amp"], "bf16" if auto[v]["amp"] == "fp32" else "fp32"
            paired = [b / a for a, b in zip(times[(v, mine)], times[(v, other)])]  # same rounds
            speedup = float(np.median(paired))
            families.append({"variant": v, "auto": auto[v], "step_s_fp32": float(np.median(times[(v, "fp32")])),
                             "step_s_bf16": float(np.median(times[(v, "bf16")])),
                             "bench_bf16_vs_fp32_speed": round(float(np.median(
                                 [a / b for a, b in zip(times[(v, "fp32")], times[(v, "bf16")])])), 3),
                             "speedup_auto_vs_other": round(speedup, 3),
                             "auto_is_fastest": bool(speedup >= 1 / MARGIN),
                             "flop_utilization": next(r["flop_utilization"] for r in rows
                                                      if r["variant"] == v and r["amp"] == mine)})
        peak = {p: float(np.median(peaks[p] + [peaks0[p]])) for p in precisions}

    hdr = ("variant", "amp", "auto", "input_size", "batch_size", "step_s", "patches_per_s", "data_wait",
           "gflop_per_step", "achieved_gflop_s", "flop_utilization", "flop_utilization_vs_best_peak")
    print("\n| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    for r in rows:
        print("| " + " | ".join(str(r[h]) for h in hdr) + " |")
    fhdr = ("variant", "auto", "source", "probe bf16/fp32 speed", "bench bf16/fp32 speed", "speedup_auto_vs_other",
            "auto_is_fastest")
    print("\n| " + " | ".join(fhdr) + " |\n|" + "---|" * len(fhdr))
    for f in families:
        print(f"| {f['variant']} | {f['auto']['amp']} | {f['auto']['source']} | {f['auto']['bf16_vs_fp32_speed']} | "
              f"{f['bench_bf16_vs_fp32_speed']} | {f['speedup_auto_vs_other']} | {int(f['auto_is_fastest'])} |")
    default_v = DEFAULT if DEFAULT in models else models[0]
    chosen = auto[default_v]["amp"]
    default = next(r for r in rows if r["variant"] == default_v and r["amp"] == chosen)
    all_fastest = int(all(f["auto_is_fastest"] for f in families))
    min_speedup = min(f["speedup_auto_vs_other"] for f in families)
    min_util = min(f["flop_utilization"] for f in families)
    result = {
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "native_bf16": native, "python": sys.version.split()[0],
                    # the machine is shared: the load average says how much of it this run had
                    "load_average_1min_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)]},
        "matmul_peak_gflop_s": {p: round(peak[p] / 1e9, 2) for p in precisions},
        "amp_config": cfg["train"]["amp"], "amp_chosen_default": chosen, "margin": MARGIN,
        "config": str(Path(args.config).relative_to(ROOT)) if Path(args.config).is_relative_to(ROOT) else args.config,
        "steps": args.steps, "models": rows, "families": families, "default": default_v,
        "auto_is_fastest": all_fastest, "speedup_auto_vs_other_min": min_speedup, "flop_utilization_min": min_util,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    out = ROOT / "bench" / "results" / "train.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    from seg.io import write_json

    write_json(out, result)
    print(f"RESULT train patches_per_s={default['patches_per_s']} flop_utilization={default['flop_utilization']} "
          f"data_wait={default['data_wait']} amp={chosen} auto_is_fastest={all_fastest} "
          f"speedup_auto_vs_other={min_speedup} flop_utilization_min={min_util}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
