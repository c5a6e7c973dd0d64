"""``seg score``: compare the predictions of ``seg predict`` with the canonical ground truth.

Reads, for every slice of the split (``seg.data.canonical``), the GT class map and instances and
the prediction files of ``seg predict`` in ``pred_dir``:

- ISBI (``kind`` isbi2012): ``<id>_prob.tif`` float (H, W) interior probability (1 = interior; a
  (2, H, W) probability stack is also accepted, channel 1 is used) and ``<id>_seg.tif`` {0, 1}
  class map (1 = interior).
- CTC: ``<id>_prob.tif`` float (classes, H, W) (two classes: class map = p[1] >= the threshold
  ``seg predict`` used (``predict_summary.json``, default 0.5); more classes: argmax; an (H, W)
  foreground probability is also accepted) and ``<sequence>_RES/mask<frame:03d>.tif`` instance labels.

Metrics (definitions in ``overlap``, ``rand`` and ``ctc``):

- Every kind: ``iou`` per class, ``iou_mean``, ``dice_mean``, ``pixel_error``, ``f1_interior_error``
  from the class maps. Aggregates pool all pixels of the split (sum of confusion matrices).
  ``edge_errors``: the misclassified pixels binned by how far apart the predicted and the true
  class edges run there (1 px = an edge one pixel off; > 5 px = a structure missed or invented),
  and (two classes) each class's IoU with the one-pixel errors put right (:mod:`.edges`).
- ISBI: ``vrand``, ``vinfo`` (after border thinning, best threshold of the probability map),
  ``rand_error`` (1 - best F-score of the unthinned foreground-restricted Rand index) and
  ``pixel_error_isbi`` (1 - best F-score of interior pixels), against the GT instances
  (4-connected interior components); plus the split/merge parts and the best thresholds. Per slice: each slice's own best threshold.
  Aggregate: the slices are pooled (pair counts and entropies summed, labels unique per slice) and
  one best threshold is chosen for the whole split, as the challenge scores a stack.
- CTC: ``seg``, ``precision_iou50``, ``recall_iou50`` (aggregate pooled over all reference objects
  of all frames) and ``vrand``/``vinfo`` of the instance masks (foreground-restricted, thinned,
  pooled like ISBI).

Sparse annotations (meta.json ``annotations: sparse``, CTC only; e.g. DIC-HeLa, where only some cells
of a frame are annotated): SEG and recall count annotated cells only and are reported as usual;
``precision_iou50`` is computed over the predicted objects that overlap the annotated cells (more than
half of the object on annotated cells; ``precision_iou50_touching`` counts every object touching
one) and ``iou`` holds only ``cell``, the foreground IoU of those objects with the annotated cells
(:mod:`.ctc`); the pixel measures over the whole slice (``iou_mean``, ``dice``, ``pixel_error``,
``edge_errors``) would count every unannotated cell as an error and are left out. The document says
so in ``annotations`` and ``restricted``, and its primary measure is ``seg``.

NaN values (e.g. SEG of a frame without reference objects) are written as JSON null.
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from seg.errors import SegError
from seg.metrics.ctc import ObjectCounts, object_counts
from seg.metrics.edges import BINS, edge_error_counts, edge_error_summary
from seg.metrics.overlap import confusion_matrix, overlap_scores
from seg.metrics.rand import (
    PairStats, best_over_thresholds, challenge_thresholds, pair_stats, probability_stats, thin_boundaries,
)

PRIMARY = "iou_mean"
SPARSE_PRIMARY = "seg"
SPARSE_NOTE = {
    "precision_iou50": "over the predicted objects that overlap the annotated cells (more than half of "
                       "the object on annotated cells); precision_iou50_touching: over every object "
                       "touching an annotated cell",
    "iou": "cell only: foreground IoU of the annotated cells and the predicted objects that overlap them "
           "(more than half on annotated cells)",
    "left_out": "iou_mean, dice, pixel_error, edge_errors (they would count unannotated cells as errors)",
}


def ctc_mask_path(pred_dir: Path, entry: dict) -> Path:
    """``<pred_dir>/<sequence>_RES/mask<frame:03d>.tif`` of a CTC slice entry (4 digits from 1000)."""
    frame = int(entry["frame"])
    name = f"mask{frame:03d}.tif" if frame < 1000 else f"mask{frame:04d}.tif"
    return pred_dir / f"{entry.get('sequence') or '01'}_RES" / name


def _read(path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
    """Read a prediction TIFF and check its (H, W) or (C, H, W) shape (SegError naming the file)."""
    from seg.io import read_tiff

    if not path.is_file():
        raise SegError(f"{path}: {what} not found (run seg predict for this split)")
    arr = read_tiff(path)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if tuple(arr.shape[-2:]) != tuple(shape) or arr.ndim not in (2, 3):
        raise SegError(f"{path}: {what} has shape {tuple(arr.shape)}, expected (H, W) = {tuple(shape)}")
    return arr


def _interior_probability(arr: np.ndarray, path: Path) -> np.ndarray:
    p = arr if arr.ndim == 2 else arr[1] if arr.shape[0] == 2 else None
    if p is None:
        raise SegError(f"{path}: expected an (H, W) interior probability or (2, H, W), got {arr.shape}")
    p = np.asarray(p, dtype=np.float64)
    if p.size and (np.nanmin(p) < 0 or np.nanmax(p) > 1 or np.isnan(p).any()):
        raise SegError(f"{path}: probabilities must be in [0, 1]")
    return p


def _class_map(arr: np.ndarray, n_classes: int, path: Path, threshold: float = 0.5) -> np.ndarray:
    """Class map from a (C, H, W) probability stack or an (H, W) foreground probability: two classes
    -> ``p[1] >= threshold``, more -> argmax."""
    if arr.ndim == 3:
        if arr.shape[0] != n_classes:
            raise SegError(f"{path}: {arr.shape[0]} probability channels, expected {n_classes}")
        if n_classes != 2:
            return np.argmax(arr, axis=0).astype(np.uint8)
        arr = arr[1]
    return (np.asarray(arr, dtype=np.float64) >= threshold).astype(np.uint8)


def _clean(d: dict) -> dict:
    """NaN -> None, numpy scalars -> Python numbers (recursively)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = _clean(v)
        elif isinstance(v, (float, np.floating)):
            out[k] = None if math.isnan(float(v)) else float(v)
        elif isinstance(v, np.integer):
            out[k] = int(v)
        else:
            out[k] = v
    return out


