"""``seg finetune``: continue training a package's network on a folder of images and masks.

cellpose 2.0's loop (a pretrained model, a few corrected images, a short retraining) with the
pipeline's own parts: the folder is ingested as ``kind: folder`` reads it (cellpose, images-masks
or nnU-Net layout; dense, or sparse with ``unannotated_value``), a one-dataset config is written
whose variant starts from the package (``init:``, :mod:`seg.settings.start`: its model, target and
weights; the images resized to the package's object scale), and the ordinary stages run on it:
weights, training (resumable from its ``last.pt``), prediction and calibration on the held-out
pairs, packaging. What the package fixes stays (model, target, tiling and TTA, the decision
threshold when nothing is calibrated); the scale-dependent post-processing (min_size, h) is
planned from the new data; augmentation, optimiser and loss are the schema's defaults (as for any
row; the budget is ``steps`` or ``minutes``).

Held-out pairs: with >= 3 pairs, ``holdout`` of them (default a quarter, at least one; seeded) are
kept from training; the best checkpoint and the post-processing are chosen on them, and their
score is given before (the base package at the data's object diameter) and after. With fewer
pairs everything trains and the package's post-processing is kept; the summary says so.

The work folder (default ``<out>.finetune/`` beside ``out``) holds one sub-folder per request
(package weights, data files, budget, seed, options: its hash): rerunning an interrupted request
resumes from its last checkpoint; rerunning a finished one is a no-op when ``out`` holds its
package. The new package records its ``lineage``: the parent (its name, path and weights' SHA-256),
the pairs it learned from (names, split, files' SHA-256), the steps and the scores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from seg.config import config_hash
from seg.data import canonical
from seg.data.folder import check_folder
from seg.errors import SegError
from seg.evaluate.calibrate import run_calibrate
from seg.evaluate.predict import run_predict
from seg.export.segment import package_scale, segment_image
from seg.io import write_json
from seg.kinds.ingest import ingest_dataset
from seg.metrics.ctc import seg_measure
from seg.package import ModelPackage, read_package, write_package
from seg.package.format import read_package_meta
from seg.packaging import build_package
from seg.settings import RunSettings, validate_config
from seg.targets import target_from_record
from seg.train.loop import train
from seg.train.weight_maps import write_weights

#: Default budget in optimiser steps when neither ``steps`` nor ``minutes`` is given.
DEFAULT_STEPS = 200
#: Pairs held out by default: this fraction of them (at least one), from 3 pairs on.
HOLDOUT_FRACTION = 0.25
VARIANT = "finetune"


def _name(folder: Path) -> str:
    """A dataset name from the folder's name (letters, digits, ``.``, ``_``, ``-``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", folder.resolve().name) or "data"


def _holdout(n_pairs: int, holdout: int | None) -> int:
    if holdout is None:
        return max(1, int(round(HOLDOUT_FRACTION * n_pairs))) if n_pairs >= 3 else 0
    if holdout < 0 or (holdout > 0 and n_pairs - holdout < 1):
        raise SegError(f"--holdout: {holdout} of {n_pairs} pairs would leave none to train on")
    return int(holdout)


