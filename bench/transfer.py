"""Models that travel: a package at other object scales (``--diameter``), and fine-tuning from it.

1. Base: the default run's GOWT1 row (configs/config.yaml ``unet``: its budget and settings),
   trained, calibrated on val and packaged here (or ``--base PACKAGE``).
2. Scale: GOWT1's held-out test frames shrunk to 0.5x and 0.25x (median nucleus diameter ~30 and
   ~15 px) and enlarged 2x, images bilinear with anti-aliasing, masks nearest; the package segments
   them with no resizing (``none``), with the frames' true diameter (``true``: the median
   equivalent diameter of their annotated nuclei) and with ``--diameter auto``; test SEG each.
3. Fine-tuning: the GOWT1 package on k = 1, 2, 4 annotated DIC-HeLa training frames (sparse gold
   and silver truth, as ingested), ``seg finetune`` with ``--steps`` steps and nothing held out,
   against ``seg finetune --scratch`` (the same model, target, recipe and steps from random weights,
   the frames at their own scale), scored on DIC-HeLa's test frames (SEG of the annotated cells),
   with wall time. Within-dataset check: the same on GOWT1 itself is not possible (its 6 annotated
   frames are all in the base's splits), so ``--within`` fine-tunes a DIC-HeLa package on k
   DIC-HeLa frames it did not train on (silver-truth frames outside its splits).

    SEG_RAW_ROOT=../shared/data .venv/bin/python bench/transfer.py [--steps 150] [--ks 1 2 4]

Prints the tables, writes bench/results/transfer.json and ends with one line
``RESULT transfer seg_half_none=... seg_half_auto=... seg_quarter_none=... seg_quarter_auto=...
seg_scratch_k1=... seg_finetune_k1=... gain_k1=... seconds_k1=... (k2, k4)``. fp32 (amp none)
throughout, so the figures do not depend on the CPU kind; ~35 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import tifffile
from skimage.transform import resize

from seg.data import canonical
from seg.data.fingerprint import equivalent_diameters
from seg.evaluate.calibrate import run_calibrate
from seg.evaluate.predict import run_predict
from seg.export.segment import package_scale, resolve_scale, segment_image
from seg.finetune import finetune
from seg.infer.rescale import resize_labels, scaled_shape
from seg.io import read_json, write_json
from seg.metrics.ctc import seg_measure
from seg.package import read_package, write_package
from seg.packaging import build_package
from seg.settings import load_config
from seg.train.loop import train
from seg.train.weight_maps import write_weights
from common import cpu_name, ensure_canonical

ROOT = Path(__file__).resolve().parents[1]
GOWT1, HELA = "Fluo-N2DH-GOWT1", "DIC-C2DH-HeLa"
SCALES = {"half": 0.5, "quarter": 0.25, "double": 2.0}
def base_package(cfg: dict, dataset: str, data: Path, work: Path, out: Path) -> Path:
    """Train, calibrate and package the config's ``unet`` row on ``dataset`` (fp32)."""
    if (out / "package.json").is_file():
        return out
    run = work / "results" / dataset / "unet"
    if not (data / dataset / "weights" / "class_weights.json").is_file():
        write_weights(cfg, dataset, data_dir=data)
    train(cfg, dataset, "unet", run, data_dir=data, device="cpu")
    run_predict(cfg, dataset=dataset, variant="unet", checkpoint=run / "checkpoints" / "best.pt", split="val",
                out=run / "pred" / "val", data_dir=data, device="cpu")
    run_calibrate(cfg, dataset=dataset, variant="unet", pred=run / "pred" / "val", out=run / "calibration.json",
                  data_dir=data)
    write_package(build_package(cfg, run, data_dir=data), out)
    return out


def frames(ds: Path, split: str) -> list[dict]:
    return [e for e in canonical.slices(canonical.load_meta(ds), split) if e.get("instances")]