class _SplitScorer:
    """Scores the slices of one split one by one and pools them for the split's aggregate.

    ``classes`` are the dataset's class names; ``decision`` is the threshold on the class-1
    probability that turns CTC probabilities into class maps; ``thresholds`` those of the ISBI
    maximisation. Pooled: the confusion matrix, the edge-error counts (not for sparse annotations),
    the ISBI probability statistics, the CTC pair statistics and object counts.
    """

    def __init__(self, ds_dir: Path, pred_dir: Path, kind: str, classes: list[str], *, thresholds: list[float],
                 decision: float, sparse: bool):
        self.ds_dir, self.pred_dir, self.kind, self.classes = ds_dir, pred_dir, kind, classes
        self.thresholds, self.decision, self.sparse = thresholds, decision, sparse
        self.cm_total = np.zeros((len(classes), len(classes)), dtype=np.int64)
        self.edges_total = np.zeros(len(BINS), dtype=np.int64)
        self.isbi_stats: list = []
        self.ctc_pairs, self.ctc_objects = PairStats(), ObjectCounts()

    def score(self, e: dict) -> dict:
        """The per-slice scores {"id", ...} of slice entry ``e`` (NaN as None), pooled as well."""
        from seg.data import canonical

        shape = tuple(e["shape"])
        gt_sem = canonical.load_semantic(self.ds_dir, e)
        gt_inst = canonical.load_instances(self.ds_dir, e)
        prob_path = self.pred_dir / f"{e['id']}_prob.tif"
        prob = _read(prob_path, shape, "probability map")
        if self.kind == "isbi2012":
            pred_cls, cm, row = self._isbi_slice(e, shape, gt_sem, gt_inst, prob, prob_path)
        else:
            pred_cls, cm, row = self._ctc_slice(e, shape, gt_sem, gt_inst, prob, prob_path)
        self.cm_total += cm
        if not self.sparse:
            edges = edge_error_counts(gt_sem, pred_cls)
            row["edge_errors"] = edge_error_summary(edges, cm, self.classes)
            self.edges_total += edges
        return _clean({"id": e["id"], **row})

    def _isbi_slice(self, e: dict, shape: tuple, gt_sem: np.ndarray, gt_inst: np.ndarray, prob: np.ndarray,
                    prob_path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
        """ISBI: class map from ``<id>_seg.tif``, Rand and information scores from the probability
        map at the slice's own best threshold. Returns (class map, confusion matrix, scores)."""
        seg_path = self.pred_dir / f"{e['id']}_seg.tif"
        cls = _read(seg_path, shape, "segmentation")
        if cls.ndim != 2:
            raise SegError(f"{seg_path}: segmentation must be 2D (H, W), got {cls.shape}")
        pred_cls = (cls > 0).astype(np.uint8)
        cm = confusion_matrix(gt_sem, pred_cls, len(self.classes))
        st = probability_stats(gt_inst, _interior_probability(prob, prob_path), self.thresholds)
        self.isbi_stats.append(st)
        return pred_cls, cm, {**overlap_scores(cm, self.classes), **best_over_thresholds([st])}

    def _ctc_slice(self, e: dict, shape: tuple, gt_sem: np.ndarray, gt_inst: np.ndarray, prob: np.ndarray,
                   prob_path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
        """CTC: class map from the probabilities, Rand and information scores of the instance mask
        and the object scores (SEG, precision, recall). Returns (class map, confusion matrix, scores)."""
        mask_path = ctc_mask_path(self.pred_dir, e)
        inst = _read(mask_path, shape, "instance mask")
        if inst.ndim != 2:
            raise SegError(f"{mask_path}: instance mask must be 2D (H, W), got {inst.shape}")
        pred_cls = _class_map(prob, len(self.classes), prob_path, self.decision)
        cm = confusion_matrix(gt_sem, pred_cls, len(self.classes))
        ps = pair_stats(gt_inst, thin_boundaries(inst, gt_inst > 0))
        oc = object_counts(gt_inst, inst)
        self.ctc_pairs, self.ctc_objects = self.ctc_pairs + ps, self.ctc_objects + oc
        row = {**overlap_scores(cm, self.classes), **ps.rand(), **ps.info(), **oc.scores(),
               "n_ref": oc.n_ref, "n_pred": oc.n_pred}
        if self.sparse:
            row = _sparse_scores(row, oc)
        return pred_cls, cm, row

    def aggregate(self, n_slices: int) -> dict:
        """The split's scores from the pooled counts (NaN as None)."""
        agg = overlap_scores(self.cm_total, self.classes)
        agg["edge_errors"] = edge_error_summary(self.edges_total, self.cm_total, self.classes)
        if self.kind == "isbi2012":
            agg.update(best_over_thresholds(self.isbi_stats))
        else:
            agg.update({**self.ctc_pairs.rand(), **self.ctc_pairs.info(), **self.ctc_objects.scores(),
                        "n_ref": self.ctc_objects.n_ref, "n_pred": self.ctc_objects.n_pred})
            if self.sparse:
                agg = _sparse_scores(agg, self.ctc_objects)
        agg["n_slices"] = n_slices
        return _clean(agg)


def score_split(ds_dir: str | os.PathLike, pred_dir: str | os.PathLike, *, split: str = "test",
                thresholds: list[float] | None = None, predict_summary: dict | None = None) -> dict:
    """Score the predictions in ``pred_dir`` against the canonical dataset in ``ds_dir``.

    Args:
        ds_dir: canonical dataset folder (``data/<dataset>``).
        pred_dir: folder written by ``seg predict`` for this split.
        split: which slices (train|val|test).
        thresholds: probability thresholds for the ISBI maximisation (default
            :func:`seg.metrics.rand.challenge_thresholds`).
        predict_summary: ``seg predict``'s summary of these predictions (its ``threshold`` turns CTC
            probabilities into class maps; default 0.5); None reads ``predict_summary.json`` from
            ``pred_dir`` or its parent.

    Returns:
        {"kind", "classes", "split", "aggregate": {...}, "per_slice": [{"id", ...}]}.

    Raises:
        SegError: no annotated slice in the split, a prediction file missing or of the wrong shape.
    """
    from seg.data import canonical
    from seg.progress import progress

    ds_dir, pred_dir = Path(ds_dir), Path(pred_dir)
    meta = canonical.load_meta(ds_dir)
    kind, classes = meta["kind"], list(meta["classes"])
    sparse = kind == "ctc" and meta.get("annotations", "full") == "sparse"
    entries = [e for e in canonical.slices(meta, split) if e.get("semantic") and e.get("instances")]
    if not entries:
        raise SegError(f"{ds_dir / 'meta.json'}: split {split!r} has no annotated slices to score")
    if not pred_dir.is_dir():
        raise SegError(f"{pred_dir}: prediction folder not found (run seg predict for split {split!r})")
    thresholds = challenge_thresholds() if thresholds is None else list(thresholds)
    if predict_summary is None:
        predict_summary = _find_predict_summary(pred_dir)
    scorer = _SplitScorer(ds_dir, pred_dir, kind, classes, thresholds=thresholds,
                          decision=float(predict_summary.get("threshold", 0.5)), sparse=sparse)
    per_slice: list[dict] = []
    # a for loop, not a comprehension: a SegError leaves the loop, so the bar closes (ends its line)
    # before the error is printed
    for e in progress(entries, desc=f"score {meta['name']}/{split}"):
        per_slice.append(scorer.score(e))
    out = {"kind": kind, "classes": classes, "split": split, "aggregate": scorer.aggregate(len(entries)),
           "per_slice": per_slice}
    if sparse:
        out.update(annotations="sparse", restricted=SPARSE_NOTE)
    return out


def _sparse_scores(scores: dict, oc: ObjectCounts) -> dict:
    """Sparse annotations: the measures that count unannotated cells as errors are replaced by their
    versions over the predicted objects that overlap the annotated cells (more than half of the
    object on them), or left out."""
    ann = oc.annotated_scores()
    keep = {k: v for k, v in scores.items()
            if k not in ("iou", "iou_mean", "dice", "dice_mean", "pixel_error", "f1_interior_error", "edge_errors")}
    return {**keep, "precision_iou50": ann["precision_iou50_annotated"], "iou": {"cell": ann["iou_cell_annotated"]},
            "precision_iou50_touching": ann["precision_iou50_touching"],
            "n_pred_annotated": oc.n_pred_annotated, "n_pred_touching": oc.n_pred_touching}


def _find_predict_summary(pred_dir: Path) -> dict:
    from seg.io import read_json

    for p in (pred_dir / "predict_summary.json", pred_dir.parent / "predict_summary.json"):
        if p.is_file():
            return read_json(p)
    return {}


def metrics_report(cfg: dict, dataset: str, variant: str, scores: dict, *, pred_dir: Path,
                   train_summary: dict | None = None, predict_summary: dict | None = None) -> dict:
    """The metrics.json document (format of the design contract) from :func:`score_split` output."""
    from seg.config import run_config_hash, variant_section

    train = dict(train_summary or {})
    pred_sum = dict(predict_summary or {})
    inference = pred_sum or {**variant_section(cfg, variant, "inference", dataset), "seconds_per_slice": None,
                             "source": "config (no predict_summary.json found)"}
    checkpoint = pred_sum.get("checkpoint")
    if checkpoint is None:
        best = pred_dir.parent.parent / "checkpoints" / "best.pt"
        checkpoint = str(best) if best.is_file() else None
    return {
        "dataset": dataset,
        "variant": variant,
        "label": cfg["variants"][variant].get("label") or variant,
        "kind": scores["kind"],
        "split": scores["split"],
        "config_hash": run_config_hash(cfg, dataset, variant),
        "checkpoint": checkpoint,
        "seed": train.get("seed", cfg.get("seed", 0)),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "primary": SPARSE_PRIMARY if scores.get("annotations") == "sparse" else PRIMARY,
        "annotations": scores.get("annotations", "full"),
        **({"restricted": scores["restricted"]} if "restricted" in scores else {}),
        "aggregate": scores["aggregate"],
        "per_slice": scores["per_slice"],
        "train": train,
        "inference": inference,
        "pred_dir": str(pred_dir),
    }


def run_score(cfg: dict, *, dataset: str, variant: str, pred: str | os.PathLike, out: str | os.PathLike,
              data_dir: str | os.PathLike | None = None, train_summary: str | os.PathLike | None = None,
              split: str = "test") -> dict[str, Any]:
    """Score one prediction set and write ``out`` (metrics.json) atomically; returns the document."""
    from seg.config import dataset_dir
    from seg.io import read_json, write_json

    ds_dir = dataset_dir(cfg, dataset, data_dir)  # SegError if the dataset is not configured
    if variant not in cfg["variants"]:
        raise SegError(f"config: unknown variant {variant!r} (configured: {', '.join(cfg['variants'])})")
    th = (cfg.get("scoring") or {}).get("vrand_thresholds") or {}
    thresholds = challenge_thresholds(th.get("start", 0.0), th.get("stop", 1.0), th.get("step", 0.1))
    pred_dir = Path(pred)
    pred_summary = _find_predict_summary(pred_dir)
    scores = score_split(ds_dir, pred_dir, split=split, thresholds=thresholds, predict_summary=pred_summary)
    train = read_json(train_summary) if train_summary is not None else None
    doc = metrics_report(cfg, dataset, variant, scores, pred_dir=pred_dir, train_summary=train,
                         predict_summary=pred_summary)
    write_json(out, doc)
    return doc
