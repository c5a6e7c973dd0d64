"""``seg pseudolabel``: self-training labels, a first model's confident objects on unlabelled frames.

A variant with ``self_training: {teacher: <variant>}`` trains in a second round on its dataset's
training split plus the objects its teacher (a trained variant of the same dataset) finds on the
dataset's unlabelled frames:

1. Candidate frames: the ``unlabeled`` slices of the dataset that the silver-truth protocol did not
   keep out (no ``excluded``) and that lie more than ``st_exclusion`` frames (the dataset's, default
   5) from every val and test frame of their sequence, so no label comes from next to a frame that
   chooses or scores a model.
2. The teacher predicts the val frames and the candidates with its own inference settings and
   post-processing (its ``calibration.json`` where calibration is on). An object's confidence is
   the mean of the teacher's cell probability (three-class: interior + boundary; distance: the
   cell distance) over its pixels.
3. The confidence threshold is chosen on the val split: the smallest one at which the val objects
   kept (those overlapping an annotated cell, for sparse annotations: another object may be an
   unannotated cell) match an annotated cell at IoU >= 0.5 with precision >= ``precision`` (0.9).
4. Each candidate frame keeps its objects at or above the threshold, as sparse labels: instances,
   the CTC class map (0-lines between touching objects) and the border-weight map restricted to
   the objects and ``weights.sparse_band`` px around them (every other pixel may be a dropped or
   missed cell, so the loss ignores it). Frames with no kept object are left out.

Output folder (written atomically): ``meta.json`` (teacher, threshold, the val table, the slices:
``id`` of the dataset's image, ``instances``, ``semantic``, ``weights``, ``kept``, ``dropped``) and
``instances/``, ``semantic/``, ``weights/`` TIFFs. Training reads it with ``seg train --pseudo``
(:func:`seg.train.sampling.load_pseudo_slices`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from seg.config import dataset_dir
from seg.data import canonical
from seg.data.ctc import ctc_semantic
from seg.device import resolve_device
from seg.errors import SegError
from seg.evaluate.predict import load_run_model, predict_settings
from seg.infer.predictor import predict_slice
from seg.io import atomic_path, read_json, sha256_file, write_json, write_tiff
from seg.kinds import get_kind
from seg.metrics.ctc import overlap_table
from seg.progress import progress
from seg.settings import RunSettings
from seg.transforms.weights import border_weight_map

CONFIDENCE_GRID = tuple(round(c, 2) for c in np.arange(0.5, 0.991, 0.01))


def candidate_frames(meta: dict) -> list[dict]:
    """The unlabelled slices a teacher may label: not ``excluded`` and more than ``st_exclusion``
    frames (meta's, default 5) from every val and test frame of their sequence."""
    gap = int(meta.get("st_exclusion", 5))
    held: dict[str, list[int]] = {}
    for e in meta["slices"]:
        if e["split"] in ("val", "test"):
            held.setdefault(str(e.get("sequence") or "01"), []).append(int(e.get("frame") or 0))
    out = []
    for e in meta["slices"]:
        if e["split"] != "unlabeled" or e.get("excluded"):
            continue
        near = held.get(str(e.get("sequence") or "01"), [])
        if all(abs(int(e.get("frame") or 0) - f) > gap for f in near):
            out.append(e)
    return out


def object_confidence(labels: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Mean ``foreground`` probability over each object: float64 (labels.max() + 1,), index = label
    (entry 0, the background, is 0)."""
    n = int(labels.max())
    sums = np.bincount(labels.ravel(), weights=foreground.ravel().astype(np.float64), minlength=n + 1)
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    conf = np.divide(sums, np.maximum(counts, 1))
    conf[0] = 0.0
    return conf


def val_objects(labels: np.ndarray, foreground: np.ndarray, reference: np.ndarray, *, sparse: bool) -> list[tuple[float, bool]]:
    """(confidence, matches an annotated cell at IoU >= 0.5) of each predicted object of a val frame
    that counts: all of them, or with sparse annotations those with more than half of their pixels
    on annotated cells. ``labels``: int (H, W) objects 1..N (sequential), ``reference`` the
    frame's annotated instances."""

    ids = np.unique(labels[labels > 0])
    conf = object_confidence(labels, foreground)
    t = overlap_table(reference, labels)
    iou = t.inter / (t.ref_size[t.ri] + t.pred_size[t.pi] - t.inter)
    matched = np.zeros(ids.size, bool)
    matched[t.pi[iou >= 0.5]] = True
    on_ref = np.bincount(t.pi, weights=t.inter, minlength=ids.size)
    counts = np.full(ids.size, not sparse) | (2 * on_ref > t.pred_size)
    return [(float(conf[k]), bool(m)) for k, m, c in zip(ids, matched, counts) if c]


def choose_confidence(objects: list[tuple[float, bool]], *, precision: float = 0.9,
                      grid=CONFIDENCE_GRID) -> tuple[float | None, list[dict]]:
    """The smallest grid confidence whose kept val objects reach ``precision`` (None: no grid value
    does, or there is no val object), and the table per grid value (kept, matched, precision)."""
    table = []
    for c in grid:
        kept = [m for conf, m in objects if conf >= c]
        prec = sum(kept) / len(kept) if kept else float("nan")
        table.append({"confidence": float(c), "kept": len(kept), "matched": int(sum(kept)), "precision": prec})
    ok = [r for r in table if r["kept"] and r["precision"] >= precision]
    return (ok[0]["confidence"] if ok else None), table


def run_pseudolabel(cfg: dict, *, dataset: str, variant: str, teacher_run: str | os.PathLike, out: str | os.PathLike,
                    data_dir: str | os.PathLike | None = None, device: str | None = None) -> dict:
    """Write the self-training labels of ``variant`` (see the module doc); returns ``meta.json``.

    Raises:
        SegError: the variant has no ``self_training``, the teacher run lacks its checkpoint (or
            its calibration where calibration is on), or the dataset is not an instance dataset.
    """
    st = (cfg["variants"].get(variant) or {}).get("self_training")
    if not st:
        raise SegError(f"config: variants.{variant} has no self_training section")
    teacher = st["teacher"]
    ds_dir = dataset_dir(cfg, dataset, data_dir)
    meta = canonical.load_meta(ds_dir)
    if not get_kind(meta["kind"]).instances:
        raise SegError(f"{ds_dir / 'meta.json'}: self-training needs an instance dataset, not kind {meta['kind']!r}")
    run = Path(teacher_run)
    ckpt = run / "checkpoints" / "best.pt"
    if not ckpt.is_file():
        raise SegError(f"{ckpt}: the teacher's checkpoint is missing (train variant {teacher!r} first)")
    cal = run / "calibration.json"
    calibrate = RunSettings(cfg, dataset, teacher, ds_dir=ds_dir, meta=meta).calibrate
    if calibrate and not cal.is_file():
        raise SegError(f"{cal}: missing, but postprocess.calibrate is on (run seg calibrate for {teacher!r})")
    settings, infer_cfg, post = predict_settings(cfg, dataset=dataset, variant=teacher, split="val", device=device,
                                                 threshold_file=cal if calibrate else None, data_dir=data_dir)
    model = load_run_model(settings, ckpt)
    dev = resolve_device(infer_cfg["device"], section="inference")

    def predict(e):
        probs = predict_slice(model, canonical.load_image(ds_dir, e), infer_cfg, dev,
                              activation=settings.target.activation, scale=settings.scale)
        prob, labels = settings.decode(probs, post)
        return labels, prob

    sparse = meta.get("annotations", "full") == "sparse"
    objects = []
    for e in progress([e for e in canonical.slices(meta, "val") if e.get("instances")],
                      desc=f"pseudolabel {dataset}/{variant}: val", unit="frame"):
        labels, fg = predict(e)
        objects += val_objects(labels, fg, canonical.load_instances(ds_dir, e), sparse=sparse)
    precision = float(st.get("precision", 0.9))
    confidence, table = choose_confidence(objects, precision=precision)
    wcfg = settings.weights
    wc_path = ds_dir / "weights" / "class_weights.json"
    wc = read_json(wc_path)["w_c"] if wc_path.is_file() else None
    doc = {"dataset": dataset, "variant": variant, "teacher": {"variant": teacher, "run": str(run),
           "checkpoint_sha256": sha256_file(ckpt), "postprocess": post.settings, "threshold": post.threshold},
           "precision_target": precision, "confidence": confidence, "val_objects": len(objects), "val_table": table,
           "band": float(wcfg["sparse_band"]), "slices": []}
    candidates = candidate_frames(meta)
    with atomic_path(out) as tmp:
        for sub in ("instances", "semantic", "weights"):
            (tmp / sub).mkdir(parents=True)
        for e in progress(candidates if confidence is not None else [],
                          desc=f"pseudolabel {dataset}/{variant}", unit="frame"):
            labels, fg = predict(e)
            conf = object_confidence(labels, fg)
            keep = np.flatnonzero(conf >= confidence)
            keep = keep[keep > 0]
            if not keep.size:
                continue
            inst = np.where(np.isin(labels, keep), labels, 0).astype(np.int32)
            sem = ctc_semantic(inst)
            weights = border_weight_map(inst, w0=wcfg["w0"], sigma=wcfg["sigma"], class_weights=wc, semantic=sem,
                                        band=float(wcfg["sparse_band"]))
            sid = e["id"]
            rec = {"id": sid, "instances": f"instances/{sid}.tif", "semantic": f"semantic/{sid}.tif",
                   "weights": f"weights/{sid}.tif", "sequence": e.get("sequence"), "frame": e.get("frame"),
                   "kept": int(keep.size), "dropped": int(labels.max()) - int(keep.size)}
            write_tiff(tmp / rec["instances"], inst)
            write_tiff(tmp / rec["semantic"], sem)
            write_tiff(tmp / rec["weights"], weights)
            doc["slices"].append(rec)
        doc["candidates"] = len(candidates)
        write_json(tmp / "meta.json", doc)
    return doc
