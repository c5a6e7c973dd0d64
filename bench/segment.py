"""Benchmark: ``seg segment`` (a model package on raw image files) vs the workflow's ``seg predict``
on the same slices, and ONNX Runtime vs PyTorch on the exported graph.

Setup (in a temporary folder): a canonical ISBI 2012 dataset of real slices (training slices 0-3
train, 4 val, 25-29 test, ``align_images`` on as in the default config), the default config's
``unet`` row (same padding, 16 base channels, depth 4, batch norm; tile 256, overlap 0.25, gaussian
blending, batch 4) at random init with batch-norm statistics re-estimated on training slices so
that its logits have a trained model's scale (as ``bench/infer.py``), a run folder with its
checkpoint, then ``seg package``. fp32 throughout (amp none, so the figures are comparable across
CPU kinds and the outputs must agree exactly); TTA off unless ``--tta``.

Paired measurements, interleaved (the order alternates per repeat, so load changes on a shared
machine hit both alike):

- ``predict``: ``seg.evaluate.predict.run_predict`` with ``--split test`` on one test slice (what the
  workflow's rule runs: model build, checkpoint load, canonical image, tiled inference, outputs
  written atomically);
- ``segment``: ``seg.export.segment.run_segment`` with the package on the same slice as a raw TIFF file
  (package load, input checks, tiled inference, outputs written atomically).
  The two calls of a slice run back to back (order alternating), so a load change on a shared
  machine hits both members of a pair alike. speed_vs_predict = median over the pairs (5 slices x
  repeats) of segment images/s / predict images/s (> 1: faster); the ratio of total times and
  each command's own overhead (wall time minus the time inside ``predict_slice``, the network
  work both share; it does not depend on the load) are in the JSON. max_abs_diff = max |segment -
  predict| of the probability maps (0 expected: the same computation).
- ``onnx`` vs ``torch``: the exported graph (``seg export --format onnx``: preprocessing, padding,
  network, softmax; whole image) on each test slice (512 x 512) with ONNX Runtime (CPU provider)
  and the same graph in PyTorch eager (inference mode, network in channels_last as seg runs it);
  the same number of threads for both.
  onnx_vs_torch = median over images and repeats of the paired ratio torch seconds / onnx seconds
  (> 1: ORT faster; the best-of ratio in the JSON).

Run: ``.venv/bin/python bench/segment.py [--repeats 5] [--threads 2] [--tta]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seg.io import write_json  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "isbi2012"
TRAIN, VAL, TEST = (0, 1, 2, 3), (4,), (25, 26, 27, 28, 29)


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def build_run(base: Path, tta: bool) -> dict:
    """Canonical dataset, config, run folder with a BN-calibrated random unet, and its package."""
    import tifffile
    import yaml
    from skimage.measure import label

    from seg.settings import load_config, run_config_hash
    from seg.data.canonical import canonical_writer
    from seg.kinds import get_kind
    from seg.packaging.build import build_package
    from seg.package.format import write_package
    from seg.models import build_model

    vol, lab = tifffile.imread(DATA / "train-volume.tif"), tifffile.imread(DATA / "train-labels.tif")
    data = base / "data"
    with canonical_writer(data / "isbi2012", name="isbi2012", kind=get_kind("isbi2012"), source={"bench": True},
                          align=True) as w:
        for split, idx in (("train", TRAIN), ("val", VAL), ("test", TEST)):
            for i in idx:
                w.add(f"train_{i:02d}", vol[i], split=split, frame=i,
                      instances=label(lab[i] == 255, connectivity=1), semantic=(lab[i] == 255).astype(np.uint8))
    params = {"padding": "same", "base_channels": 16, "depth": 4, "batch_norm": True}
    doc = {"data_dir": str(data), "datasets": {"isbi2012": {"kind": "isbi2012", "align_images": True}},
           "variants": {"unet": {"model": "unet", "params": params, "inference": {"tta": tta}}},
           "inference": {"tile": 256, "overlap": 0.25, "blend": "gaussian", "batch_size": 4, "device": "cpu",
                         "amp": "none"},
           "postprocess": {"calibrate": False}}
    (base / "config.yaml").write_text(yaml.safe_dump(doc))
    cfg = load_config(base / "config.yaml")
    run = base / "results" / "isbi2012" / "unet"
    (run / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    model = build_model("unet", **params)
    x = vol[list(TRAIN), :256, :256].astype(np.float32)
    x = (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(x)[:, None])
    model.eval()
    torch.save({"model": model.state_dict(), "iteration": 0}, run / "checkpoints" / "best.pt")
    (run / "train_summary.json").write_text(json.dumps({
        "dataset": "isbi2012", "variant": "unet", "model": "unet", "seed": 0, "iterations": 0,
        "config_hash": run_config_hash(cfg, "isbi2012", "unet")}))
    pkg = build_package(cfg, run)
    write_package(pkg, base / "package")
    single = {}  # one canonical view per test slice: seg predict --split test on that slice only
    meta = json.loads((data / "isbi2012" / "meta.json").read_text())
    for i in TEST:
        view = base / "single" / f"{i:02d}" / "isbi2012"
        view.mkdir(parents=True)
        for sub in ("images", "instances", "semantic"):
            (view / sub).symlink_to(data / "isbi2012" / sub)
        slices = [{**e, "split": "val"} if e["split"] == "test" and e["id"] != f"train_{i:02d}" else e
                  for e in meta["slices"]]
        (view / "meta.json").write_text(json.dumps({**meta, "slices": slices}))
        single[i] = view.parent
    raw = base / "raw"
    raw.mkdir()
    for i in TEST:
        shutil.copy(data / "isbi2012" / "images" / f"train_{i:02d}.tif", raw / f"train_{i:02d}.tif")
    return {"cfg": cfg, "run": run, "data": data, "package": base / "package", "raw": raw, "base": base,
            "single": single}


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_segment_vs_predict(r: dict, repeats: int) -> dict:
    import tifffile

    import seg.evaluate.predict as predict_module
    import seg.export.segment as segment_module
    from seg.export.segment import run_segment
    from seg.evaluate.predict import run_predict

    # time spent inside predict_slice (the network work both share), to separate each command's own
    # overhead (loading, reading, checks, post-processing, writing) from the load-sensitive compute
    inside: list[float] = []
    original = predict_module.predict_slice

    def counted(*a, **kw):
        t0 = time.perf_counter()
        out = original(*a, **kw)
        inside.append(time.perf_counter() - t0)
        return out

    predict_module.predict_slice = segment_module.predict_slice = counted  # both commands' network work
    rows = {"predict": [], "segment": []}
    overhead = {"predict": [], "segment": []}
    max_diff = 0.0
    for k in range(repeats + 1):  # repeat 0 warms both up (allocations, oneDNN kernels) and is not counted
        for j, i in enumerate(TEST):
            sid = f"train_{i:02d}"
            order = ("predict", "segment") if (k + j) % 2 else ("segment", "predict")
            for what in order:
                out = r["base"] / f"{what}_out"
                inside.clear()
                with contextlib.redirect_stderr(open(os.devnull, "w")):
                    if what == "predict":
                        _, t = timed(lambda: run_predict(r["cfg"], dataset="isbi2012", variant="unet",
                                                         checkpoint=r["run"] / "checkpoints" / "best.pt",
                                                         split="test", out=out, data_dir=r["single"][i],
                                                         device="cpu"))
                    else:
                        _, t = timed(lambda: run_segment(r["package"], [r["raw"] / f"{sid}.tif"], out, device="cpu"))
                if k:
                    rows[what].append(t)
                    overhead[what].append(t - sum(inside))
            a = tifffile.imread(r["base"] / "segment_out" / f"{sid}_prob.tif")
            b = tifffile.imread(r["base"] / "predict_out" / f"{sid}_prob.tif")
            max_diff = max(max_diff, float(np.abs(a - b).max()))
        if k:
            n = len(TEST)
            print(f"  repeat {k}: predict {n / sum(rows['predict'][-n:]):.2f} images/s, segment "
                  f"{n / sum(rows['segment'][-n:]):.2f} images/s", flush=True)
    predict_module.predict_slice = segment_module.predict_slice = original
    ratio = [p / s for p, s in zip(rows["predict"], rows["segment"])]  # per slice: segment images/s / predict's
    return {"calls": len(ratio), "seconds_per_call": rows,
            "images_per_s": {k: len(v) / float(np.sum(v)) for k, v in rows.items()},
            "images_per_s_best": {k: float(1 / np.min(v)) for k, v in rows.items()},
            "speed_vs_predict": float(np.median(ratio)), "speed_vs_predict_per_pair": ratio,
            "speed_vs_predict_total": float(np.sum(rows["predict"]) / np.sum(rows["segment"])),
            "max_abs_diff": max_diff, "seconds_outside_predict_slice": overhead,
            "seconds_outside_predict_slice_median": {k: float(np.median(v)) for k, v in overhead.items()}}


def bench_onnx_vs_torch(r: dict, repeats: int, threads: int) -> dict:
    import tifffile

    from seg.export.exporters import build_graph, onnx_session, run_exported, write_export
    from seg.packaging import load_package

    pkg = load_package(r["package"])
    out = r["base"] / "onnx"
    _, t_export = timed(lambda: write_export(pkg, "onnx", out))
    session = onnx_session(out / "model.onnx", threads=threads)
    graph = build_graph(pkg)
    graph.net.to(memory_format=torch.channels_last)  # as seg's own predictor runs it (faster on CPU)
    images = [tifffile.imread(r["raw"] / f"train_{i:02d}.tif").astype(np.float32)[None, None] for i in TEST]
    rows = {"onnx": [], "torch": []}
    max_diff = 0.0

    def torch_run(x):
        with torch.inference_mode():
            return graph(torch.from_numpy(x)).numpy()

    run_exported(out / "model.onnx", images[0], "onnx", session=session), torch_run(images[0])  # warm-up
    for k in range(repeats):
        for j, x in enumerate(images):
            order = ("onnx", "torch") if (k + j) % 2 else ("torch", "onnx")
            res = {}
            for what in order:
                if what == "onnx":
                    res[what], t = timed(lambda: run_exported(out / "model.onnx", x, "onnx", session=session))
                else:
                    res[what], t = timed(lambda: torch_run(x))
                rows[what].append(t)
            max_diff = max(max_diff, float(np.abs(res["onnx"] - res["torch"]).max()))
        print(f"  repeat {k + 1}: onnx {np.mean(rows['onnx'][-len(images):]):.3f} s/image, torch "
              f"{np.mean(rows['torch'][-len(images):]):.3f} s/image", flush=True)
    ratio = [t / o for t, o in zip(rows["torch"], rows["onnx"])]
    return {"images": len(images), "image_shape": list(images[0].shape), "seconds": rows,
            "images_per_s_best": {k: float(1 / np.min(v)) for k, v in rows.items()},
            "images_per_s_median": {k: float(1 / np.median(v)) for k, v in rows.items()},
            "onnx_vs_torch": float(np.median(ratio)),
            "onnx_vs_torch_best": float(np.min(rows["torch"]) / np.min(rows["onnx"])),
            "max_abs_diff": max_diff, "export_seconds": t_export,
            "exporter": json.loads((out / "export.json").read_text())["exporter"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="measured repeats per method (default 5)")
    ap.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads (default 2)")
    ap.add_argument("--tta", action="store_true", help="8-fold TTA in both (default off)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "segment.json"))
    args = ap.parse_args()
    import onnxruntime

    from seg.device import cpu_has_native_bf16

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]  # other jobs on a shared machine: context for the figures
    with tempfile.TemporaryDirectory(prefix="seg-bench-segment-") as tmp:
        print("building the dataset, run and package ...", flush=True)
        r = build_run(Path(tmp), args.tta)
        print("seg segment vs seg predict (one 512 x 512 test slice per call, paired):", flush=True)
        sp = bench_segment_vs_predict(r, args.repeats)
        print("ONNX Runtime vs PyTorch, exported graph, whole 512 x 512 images:", flush=True)
        ot = bench_onnx_vs_torch(r, args.repeats, args.threads)
    print()
    print("images/s: all calls (best call in brackets); ratio = median of paired ratios (segment: ratio of totals;"
          " onnx: best / best)")
    print(f"{'comparison':34s} {'images/s':>30s} {'ratio':>15s} {'max |diff|':>10s}")
    m, b = sp["images_per_s"], sp["images_per_s_best"]
    print(f"{'seg segment / seg predict':34s} {m['segment']:6.2f} ({b['segment']:5.2f}) / {m['predict']:6.2f} "
          f"({b['predict']:5.2f}) {sp['speed_vs_predict']:6.3f} ({sp['speed_vs_predict_total']:5.3f}) "
          f"{sp['max_abs_diff']:10.1e}")
    o = sp["seconds_outside_predict_slice_median"]
    print(f"{'  own overhead per call (s)':34s} {o['segment']:6.3f}         / {o['predict']:6.3f}")
    m, b = ot["images_per_s_median"], ot["images_per_s_best"]
    print(f"{'onnxruntime / torch (export graph)':34s} {m['onnx']:6.2f} ({b['onnx']:5.2f}) / {m['torch']:6.2f} "
          f"({b['torch']:5.2f}) {ot['onnx_vs_torch']:6.3f} ({ot['onnx_vs_torch_best']:5.3f}) "
          f"{ot['max_abs_diff']:10.1e}")
    write_json(args.out, {
        "summary": {"speed_vs_predict": sp["speed_vs_predict"], "onnx_vs_torch": ot["onnx_vs_torch"]},
        "segment_vs_predict": sp, "onnx_vs_torch": ot,
        "settings": {"model": "unet same b16 d4 bn (random init, BN re-estimated)", "tile": 256, "overlap": 0.25,
                     "blend": "gaussian", "batch": 4, "amp": "none", "tta": args.tta, "threads": args.threads,
                     "repeats": args.repeats, "slices": [f"train_{i:02d}" for i in TEST]},
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                    "native_bf16": cpu_has_native_bf16(), "load_average_start_end": [load_start, os.getloadavg()[0]],
                    "torch": torch.__version__,
                    "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    })
    print(f"RESULT segment speed_vs_predict={sp['speed_vs_predict']:.3f} onnx_vs_torch={ot['onnx_vs_torch']:.3f}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
