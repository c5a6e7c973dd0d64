"""``seg score``: compare the predictions of ``seg predict`` with the canonical ground truth.

Reads, for every slice of the split (``seg.data.canonical``), the GT class map and instances and
the prediction files of ``seg predict`` in ``pred_dir``; the dataset's kind says which files and
which measures (:meth:`seg.kinds.base.Kind.measures`, classes in :mod:`seg.metrics.measures`):

- ISBI (``kind`` isbi2012): ``<id>_prob.tif`` float (H, W) interior probability (1 = interior; a
  (2, H, W) probability stack is also accepted, channel 1 is used) and ``<id>_seg.tif`` {0, 1}
  class map (1 = interior).
- CTC: ``<id>_prob.tif`` float (classes, H, W) (two classes: class map = p[1] >= the threshold
  ``seg predict`` used (``predict_summary.json``, default 0.5); more classes: argmax; an (H, W)
  foreground probability is also accepted) and ``<sequence>_RES/maskT.tif`` instance labels
  (:func:`seg.kinds.ctc.result_mask_path`).

Metrics (definitions in ``overlap``, ``rand`` and ``ctc``; the primary one is the kind's
:meth:`seg.kinds.base.Kind.primary`):

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

from seg.config import dataset_dir, variant_section
from seg.data import canonical
from seg.errors import SegError
from seg.io import read_json, write_json
from seg.kinds import get_kind
from seg.metrics.edges import BINS, edge_error_counts, edge_error_summary
from seg.metrics.measures import read_prediction
from seg.metrics.overlap import overlap_scores
from seg.metrics.rand import challenge_thresholds
from seg.progress import progress
from seg.settings import run_config_hash

SPARSE_NOTE = {
    "precision_iou50": "over the predicted objects that overlap the annotated cells (more than half of "
                       "the object on annotated cells); precision_iou50_touching: over every object "
                       "touching an annotated cell",
    "iou": "cell only: foreground IoU of the annotated cells and the predicted objects that overlap them "
           "(more than half on annotated cells)",
    "left_out": "iou_mean, dice, pixel_error, edge_errors (they would count unannotated cells as errors)",
}


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

    ``classes`` are the dataset's class names; ``measures`` the dataset kind's per-slice measures
    (:mod:`seg.metrics.measures`). Pooled here: the confusion matrix and the edge-error counts (not
    for sparse annotations); the measures pool their own statistics.
    """

    def __init__(self, ds_dir: Path, pred_dir: Path, measures, classes: list[str], *, sparse: bool):
        self.ds_dir, self.pred_dir, self.measures, self.classes = ds_dir, pred_dir, measures, classes
        self.sparse = sparse
        self.cm_total = np.zeros((len(classes), len(classes)), dtype=np.int64)
        self.edges_total = np.zeros(len(BINS), dtype=np.int64)

    def score(self, e: dict) -> dict:
        """The per-slice scores {"id", ...} of slice entry ``e`` (NaN as None), pooled as well."""

        shape = tuple(e["shape"])
        gt_sem = canonical.load_semantic(self.ds_dir, e)
        gt_inst = canonical.load_instances(self.ds_dir, e)
        prob_path = self.pred_dir / f"{e['id']}_prob.tif"
        prob = read_prediction(prob_path, shape, "probability map")
        pred_cls, cm, row = self.measures.slice(e, shape, gt_sem, gt_inst, prob, prob_path)
        self.cm_total += cm
        if not self.sparse:
            edges = edge_error_counts(gt_sem, pred_cls)
            row["edge_errors"] = edge_error_summary(edges, cm, self.classes)
            self.edges_total += edges
        return _clean({"id": e["id"], **row})

    def aggregate(self, n_slices: int) -> dict:
        """The split's scores from the pooled counts (NaN as None)."""
        agg = overlap_scores(self.cm_total, self.classes)
        agg["edge_errors"] = edge_error_summary(self.edges_total, self.cm_total, self.classes)
        agg = self.measures.aggregate(agg)
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

    ds_dir, pred_dir = Path(ds_dir), Path(pred_dir)
    meta = canonical.load_meta(ds_dir)
    kind, classes = meta["kind"], list(meta["classes"])
    sparse = get_kind(kind).sparse(meta)
    entries = [e for e in canonical.slices(meta, split) if e.get("semantic") and e.get("instances")]
    if not entries:
        raise SegError(f"{ds_dir / 'meta.json'}: split {split!r} has no annotated slices to score")
    if not pred_dir.is_dir():
        raise SegError(f"{pred_dir}: prediction folder not found (run seg predict for split {split!r})")
    thresholds = challenge_thresholds() if thresholds is None else list(thresholds)
    if predict_summary is None:
        predict_summary = _find_predict_summary(pred_dir)
    measures = get_kind(kind).measures(classes, pred_dir=pred_dir, meta=meta, thresholds=thresholds,
                                       decision=float(predict_summary.get("threshold", 0.5)), sparse=sparse)
    scorer = _SplitScorer(ds_dir, pred_dir, measures, classes, sparse=sparse)
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


def _find_predict_summary(pred_dir: Path) -> dict:
    for p in (pred_dir / "predict_summary.json", pred_dir.parent / "predict_summary.json"):
        if p.is_file():
            return read_json(p)
    return {}


def metrics_report(cfg: dict, dataset: str, variant: str, scores: dict, *, pred_dir: Path,
                   train_summary: dict | None = None, predict_summary: dict | None = None) -> dict:
    """The metrics.json document (format of the design contract) from :func:`score_split` output."""

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
        "primary": get_kind(scores["kind"]).primary(sparse=scores.get("annotations") == "sparse"),
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