def seg_of(pkg, images, masks, scale) -> float:
    preds = [segment_image(pkg, im, scale, device="cpu", amp="none")[1] for im in images]
    return float(seg_measure(masks, preds))


def scale_study(pkg, ds: Path) -> dict:
    """Test SEG of ``pkg`` on the test frames of ``ds`` at each scale: none / true / auto."""
    test = frames(ds, "test")
    images = [canonical.load_raw_image(ds, e) for e in test]
    masks = [canonical.load_instances(ds, e) for e in test]
    out = {"own": {"none": seg_of(pkg, images, masks, package_scale(pkg))}}
    for name, s in SCALES.items():
        imgs = [resize(im.astype(np.float32), scaled_shape(im.shape, s), order=1, preserve_range=True,
                       anti_aliasing=s < 1).astype(np.float32) for im in images]
        ms = [resize_labels(m, scaled_shape(m.shape, s)) for m in masks]
        true_d = float(np.median(np.concatenate([equivalent_diameters(m) for m in ms])))
        autos = [resolve_scale(pkg, "auto", im, device="cpu", amp="none") for im in imgs]
        auto_seg = float(seg_measure(ms, [segment_image(pkg, im, sc, device="cpu", amp="none")[1]
                                          for im, sc in zip(imgs, autos)]))
        out[name] = {"factor": s, "true_diameter": round(true_d, 2),
                     "auto_diameters": [round(a.diameter, 2) for a in autos],
                     "none": seg_of(pkg, imgs, ms, package_scale(pkg)),
                     "true": seg_of(pkg, imgs, ms, package_scale(pkg, true_d)), "auto": auto_seg}
    return out