def finetune_config(base: str | os.PathLike, meta: dict, data: Path, *, work: Path, dataset: str, n_pairs: int,
                    steps: int | None, minutes: float | None, seed: int, sparse: bool,
                    unannotated_value: int | None, holdout: int, device: str, scratch: bool = False,
                    layout: str = "auto", mask_suffix: str | None = None, amp: str = "auto") -> dict:
    """The validated one-dataset config of a fine-tuning run (module docstring): the folder as a
    ``kind: folder`` dataset with ``holdout`` val pairs, and one variant starting from ``base``
    (``scratch``: the package's model and target from random weights, the data as they are)."""
    m, pp = meta["model"], meta["postprocess"]
    target = target_from_record(meta.get("target"))
    entry = {"kind": "folder", "path": str(data.resolve()), "layout": layout,
             "annotations": "sparse" if sparse or unannotated_value is not None else "full",
             "split": {"val": holdout / n_pairs if holdout else 0.0, "test": 0.0, "seed": int(seed)}}
    if mask_suffix is not None:
        entry["mask_suffix"] = mask_suffix
    if unannotated_value is not None:
        entry["unannotated_value"] = int(unannotated_value)
    variant = {"model": m["name"], "params": dict(m.get("params") or {}), "target": target.name,
               "label": ("from scratch" if scratch else f"from {meta['name']}"),
               "train": {"iterations": int(steps or DEFAULT_STEPS), "max_minutes": minutes, "device": device,
                         "amp": amp},
               "inference": {k: v for k, v in meta["inference"].items()}}
    if scratch:  # the package's target settings, the network from random weights
        record = meta.get("target") or {}
        variant.update({k: record[k] for k in target.variant_keys if record.get(k) is not None})
    else:
        variant["init"] = str(Path(base).resolve())
    postprocess = {"threshold": float(meta["threshold"]["value"]), "method": pp.get("method", "watershed"),
                   "calibrate": holdout > 0}
    if pp.get("seed_threshold") is not None:
        postprocess["seed_threshold"] = pp["seed_threshold"]
    cfg = {"seed": int(seed), "data_dir": str(work / "data"), "results_dir": str(work / "results"),
           "datasets": {dataset: entry}, "variants": {VARIANT: variant}, "postprocess": postprocess}
    return validate_config(cfg, where="seg finetune")


def _pairs(meta: dict) -> list[dict]:
    """The pairs the run learned from and was checked on: name, split and the files' SHA-256."""
    files = meta.get("files") or {}
    out = []
    for e in canonical.slices(meta):
        if e.get("split") == "unlabeled":
            continue
        name = e.get("name", e["id"])
        stem = Path(name).stem
        out.append({"name": name, "split": e["split"],
                    "files": {k: v for k, v in files.items()
                              if Path(k).stem == stem or Path(k).stem.startswith(stem + "_")}})
    return out


def held_out_score(pkg: ModelPackage, ds_dir: Path, entries: list[dict], *, diameter: float | None,
                   device: str = "cpu") -> dict | None:
    """The score of ``pkg`` on the canonical ``entries`` (raw images; objects measure ``diameter``
    px, None: the package's own scale): SEG of the annotated objects for an instance package
    (``seg``, ``objects``), else the class-1 IoU (``iou``). None without entries."""
    if not entries:
        return None
    scale = package_scale(pkg, diameter)
    refs, preds, inter, union = [], [], 0, 0
    for e in entries:
        _, labels = segment_image(pkg, canonical.load_raw_image(ds_dir, e), scale, device=device, amp="none")
        if pkg.dataset_kind.instances:
            refs.append(canonical.load_instances(ds_dir, e))
            preds.append(labels)
        else:
            gt, pr = canonical.load_semantic(ds_dir, e) == 1, np.asarray(labels) == 1
            inter, union = inter + int(np.sum(gt & pr)), union + int(np.sum(gt | pr))
    if refs:
        return {"seg": round(float(seg_measure(refs, preds)), 4),
                "objects": int(sum(len(np.unique(r[r > 0])) for r in refs)), "scale": scale.record()}
    return {"iou": round(inter / union, 4) if union else None, "scale": scale.record()}


