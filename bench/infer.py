"""Benchmark: tiled inference of the 30-slice ISBI 2012 test volume, per model family.

For each model (a small same-padding U-Net, smp U-Net ResNet-34, the valid-padding U-Net) and each
slice, interleaved so that load changes on a shared machine hit all methods alike:

- ``ours``: ``seg.infer.predictor.predict_slice``, exactly what ``seg predict`` runs per slice (the
  tiler of ``seg.infer.tiling``: tiles cut by two gathers, balanced batches of at most ``--batch``,
  inference mode; the network as ``seg.infer.network`` prepares it: batch norms folded, channels_last),
  fp32;
- ``monai``: ``monai.inferers.sliding_window_inference`` with its default settings (sw_batch_size 1,
  fp32, contiguous layout, under ``torch.no_grad``) at the same tile, overlap (0.25) and blending
  (gaussian), softmax per tile. MONAI cannot run a valid-padding network (its output tile is smaller
  than its input tile), so for the valid U-Net the baseline is our overlap-tile path with MONAI's
  default settings (batch 1, contiguous, fp32) and max_abs_diff is against the whole-slice result;
- ``forward``: the pure forward passes of the same tiles (pre-cut, batched as ours), no stitching;
- ``ours_auto``: ours as ``seg predict`` runs it by default, ``inference.amp: auto``: the precision
  the pipeline's timed probe picks for this model and tile batch on this machine
  (:func:`seg.infer.predictor.inference_precision`, :mod:`seg.precision`; a fresh cache in a temporary
  folder unless ``SEG_CACHE_DIR`` is set), bf16 autocast where it measured faster, else fp32 (then
  ``ours_auto`` is ``ours``);
- ``ours_bf16``: ours under bf16 autocast whatever the probe says (bf16 speed-up = best fp32 slice /
  best bf16 slice over the same slices; on every ``--extras-every``-th slice only, time budget).

All methods run in one process, so settings of the process apply to every method alike: the
allocator setting ours makes on its first call (``seg.infer.network.keep_freed_memory``) speeds up
the baseline as well.

The models are untrained (random init, seed 0); their batch-norm statistics are re-estimated on 4
training slices (:func:`calibrate_batch_norm`) so that logits have a trained model's scale.

overhead_vs_ideal = median over slices of (ours / forward - 1), each slice's two times measured
back to back in the same round (paired, so a burst of load hits both): what tiling, blending and
stitching add to the bare forward passes of the same tiles. The JSON also holds the best-of-run
form (best slice of ours / ideal - 1, ideal = tiles per slice x the best per-tile forward time over
batch sizes 1..batch and repeats), which can fall below 0 when one fast slice meets a slower probe.
speedup_vs_monai = best per-slice time of monai / best of ours_auto: what a user gets from ``seg
predict`` against MONAI's defaults (best-of-N is robust to the load of a shared machine; the median
per-slice ratio and the ratio of totals are in the JSON). speedup_vs_monai_fp32 = the same for ours
in fp32, i.e. what the tiler and the prepared network give at equal precision; in fp32 it cannot
exceed the peak bound printed below (fp32 peak / the baseline's GFLOP/s).
max_abs_diff = max |ours - monai| (fp32), and for the valid U-Net also |ours - whole slice|;
auto_max_abs_diff = max |ours_auto - ours| (bf16 rounding where auto is bf16, else 0).

Roofline: every family's GFLOP per tile (``torch.utils.flop_counter``), the GFLOP/s of ours and of
the baseline at their best slice, against the machine's fp32 peak (best of a 2048^3 sgemm): a
speed-up beyond peak / baseline GFLOP/s is impossible without fewer FLOPs.

Run: ``.venv/bin/python bench/infer.py [--slices 30] [--models unet-same,unet-resnet34,unet-valid]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seg.device import Precision  # noqa: E402
from seg.infer.network import inference_predictor  # noqa: E402
from seg.infer.tiles import balanced_batch, plan_tiles  # noqa: E402
from seg.infer.predictor import inference_precision, predict_slice, tile_geometry  # noqa: E402
from seg.infer.tiling import predict_tiled  # noqa: E402
from seg.io import write_json  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "isbi2012" / "test-volume.tif"
OVERLAP, BLEND, BATCH, TILE = 0.25, "gaussian", 4, 256


def cpu_name() -> str:
    """CPU model and its bf16 instruction sets (from /proc/cpuinfo; the platform's name elsewhere)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    isa = [f for f in ("avx512_bf16", "amx_bf16") if f in flags] or ["no native bf16"]
    return f"{model} ({', '.join(isa)}; {torch.get_num_threads()} threads)"


def load_volume(n: int) -> np.ndarray:
    import tifffile

    vol = tifffile.imread(DATA)[:n].astype(np.float32)
    mean = vol.mean(axis=(1, 2), keepdims=True)
    std = vol.std(axis=(1, 2), keepdims=True)
    return (vol - mean) / std


def build_models(names: list[str]) -> dict[str, tuple[torch.nn.Module, str]]:
    """name -> (model in eval mode, where it came from)."""
    out = {}
    from seg.models import build_model

    torch.manual_seed(0)
    for name in names:
        if name == "unet-same":
            m, src = build_model("unet", padding="same", base_channels=16, depth=4), "seg.models unet same b16 d4"
        elif name == "unet-resnet34":
            m, src = build_model("unet-resnet34"), "seg.models unet-resnet34 (random init)"
        elif name == "unet-valid":
            m, src = build_model("unet", padding="valid", base_channels=16, depth=4), "seg.models unet valid b16 d4"
        else:
            raise SystemExit(f"unknown model {name!r}")
        calibrate_batch_norm(m)
        out[name] = (m.eval(), src)
    return out


def calibrate_batch_norm(model: torch.nn.Module, n: int = 4) -> None:
    """Random-init BatchNorm running stats (mean 0, var 1) let activations grow layer after layer
    (a random ResNet-34 U-Net then outputs logits up to ~360, so fp32 rounding of a different conv
    algorithm shows up as 1e-4 in the probabilities). Re-estimate them on ``n`` training slices
    (cumulative average, no gradients) so the untrained models have a trained model's logit
    scale (|logit| < ~10). No-op for models without batch norm."""
    import tifffile

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    x = tifffile.imread(DATA.with_name("train-volume.tif"))[:n, :256, :256].astype(np.float32)
    x = (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(x)[:, None])
    model.eval()


def softmax(fn):
    return lambda b: torch.softmax(fn(b).float(), 1)


def time_call(fn):
    t0 = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t0


def tile_gflop(model, size_in: int) -> float:
    """GFLOP of one forward pass over one (1, 1, size_in, size_in) tile (torch's flop counter)."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        copy.deepcopy(model).eval()(torch.zeros(1, 1, size_in, size_in))
    return counter.get_total_flops() / 1e9


def fp32_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of an n^3 matmul (torch's BLAS) on all threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(time_call(lambda: a @ b)[1] for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def best_tile_forward(pred, size_in: int, batch: int, repeats: int = 3) -> float:
    """Best per-tile forward time (s) of the prepared predictor ``pred`` over batch sizes 1..batch."""
    best = float("inf")
    with torch.inference_mode():
        for b in range(1, batch + 1):
            x = torch.randn(b, 1, size_in, size_in)
            pred(x)
            for _ in range(repeats):
                _, t = time_call(lambda: pred(x))
                best = min(best, t / b)
    return best


def whole_slice_valid(model, image, border):
    """Whole-slice result of a valid U-Net on the largest legal square crop of ``image``:
    returns (crop, probabilities of the crop)."""
    from seg.models import input_size_for, output_size

    s = min(image.shape)
    while output_size(model, input_size_for(model, s)) > min(image.shape):
        s -= 1
    image = np.ascontiguousarray(image[:s, :s])
    x = np.pad(image, border, mode="reflect")
    model.to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        return image, torch.softmax(model(torch.from_numpy(x)[None, None]), 1)[0].numpy()


def bench_model(name, model, vol, args) -> dict:
    import copy

    from monai.inferers import sliding_window_inference

    tile, border, align = tile_geometry(model, TILE)
    corners = plan_tiles(vol.shape[1:], tile, OVERLAP, align if border else 1)
    size_in = tile + 2 * border
    cpu = torch.device("cpu")
    b = balanced_batch(len(corners), args.batch)
    plain = copy.deepcopy(model).eval()  # contiguous fp32 forward, MONAI's default usage
    cfg = {"tile": TILE, "overlap": OVERLAP, "blend": BLEND, "batch_size": args.batch, "tta": False}

    def ours(img, amp="none"):  # exactly what seg predict runs per slice
        return predict_slice(model, img, {**cfg, "amp": amp}, cpu)

    def baseline(img):
        if border:
            return predict_tiled(img, plain, tile=tile, overlap=OVERLAP, blend=BLEND, batch_size=1,
                                 border=border, align=align)
        with torch.no_grad():
            out = sliding_window_inference(torch.from_numpy(img)[None, None], tile, 1, softmax(plain),
                                           overlap=OVERLAP, mode=BLEND)
        return out[0].numpy()

    fast = inference_predictor(model, Precision(cpu, None))  # the network ours runs (prepared once)

    def forward_only(img):
        xp = torch.from_numpy(np.pad(img, border, mode="reflect") if border else img)
        if border:  # same tiles as ours (aligned grid may extend past the image: pad after)
            gh = max(c[0] for c in corners) + size_in
            xp = torch.from_numpy(np.pad(xp.numpy(), ((0, gh - xp.shape[0]), (0, gh - xp.shape[1])), mode="reflect"))
        tiles = torch.stack([xp[None, y:y + size_in, x:x + size_in] for y, x in corners])
        with torch.inference_mode():
            t0 = time.perf_counter()
            for i in range(0, len(tiles), b):
                fast(tiles[i:i + b])
            return time.perf_counter() - t0

    auto = inference_precision(model, {**cfg, "amp": "auto"}, cpu)  # the probe (cached), as seg predict
    print(f"  {name}: amp auto -> {auto.name} ({auto.source}, bf16/fp32 speed {auto.ratio})", flush=True)
    ours(vol[0]), baseline(vol[0]), ours(vol[0], "bf16"), ours(vol[0], "auto")  # warm-up (oneDNN kernels)
    per_tile = best_tile_forward(fast, size_in, b)
    rows = {"ours": [], "monai": [], "forward": [], "ours_auto": [], "ours_bf16": [], "ours_for_bf16": []}
    max_diff = max_diff_whole = max_diff_bf16 = max_diff_auto = 0.0
    for i, img in enumerate(vol):
        res = {}
        for k in np.random.default_rng(i).permutation(3):  # interleaved, order varies per slice
            if k == 0:
                res["ours"], t = time_call(lambda: ours(img))
                rows["ours"].append(t)
            elif k == 1:
                res["monai"], t = time_call(lambda: baseline(img))
                rows["monai"].append(t)
            else:
                rows["forward"].append(forward_only(img))
        if auto.dtype is None:  # auto is fp32: seg predict runs exactly ours
            rows["ours_auto"].append(rows["ours"][-1])
        else:
            res["auto"], t = time_call(lambda: ours(img, "auto"))
            rows["ours_auto"].append(t)
            max_diff_auto = max(max_diff_auto, float(np.abs(res["auto"] - res["ours"]).max()))
        extras = i % args.extras_every == 0
        if extras:
            res["bf16"], t = time_call(lambda: ours(img, "bf16"))
            rows["ours_bf16"].append(t)
            rows["ours_for_bf16"].append(rows["ours"][-1])
            max_diff_bf16 = max(max_diff_bf16, float(np.abs(res["bf16"] - res["ours"]).max()))
        if border and i < args.whole_ref:
            crop, ref = whole_slice_valid(plain, img, border)
            max_diff_whole = max(max_diff_whole, float(np.abs(ours(crop) - ref).max()))
        max_diff = max(max_diff, float(np.abs(res["ours"] - res["monai"]).max()))
        extra = f" bf16 {rows['ours_bf16'][-1]:.2f}s" if extras else ""
        print(f"  {name} slice {i:2d}: ours {rows['ours'][-1]:.2f}s auto ({auto.name}) {rows['ours_auto'][-1]:.2f}s "
              f"monai {rows['monai'][-1]:.2f}s fwd {rows['forward'][-1]:.2f}s{extra}", flush=True)
    n_tiles = len(corners)
    gflop = tile_gflop(model, size_in)
    # best per-tile forward: the batch-size sweep or the best forward-only pass over a slice's tiles
    per_tile = min(per_tile, float(np.min(rows["forward"])) / n_tiles)
    ideal_slice = n_tiles * per_tile
    tot = {k: float(np.sum(v)) for k, v in rows.items()}
    return {
        "model": name, "tile": tile, "border": border, "input_tile": size_in, "align": align,
        "tiles_per_slice": n_tiles, "batch": b, "slices": len(vol),
        "seconds_total": tot, "seconds_best_slice": {k: float(np.min(v)) for k, v in rows.items()},
        "best_per_tile_forward_s": per_tile, "ideal_total_s": ideal_slice * len(vol),
        "amp_auto": auto.record(),
        "speedup_vs_monai": float(np.min(rows["monai"]) / np.min(rows["ours_auto"])),
        "speedup_vs_monai_total": tot["monai"] / tot["ours_auto"],
        "speedup_vs_monai_median_slice": float(np.median(np.array(rows["monai"]) / np.array(rows["ours_auto"]))),
        "speedup_vs_monai_fp32": float(np.min(rows["monai"]) / np.min(rows["ours"])),
        "speedup_vs_monai_fp32_total": tot["monai"] / tot["ours"],
        "speedup_vs_monai_fp32_median_slice": float(np.median(np.array(rows["monai"]) / np.array(rows["ours"]))),
        "auto_max_abs_diff": max_diff_auto,
        "overhead_vs_ideal": float(np.median(np.array(rows["ours"]) / np.array(rows["forward"])) - 1),
        "overhead_vs_ideal_best": float(np.min(rows["ours"])) / ideal_slice - 1,
        "overhead_vs_ideal_total": tot["ours"] / (ideal_slice * len(vol)) - 1,
        "max_abs_diff_vs_monai": max_diff,
        "max_abs_diff_vs_whole_slice": max_diff_whole if border else None,
        "bf16_speedup_vs_ours_fp32": float(np.min(rows["ours_for_bf16"]) / np.min(rows["ours_bf16"])),
        "bf16_speedup_vs_ours_fp32_total": tot["ours_for_bf16"] / tot["ours_bf16"],
        "bf16_max_abs_diff": max_diff_bf16,
        "baseline": ("ours at MONAI defaults (batch 1, contiguous)" if border
                     else "MONAI sliding_window_inference defaults"),
        "gflop_per_tile": gflop,
        "gflops_per_s_best_slice": {k: n_tiles * gflop / float(np.min(rows[k]))
                                    for k in ("ours", "ours_auto", "monai", "forward")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=30, help="slices of the test volume (default 30)")
    ap.add_argument("--models", default="unet-same,unet-resnet34,unet-valid")
    ap.add_argument("--batch", type=int, default=BATCH, help="most tiles per forward pass (default 4)")
    ap.add_argument("--whole-ref", type=int, default=3, help="slices checked against the whole-slice "
                    "result for the valid U-Net (default 3)")
    ap.add_argument("--extras-every", type=int, default=3, help="time forward-only and bf16 passes on "
                    "every k-th slice (default 3)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "infer.json"))
    args = ap.parse_args()
    if "SEG_CACHE_DIR" not in os.environ:  # measure amp: auto afresh, not from the user's cache
        import atexit
        import shutil
        import tempfile

        os.environ["SEG_CACHE_DIR"] = tempfile.mkdtemp(prefix="seg-bench-cache-")
        atexit.register(shutil.rmtree, os.environ["SEG_CACHE_DIR"], ignore_errors=True)
    vol = load_volume(args.slices)
    models = build_models(args.models.split(","))
    results = []
    for name, (model, src) in models.items():
        print(f"{name}: {src}", flush=True)
        r = bench_model(name, model, vol, args)
        r["source"] = src
        results.append(r)
    print()
    print("per-slice times are best of the run (s); auto = ours in the precision amp: auto measured faster;")
    print("speedup = best monai / best ours (auto, and fp32), median over slices in brackets; overhead =")
    print("median over slices of ours / forward-only of the same tiles - 1 (paired); diff = fp32 max |ours - ref|")
    print(f"{'model':14s} {'tiles':>5s} {'auto':>4s} {'ours':>6s} {'auto':>6s} {'monai':>6s} {'ideal':>6s} "
          f"{'speedup auto (med)':>18s} {'fp32 (med)':>12s} {'overhead':>8s} {'diff':>8s} {'whole':>8s} "
          f"{'auto diff':>9s} {'bf16 x':>6s}")
    for r in results:
        b = r["seconds_best_slice"]
        wd = r["max_abs_diff_vs_whole_slice"]
        whole = f"{wd:8.1e}" if wd is not None else f"{'-':>8s}"
        print(f"{r['model']:14s} {r['tiles_per_slice']:5d} {r['amp_auto']['amp']:>4s} {b['ours']:6.3f} "
              f"{b['ours_auto']:6.3f} {b['monai']:6.3f} {r['ideal_total_s'] / r['slices']:6.3f} "
              f"{r['speedup_vs_monai']:11.2f} ({r['speedup_vs_monai_median_slice']:4.2f}) "
              f"{r['speedup_vs_monai_fp32']:5.2f} ({r['speedup_vs_monai_fp32_median_slice']:4.2f}) "
              f"{r['overhead_vs_ideal']:8.3f} {r['max_abs_diff_vs_monai']:8.1e} "
              f"{whole} {r['auto_max_abs_diff']:9.2e} {r['bf16_speedup_vs_ours_fp32']:6.2f}")
    peak = fp32_peak_gflops()
    print(f"fp32 peak (2048^3 sgemm, {torch.get_num_threads()} threads): {peak:.0f} GFLOP/s; GFLOP/s at the best "
          "slice (ours / baseline) and the speed-up that peak would allow over the baseline:")
    for r in results:
        g = r["gflops_per_s_best_slice"]
        r["speedup_bound_at_peak"] = peak / g["monai"]
        print(f"  {r['model']:14s} {r['gflop_per_tile']:5.2f} GFLOP/tile: ours {g['ours']:5.0f}, baseline "
              f"{g['monai']:5.0f}; at peak {r['speedup_bound_at_peak']:4.2f}x")
    summary = {
        "speedup_vs_monai": min(r["speedup_vs_monai"] for r in results),
        "speedup_vs_monai_fp32": min(r["speedup_vs_monai_fp32"] for r in results),
        "amp": "/".join(sorted({r["amp_auto"]["amp"] for r in results})),
        "overhead_vs_ideal": max(r["overhead_vs_ideal"] for r in results),
        "max_abs_diff": max(max(r["max_abs_diff_vs_monai"], r["max_abs_diff_vs_whole_slice"] or 0) for r in results),
    }
    write_json(args.out, {
        "summary (worst over models)": summary, "models": results,
        "per_family": {r["model"]: {k: r[k] for k in (
            "amp_auto", "speedup_vs_monai", "speedup_vs_monai_median_slice", "speedup_vs_monai_fp32",
            "speedup_vs_monai_fp32_median_slice", "overhead_vs_ideal", "max_abs_diff_vs_monai", "auto_max_abs_diff",
            "max_abs_diff_vs_whole_slice", "bf16_speedup_vs_ours_fp32", "bf16_max_abs_diff", "gflop_per_tile",
            "gflops_per_s_best_slice", "speedup_bound_at_peak", "baseline")} for r in results},
        "fp32_peak_gflops": peak,
        "settings": {"tile": TILE, "overlap": OVERLAP, "blend": BLEND, "batch": args.batch, "slices": args.slices,
                     "threads": torch.get_num_threads()},
        "machine": {"cpu": cpu_name(), "torch": torch.__version__,
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    })
    print(f"RESULT infer speedup_vs_monai={summary['speedup_vs_monai']:.2f} "
          f"overhead_vs_ideal={summary['overhead_vs_ideal']:.3f} max_abs_diff={summary['max_abs_diff']:.1e} "
          f"amp={summary['amp']} speedup_vs_monai_fp32={summary['speedup_vs_monai_fp32']:.2f}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
