"""Small objects: the paper's fg_border target against three_class on shrunk copies of the CTC data.

GOWT1's annotated frames shrunk to 0.5x and 0.25x (median nucleus diameter D ~30 and ~15 px) and
DIC-HeLa's to 0.25x (D ~30 px), written as folder datasets (images-masks layout, the canonical
train / val / test split kept as name lists; DIC-HeLa sparse as ingested: gold and silver truth),
then for each seed the workflow (snakemake, the leaderboard target) trains both rows with the
budgets and settings of configs/targets.yaml, every scale-dependent setting left to the plan.
Prints a table of test SEG (mean and sd over seeds) with each dataset's plan, writes
bench/results/small_objects.json and ends with one RESULT line.

    SEG_RAW_ROOT=../shared/data .venv/bin/python bench/small_objects.py [--seeds 0 1 2] [--scales ...]

Needs the canonical datasets in data/ (made here with seg ingest from the raw folders if missing).
~12 min per seed on 2 CPU cores (six 250-step trainings).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile
import yaml
from skimage.transform import rescale

from seg.data import canonical
from seg.io import read_json, write_json
from seg.settings import load_config
from seg.settings.plan import DataPlan
from common import ensure_canonical

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"gowt1": "Fluo-N2DH-GOWT1", "hela": "DIC-C2DH-HeLa"}
DEFAULT_SCALES = ("gowt1:0.5", "gowt1:0.25", "hela:0.25")
ROWS = {"unet": "fg_border", "unet-3class": "three_class"}

def write_scaled(ds: Path, out: Path, scale: float) -> dict:
    """The annotated slices of canonical ``ds`` rescaled by ``scale`` into ``out/images``, ``out/masks``
    (images: float32, normalised and aligned as training sees them, linear with anti-aliasing;
    masks: instance ids, nearest); returns the split lists {train, val, test: [names]}."""
    meta = canonical.load_meta(ds)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for e in canonical.slices(meta):
        if e["split"] not in split or not e.get("instances"):
            continue
        img = canonical.load_image(ds, e)
        inst = canonical.load_instances(ds, e)
        small = rescale(img, scale, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)
        mask = rescale(inst, scale, order=0, anti_aliasing=False, preserve_range=True).astype(np.int32)
        tifffile.imwrite(out / "images" / f"{e['id']}.tif", small)
        tifffile.imwrite(out / "masks" / f"{e['id']}.tif", mask)
        split[e["split"]].append(e["id"])
    return split


def config(datasets: dict, sparse: set[str]) -> dict:
    base = yaml.safe_load((ROOT / "configs" / "targets.yaml").read_text())
    variants = {k: {kk: vv for kk, vv in base["variants"][k].items() if kk != "per_dataset"} for k in ROWS}
    for v in variants.values():
        v["train"] = {**v.get("train", {}), "iterations": 250}
    entries = {}
    for name, (folder, split) in datasets.items():
        entries[name] = {"kind": "folder", "path": str(folder), "layout": "images-masks", "labels": "instance",
                         "split": split}
        if name in sparse:
            entries[name]["annotations"] = "sparse"
    cfg = {k: v for k, v in base.items() if k not in ("datasets", "variants", "results_dir", "seed")}
    # every scale-dependent setting from the plan, as a user's own config (seg init) leaves them:
    # targets.yaml pins the values the built-in datasets always had (min_size 200 would delete
    # every nucleus of 15 px)
    cfg["weights"] = {k: v for k, v in cfg["weights"].items() if k not in ("sigma", "sparse_band")}
    cfg["train"] = {k: v for k, v in cfg["train"].items() if k != "patch_size"}
    cfg["postprocess"] = {k: v for k, v in cfg["postprocess"].items() if k not in ("min_size", "h", "search")}
    return {**cfg, "datasets": entries, "variants": variants}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--scales", nargs="+", default=list(DEFAULT_SCALES), help="source:scale, e.g. gowt1:0.25")
    ap.add_argument("--data", default=str(ROOT / "data"), help="canonical datasets (the default run's)")
    ap.add_argument("--out", default=str(ROOT / "results" / "small_objects"))
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    datasets, sparse = {}, set()
    for spec in args.scales:
        src, scale = spec.split(":")
        ds = ensure_canonical(data, SOURCES[src])
        name = f"{src}-x{scale}"
        folder = out / "raw" / name
        datasets[name] = (folder, write_scaled(ds, folder, float(scale)))
        if canonical.load_meta(ds).get("annotations") == "sparse":
            sparse.add(name)
    cfg_path = out / "config.yaml"
    cfg_path.write_text(yaml.safe_dump({**config(datasets, sparse), "data_dir": str(out / "data")}, sort_keys=False))
    for seed in args.seeds:
        res = out / f"seed{seed}"
        if (res / "leaderboard.csv").is_file():
            continue
        subprocess.run([sys.executable, "-m", "snakemake", str(res / "leaderboard.csv"), "--cores", str(args.cores),
                        "--configfile", str(cfg_path), "--config", f"seed={seed}", f"results_dir={res}"],
                       check=True, cwd=ROOT)
    cfg = load_config(cfg_path)
    table: dict = {}
    for name in datasets:
        plan = DataPlan(cfg, name, data_dir=out / "data")
        d = plan.fingerprint["objects"]["diameter"]["median"]
        row = {"diameter": d, "plan": {s.key: s.value for s in plan.settings()
                                       if s.key in ("train.patch_size", "postprocess.min_size", "postprocess.h",
                                                    "weights.sigma", "target.boundary_width")}}
        for v, target in ROWS.items():
            segs = [read_json(out / f"seed{s}" / name / v / "metrics.json")["aggregate"]["seg"] for s in args.seeds]
            row[target] = {"seeds": segs, "mean": float(np.mean(segs)), "sd": float(np.std(segs, ddof=1)) if len(segs) > 1 else 0.0}
        row["gap"] = row["three_class"]["mean"] - row["fg_border"]["mean"]
        table[name] = row
    print(f"{'dataset':<14} {'D px':>6} {'fg_border':>16} {'three_class':>16} {'gap':>7}  plan")
    for name, row in table.items():
        fg, tc = row["fg_border"], row["three_class"]
        print(f"{name:<14} {row['diameter']:6.1f} {fg['mean']:.3f} +- {fg['sd']:.3f}  {tc['mean']:.3f} +- {tc['sd']:.3f}  "
              f"{row['gap']:+.3f}  {row['plan']}")
    doc = {"machine": platform.processor() or platform.machine(), "seeds": args.seeds, "table": table}
    write_json(ROOT / "bench" / "results" / "small_objects.json", doc)
    keys = " ".join(f"gap_{n.replace('-', '_').replace('.', '')}={r['gap']:.3f}" for n, r in table.items())
    print(f"RESULT small_objects {keys}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