def finetune(base: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, *, steps: int | None = None,
             minutes: float | None = None, seed: int = 0, sparse: bool = False, unannotated_value: int | None = None,
             holdout: int | None = None, device: str = "auto", work: str | os.PathLike | None = None,
             scratch: bool = False, layout: str = "auto", mask_suffix: str | None = None,
             keep_work: bool = False, amp: str = "auto") -> dict:
    """Fine-tune the package ``base`` on the image/mask folder ``data`` and write the new package to
    ``out`` (module docstring).

    Args:
        base: a package folder or zip (``seg package``, ``seg finetune``).
        data: a folder of pairs in a layout ``kind: folder`` reads.
        out: the new package (a folder, or a ``.zip``), written atomically at the end.
        steps, minutes: the budget (optimiser steps; a wall-clock limit); default :data:`DEFAULT_STEPS` steps.
        seed: the run's seed (split, sampling, augmentation): same inputs, same package.
        sparse: not every object is annotated (the loss counts only annotated objects and the
            background near them); ``unannotated_value``: the mask value of unannotated pixels.
        holdout: pairs kept for choosing and scoring (default: a quarter, at least one, from 3 pairs).
        device: ``auto``, ``cpu`` or ``cuda``; ``amp``: the training precision (``auto``: the
            faster of fp32 and bf16 on this machine, :mod:`seg.precision`; ``none``: fp32).
        work: the work folder (default ``<out>.finetune`` beside ``out``).
        scratch: the package's model and target from random weights, on the data as they are (the
            baseline the fine-tuned package is compared with; its lineage says so).
        keep_work: keep the request's work folder after success (default: removed).

    Returns:
        The summary (also the new package's ``lineage.finetune``): ``package``, ``pairs``,
        ``held_out`` (names), ``before`` / ``after`` (:func:`held_out_score`, None without
        held-out pairs), ``steps``, ``seconds``, ``scale``, ``postprocess`` (``calibrated`` or why not).

    Raises:
        SegError: a missing, damaged or other-version package; an empty folder, a colour image, a
            mask not its image's size, no annotated object (each names the file); nothing is written.
    """
    t0 = time.perf_counter()
    base, data, out = Path(base), Path(data), Path(out)
    meta = read_package_meta(base)
    if steps is not None and steps < 1:
        raise SegError(f"--steps: must be >= 1, got {steps}")
    if minutes is not None and not minutes > 0:
        raise SegError(f"--minutes: must be > 0, got {minutes}")
    if not data.is_dir():
        raise SegError(f"{data}: no such folder of images and masks")
    dataset = _name(data)
    probe = {"kind": "folder", "path": str(data), "layout": layout, **({"mask_suffix": mask_suffix} if mask_suffix else {})}
    _, pairs, _, _ = check_folder(data, probe, where=f"seg finetune {data}")
    n = len(pairs)
    k = _holdout(n, holdout)
    work_root = Path(work) if work is not None else out.parent / f"{out.name}.finetune"
    made_root = not work_root.exists()
    own_root = made_root or work is None  # the default work folder goes when it is empty
    staging = None
    try:
        work_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".ingest-", dir=work_root))
        cfg = finetune_config(base, meta, data, work=staging, dataset=dataset, n_pairs=n, steps=steps,
                              minutes=minutes, seed=seed, sparse=sparse, unannotated_value=unannotated_value,
                              holdout=k, device=device, scratch=scratch, layout=layout, mask_suffix=mask_suffix, amp=amp)
        ds_meta = ingest_dataset(cfg, dataset, staging / "data" / dataset)
        if not any(e.get("instances") for e in canonical.slices(ds_meta, "train")):
            raise SegError(f"{data}: no annotated object in the training pairs")
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if made_root:
            shutil.rmtree(work_root, ignore_errors=True)
        raise
    request = {"base_weights": meta["files"]["weights.pt"], "data": ds_meta.get("files"), "steps": steps,
               "minutes": minutes, "seed": int(seed), "sparse": bool(sparse), "unannotated_value": unannotated_value,
               "holdout": k, "scratch": bool(scratch), "amp": amp}
    request_hash = config_hash(request)
    done = _finished(out, request_hash)
    if done is not None:
        shutil.rmtree(staging, ignore_errors=True)
        print(f"seg finetune: {out} already holds this request's package ({request_hash}); nothing to do")
        return done
    run_root = work_root / request_hash
    if not (run_root / "data" / dataset / "meta.json").is_file():  # else: resume on the data ingested before
        shutil.rmtree(run_root, ignore_errors=True)
        staging.rename(run_root)
    else:
        shutil.rmtree(staging, ignore_errors=True)
    cfg = finetune_config(base, meta, data, work=run_root, dataset=dataset, n_pairs=n, steps=steps, minutes=minutes,
                          seed=seed, sparse=sparse, unannotated_value=unannotated_value, holdout=k, device=device,
                          scratch=scratch, layout=layout, mask_suffix=mask_suffix, amp=amp)
    summary = _run(cfg, base, meta, run_root, dataset, out, request, request_hash, t0, device=device)
    if not keep_work:
        shutil.rmtree(run_root, ignore_errors=True)
        if own_root and not any(work_root.iterdir()):
            work_root.rmdir()
    return summary