def write_pairs(ds: Path, entries: list[dict], folder: Path) -> Path:
    """Cellpose-layout pairs (raw image, instance mask) of canonical ``entries`` in ``folder``."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for e in entries:
        tifffile.imwrite(folder / f"{e['id']}.tif", canonical.load_raw_image(ds, e))
        tifffile.imwrite(folder / f"{e['id']}_masks.tif", canonical.load_instances(ds, e).astype(np.uint16))
    return folder


def finetune_study(base: Path, ds: Path, ks: list[int], steps: int, work: Path, seed: int) -> dict:
    """SEG on ``ds``'s test frames after ``steps`` steps on k training frames, from ``base`` and from scratch."""
    train_frames = frames(ds, "train")
    rng = np.random.default_rng(seed)
    order = [train_frames[i] for i in rng.permutation(len(train_frames))]
    test = frames(ds, "test")
    images = [canonical.load_raw_image(ds, e) for e in test]
    masks = [canonical.load_instances(ds, e) for e in test]
    base_pkg = read_package(base)
    d_new = float(np.median(np.concatenate([equivalent_diameters(canonical.load_instances(ds, e))
                                            for e in train_frames])))
    rows = {"base_none": seg_of(base_pkg, images, masks, package_scale(base_pkg)),
            "base_diameter": seg_of(base_pkg, images, masks, package_scale(base_pkg, d_new)), "diameter": d_new}
    for k in ks:
        folder = write_pairs(ds, order[:k], work / f"pairs_k{k}")
        row = {"frames": [e["id"] for e in order[:k]]}
        for mode in ("scratch", "finetune"):
            out = work / f"{mode}_k{k}"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            s = finetune(base, folder, out, steps=steps, seed=seed, sparse=True, holdout=0, device="cpu",
                         scratch=mode == "scratch", work=work / "ft-work")
            row[f"seconds_{mode}"] = round(time.perf_counter() - t0, 1)
            pkg = read_package(out)
            row[mode] = seg_of(pkg, images, masks, package_scale(pkg))
            row[f"scale_{mode}"] = s.get("scale")
        row["gain"] = row["finetune"] - row["scratch"]
        rows[f"k{k}"] = row
        print(f"k={k}: scratch {row['scratch']:.3f}, finetune {row['finetune']:.3f} ({row['seconds_finetune']:.0f} s)",
              flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=150, help="fine-tuning (and scratch) steps")
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base", default=None, help="a GOWT1 package to start from (default: train one here)")
    ap.add_argument("--work", default=str(ROOT / "results" / "transfer"))
    ap.add_argument("--parts", nargs="+", choices=["scale", "finetune"], default=["scale", "finetune"],
                    help="what to measure; the other part's figures are kept from bench/results/transfer.json")
    args = ap.parse_args(argv)
    work, data = Path(args.work), ROOT / "data"
    work.mkdir(parents=True, exist_ok=True)
    cfg = load_config(ROOT / "configs" / "config.yaml")
    cfg["train"]["amp"] = "none"
    cfg["inference"]["amp"] = "none"
    for name in (GOWT1, HELA):
        ensure_canonical(data, name)
    t0 = time.perf_counter()
    base = Path(args.base) if args.base else base_package(cfg, GOWT1, data, work, work / "gowt1-package")
    base_s = time.perf_counter() - t0
    pkg = read_package(base)
    print(f"base package {base} (D = {pkg.scale['diameter']} px; {base_s:.0f} s)", flush=True)
    out_json = ROOT / "bench" / "results" / "transfer.json"
    old = read_json(out_json) if out_json.is_file() else {}
    scale = scale_study(pkg, data / GOWT1) if "scale" in args.parts else old["scale"]
    print(f"\nScale: {GOWT1} test frames, test SEG of the package (own scale: {scale['own']['none']:.3f})")
    print(f"{'frames':>8} {'true D':>7} {'auto D':>15} {'none':>6} {'true':>6} {'auto':>6}")
    for name in SCALES:
        r = scale[name]
        autos = "/".join(f"{d:.0f}" for d in r["auto_diameters"])
        print(f"{r['factor']:>7g}x {r['true_diameter']:>7.1f} {autos:>15} {r['none']:>6.3f} {r['true']:>6.3f} "
              f"{r['auto']:>6.3f}", flush=True)
    ft = (finetune_study(base, data / HELA, args.ks, args.steps, work, args.seed) if "finetune" in args.parts
          else old["finetune"])
    print(f"\nFine-tuning: the {GOWT1} package on k {HELA} training frames, {args.steps} steps, test SEG "
          f"(base as it is {ft['base_none']:.3f}, at the data's diameter {ft['base_diameter']:.3f})")
    print(f"{'k':>3} {'scratch':>8} {'finetune':>9} {'gain':>7} {'s scratch':>10} {'s finetune':>11}")
    for k in args.ks:
        r = ft[f"k{k}"]
        print(f"{k:>3} {r['scratch']:>8.3f} {r['finetune']:>9.3f} {r['gain']:>+7.3f} {r['seconds_scratch']:>10.0f} "
              f"{r['seconds_finetune']:>11.0f}")
    doc = {"machine": cpu_name(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": args.steps,
           "seed": args.seed, "base": str(base), "base_seconds": round(base_s, 1), "scale": scale, "finetune": ft}
    write_json(out_json, doc)
    keys = {"seg_half_none": scale["half"]["none"], "seg_half_auto": scale["half"]["auto"],
            "seg_quarter_none": scale["quarter"]["none"], "seg_quarter_auto": scale["quarter"]["auto"],
            "seg_double_none": scale["double"]["none"], "seg_double_auto": scale["double"]["auto"],
            "seg_own": scale["own"]["none"]}
    for k in args.ks:
        r = ft[f"k{k}"]
        keys.update({f"seg_scratch_k{k}": r["scratch"], f"seg_finetune_k{k}": r["finetune"], f"gain_k{k}": r["gain"],
                     f"seconds_k{k}": r["seconds_finetune"]})
    print("RESULT transfer " + " ".join(f"{k}={v:.4g}" for k, v in keys.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