def _finished(out: Path, request_hash: str) -> dict | None:
    """The summary of ``out`` when it is the package of this request, else None."""
    try:
        lineage = read_package_meta(out).get("lineage") or {}
    except SegError:
        return None
    ft = lineage.get("finetune") or {}
    return ft if ft.get("request") == request_hash else None


def _run(cfg: dict, base: Path, meta: dict, root: Path, dataset: str, out: Path, request: dict, request_hash: str,
         t0: float, *, device: str) -> dict:
    """Weights, training, calibration on the held-out pairs, the package and its scores."""
    data_dir = root / "data"
    ds_dir = data_dir / dataset
    run_dir = root / "results" / dataset / VARIANT
    settings = RunSettings(cfg, dataset, VARIANT, data_dir=data_dir)
    write_weights(cfg, dataset, data_dir=data_dir, preview=False)
    t_train = time.perf_counter()
    summary = train(cfg, dataset, VARIANT, run_dir, data_dir=data_dir, device=device)
    train_s = time.perf_counter() - t_train
    ds_meta = canonical.load_meta(ds_dir)
    held = [e for e in canonical.slices(ds_meta, "val") if e.get("semantic")]
    if held:
        run_predict(cfg, dataset=dataset, variant=VARIANT, checkpoint=run_dir / "checkpoints" / "best.pt",
                    split="val", out=run_dir / "pred" / "val", data_dir=data_dir, device=device)
        run_calibrate(cfg, dataset=dataset, variant=VARIANT, pred=run_dir / "pred" / "val",
                      out=run_dir / "calibration.json", data_dir=data_dir)
        pp_note = "calibrated on the held-out pairs (they also chose the checkpoint: their 'after' score is optimistic)"
    else:
        pp_note = ("fewer than 3 pairs (or --holdout 0): nothing held out; the package's method and threshold, "
                   "min_size and h planned from the new data")
    pkg = build_package(cfg, run_dir, data_dir=data_dir)
    d_new = ((settings.plan.fingerprint.get("objects") or {}).get("diameter") or {}).get("median")
    before = None
    if held and not request["scratch"]:
        parent = read_package(base)
        before = held_out_score(parent, ds_dir, held, diameter=d_new if parent.scale else None, device="cpu")
    after = held_out_score(pkg, ds_dir, held, diameter=None, device="cpu")
    result = {
        "request": request_hash, "package": str(out), "base": {"name": meta["name"], "path": str(base),
                                                             "weights_sha256": meta["files"]["weights.pt"]},
        "from": "scratch (the package's model and target, random weights)" if request["scratch"] else "the base package",
        "pairs": len([e for e in canonical.slices(ds_meta) if e.get("split") != "unlabeled"]),
        "held_out": [e.get("name", e["id"]) for e in held], "before": before, "after": after,
        "steps": summary.get("iterations"), "stopped": summary.get("stopped"),
        "best_step": summary.get("best_iteration"), "seed": request["seed"], "scale": (summary.get("init") or None),
        "postprocess": {"note": pp_note, **pkg.meta["postprocess"], "threshold": pkg.meta["threshold"]["value"]},
        "seconds_train": round(train_s, 1), "seconds": round(time.perf_counter() - t0, 1),
        "data": _pairs(ds_meta),
    }
    lineage = dict(pkg.meta.get("lineage") or {})
    if request["scratch"]:
        lineage["parent"] = None
        lineage["architecture_from"] = result["base"]
    lineage["finetune"] = result
    pkg.meta["lineage"] = lineage
    pkg.meta["name"] = out.stem if out.suffix == ".zip" else out.name
    write_package(pkg, out)
    write_json(root / "finetune_summary.json", result)
    return json.loads(json.dumps(result))


def read_summary(out: str | os.PathLike) -> dict:
    """The fine-tuning summary recorded in a package ``out`` (SegError if it has none)."""
    ft = (read_package_meta(out).get("lineage") or {}).get("finetune")
    if not ft:
        raise SegError(f"{out}: not a package of seg finetune (no lineage.finetune in package.json)")
    return ft


__all__ = ["DEFAULT_STEPS", "HOLDOUT_FRACTION", "finetune", "finetune_config", "held_out_score", "read_summary"]
