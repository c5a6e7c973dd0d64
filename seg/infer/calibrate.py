"""``seg calibrate``: choose the post-processing on the validation split, never on the test split.

A loss that weights membranes and borders (the U-Net paper's weight maps, class balancing) shifts
the probabilities toward the boundary class, so ``p >= 0.5`` is rarely the threshold that maximises
overlap. With ``postprocess.calibrate: true`` the workflow predicts the val split, this module picks
the settings by the dataset's own measure on it, and ``seg predict --threshold-file`` applies them
to the test split:

- ISBI 2012: the threshold with the best mean IoU of the two classes, pixels of all val slices pooled
  (one threshold per split, as a stack is scored).
- CTC data: the threshold, the watershed seed depth ``h`` and the minimum object size with the best
  SEG (the challenge's measure, pooled over all annotated cells of the val frames), over the grid
  thresholds x ``postprocess.search.h`` x ``postprocess.search.min_size``. Pixel mean IoU would count
  every unannotated cell of sparsely annotated data (DIC-HeLa) as an error and push the threshold up
  until half the cells vanish; SEG counts annotated cells only. SEG ties are broken by closeness to
  the configured settings (``min_size``, then ``h``, then ``threshold``), then by object precision
  at IoU 0.5. So a setting moves away from the configured one only for a better SEG: a larger
  minimum size never raises SEG, and choosing the largest one that costs no val cell (as precision
  would) deletes the smaller cells of other frames (GOWT1: min_size 2000 on its one val frame, test
  SEG 0.809 instead of 0.890 at the configured 200); a smaller one wins when the configured size
  deletes annotated cells. "Configured" means resolved: the config's value, else the plan's from the
  dataset's fingerprint (:mod:`seg.data.plan`; the grids too).

Conventions: two classes, class 1 = interior (ISBI) or cell (CTC); the probability is that of
class 1, the prediction is ``p >= threshold``. The calibration file carries every chosen setting
(``threshold``, and for CTC data ``h`` and ``min_size``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from seg.errors import SegError

GRID = tuple(round(t, 2) for t in np.arange(0.05, 0.951, 0.05))
_BINS = 1000  # probability histogram resolution (the grid's thresholds fall on bin edges)


class ThresholdCounts:
    """Pooled histograms of the class-1 probability of class-1 and class-0 pixels (1000 bins)."""

    def __init__(self) -> None:
        self.pos = np.zeros(_BINS, dtype=np.int64)
        self.neg = np.zeros(_BINS, dtype=np.int64)

    def add(self, prob: np.ndarray, truth: np.ndarray) -> None:
        """Add one slice: ``prob`` float (H, W) in [0, 1], ``truth`` bool/int (H, W), True/1 = class 1."""
        prob, truth = np.asarray(prob), np.asarray(truth).astype(bool)
        if prob.shape != truth.shape:
            raise SegError(f"calibrate: probability {prob.shape} and ground truth {truth.shape} differ in shape")
        idx = np.clip((prob.astype(np.float64) * _BINS).astype(np.int64), 0, _BINS - 1)
        self.pos += np.bincount(idx[truth], minlength=_BINS)
        self.neg += np.bincount(idx[~truth], minlength=_BINS)

    def scores(self, threshold: float) -> dict:
        """Pooled IoU of class 0, class 1 and their mean for the prediction ``p >= threshold``
        (``seg.metrics.overlap.overlap_scores`` of the pooled 2x2 confusion matrix)."""
        from seg.metrics.overlap import overlap_scores

        k = int(round(threshold * _BINS))
        cm = np.array([[self.neg[:k].sum(), self.neg[k:].sum()], [self.pos[:k].sum(), self.pos[k:].sum()]])
        s = overlap_scores(cm, ["class0", "class1"])
        return {"threshold": float(threshold), "iou_class0": s["iou"]["class0"],
                "iou_class1": s["iou"]["class1"], "iou_mean": s["iou_mean"]}


def choose_threshold(counts: ThresholdCounts, grid: tuple[float, ...] = GRID) -> tuple[float, list[dict]]:
    """The grid threshold with the highest pooled mean IoU (ties: the one closest to 0.5), and the
    table of scores for every grid threshold."""
    table = [counts.scores(t) for t in grid]
    best = max(table, key=lambda r: (round(r["iou_mean"], 12), -abs(r["threshold"] - 0.5)))
    return best["threshold"], table


def second_key(method: str) -> str:
    """The post-processing setting of the grid's second axis: ``seed_threshold`` for the seeded
    methods (three_class, distance), else the watershed's ``h``."""
    from seg.infer.postprocess import SEEDED

    return "seed_threshold" if method in SEEDED else "h"


def seg_table(fgs: list[np.ndarray], refs: list[np.ndarray], *, method: str, thresholds, hs, min_sizes,
              sparse: bool = False) -> list[dict]:
    """SEG, recall and precision (IoU 0.5) pooled over frames for every post-processing setting.

    Args:
        fgs: per frame, float (H, W) cell probability; method three_class: the (3, H, W)
            probabilities [background, interior, boundary]; method distance: the (2, H, W) maps.
        refs: per frame, int (H, W) reference instances (annotated cells; 0 = not annotated).
        method: ``watershed``, ``connected_components`` (then ``hs`` does not matter: give one),
            ``three_class`` or ``distance`` (then ``hs`` are seed thresholds).
        thresholds, hs, min_sizes: the grid.
        sparse: report precision over the predicted objects that overlap the annotated cells (more
            than half of the object on them), and the foreground IoU of those objects with them.

    Returns:
        One row per (threshold, h, min_size): {"threshold", "h" (three_class: "seed_threshold"),
        "min_size", "seg", "recall_iou50", "precision_iou50", "n_pred"} (+ "iou_cell_annotated"
        when sparse).
    """
    from seg.infer.postprocess import method_objects
    from seg.metrics.ctc import ObjectCounts, overlap_table

    second = second_key(method)
    rows = []
    for t in thresholds:
        for h in hs:
            tables = [overlap_table(r, method_objects(p, method=method, threshold=t, second=h))
                      for p, r in zip(fgs, refs, strict=True)]
            for m in min_sizes:
                c = sum((tb.counts(tb.pred_size >= m) for tb in tables), ObjectCounts())
                sc = c.scores()
                row = {"threshold": float(t), second: float(h), "min_size": int(m), "seg": sc["seg"],
                       "recall_iou50": sc["recall_iou50"], "precision_iou50": sc["precision_iou50"],
                       "n_pred": c.n_pred}
                if sparse:
                    ann = c.annotated_scores()
                    row.update(precision_iou50=ann["precision_iou50_annotated"],
                               iou_cell_annotated=ann["iou_cell_annotated"])
                rows.append(row)
    return rows


def choose_postprocess(rows: list[dict], *, threshold: float, h: float, min_size: int) -> dict:
    """The row of :func:`seg_table` with the best SEG; ties by closeness to the configured
    ``min_size``, ``h`` (three_class: ``seed_threshold``) and ``threshold`` (in that order), then
    by precision."""
    def key(r):
        seg = r["seg"] if r["seg"] == r["seg"] else -1.0  # NaN (no annotated cell) last
        second = r["h"] if "h" in r else r["seed_threshold"]
        return (round(seg, 12), -abs(r["min_size"] - min_size), -abs(second - h),
                -abs(r["threshold"] - threshold), round(r["precision_iou50"], 12))

    return max(rows, key=key)


def _calibrate_ctc(cfg: dict, dataset: str, variant: str, pred: Path, ds_dir: Path, meta: dict,
                   entries: list[dict]) -> dict:
    """The CTC document of :func:`run_calibrate`: settings chosen by SEG on the val frames (the
    variant's target decides the method; three_class searches seed thresholds instead of h)."""
    from seg.data import canonical
    from seg.data.plan import data_plan
    from seg.infer.postprocess import SEEDED, foreground_probability
    from seg.targets.target import variant_target

    plan = data_plan(cfg, dataset, ds_dir=ds_dir, meta=meta)
    target = variant_target(cfg, variant)
    pp = target.postprocess(plan.postprocess())  # min_size, h, grids: config, else plan; method: target's
    seeded = pp["method"] in SEEDED
    second = second_key(pp["method"])
    sparse = meta.get("annotations", "full") == "sparse"
    fgs, refs, counts = [], [], ThresholdCounts()
    for e in entries:
        p = _read_probability(pred, e, channels=len(target.channels(meta["classes"])) if seeded else 2,
                              full=seeded)
        fgs.append(p)
        refs.append(canonical.load_instances(ds_dir, e))
        counts.add(foreground_probability(p) if seeded else p, canonical.load_semantic(ds_dir, e) == 1)
    search = pp.get("search") or {}
    if seeded:
        hs = target.seed_grid(pp)
    elif pp["method"] == "watershed":
        hs = [float(x) for x in search.get("h", [pp["h"]])]
    else:
        hs = [float(pp["h"])]
    configured = float(pp[second])
    sizes = [int(x) for x in search.get("min_size", [pp["min_size"]])]
    table = seg_table(fgs, refs, method=pp["method"], thresholds=GRID, hs=hs, min_sizes=sizes, sparse=sparse)
    best = dict(choose_postprocess(table, threshold=float(pp["threshold"]), h=configured,
                                   min_size=int(pp["min_size"])))
    fixed = seg_table(fgs, refs, method=pp["method"], thresholds=[float(pp["threshold"])], hs=[configured],
                      min_sizes=[int(pp["min_size"])], sparse=sparse)[0]
    if not sparse:  # pixel IoU is meaningful only when every cell is annotated
        best.update(counts.scores(best["threshold"]))
        fixed.update(counts.scores(fixed["threshold"]))
    doc = {"criterion": "seg", "method": pp["method"], "annotations": "sparse" if sparse else "full",
           "threshold": best["threshold"], "h": best.get("h", float(pp["h"])), "min_size": best["min_size"],
           "tie_break": f"closeness to the configured min_size, {second}, threshold; then precision_iou50",
           "sources": {k: plan.setting(f"postprocess.{k}").source for k in ("min_size", "h", "search.h", "search.min_size")},
           "at_chosen": best, "at_fixed": fixed, "table": table}
    if seeded:
        doc.update(target=target.name, seed_threshold=best["seed_threshold"])
    if sparse:
        doc["precision"] = ("over the predicted objects that overlap the annotated cells (more than half "
                            "of the object on them)")
    return doc


def _read_probability(pred: Path, e: dict, *, channels: int = 2, full: bool = False) -> np.ndarray:
    """From ``<pred>/<id>_prob.tif``: the class-1 probability (H, W) of slice ``e``; with ``full``
    the whole (channels, H, W) stack (a three-class model's probabilities, a distance model's maps)."""
    from seg.io import read_tiff

    path = pred / f"{e['id']}_prob.tif"
    if not path.is_file():
        raise SegError(f"{path}: probability map not found (run seg predict --split val)")
    p = read_tiff(path)
    if full:
        if p.ndim != 3 or p.shape[0] != channels or p.shape[1:] != tuple(e["shape"]):
            raise SegError(f"{path}: expected the model's {channels} maps ({channels}, H, W) with (H, W) = "
                           f"{tuple(e['shape'])}, got {p.shape}")
        return p
    p = p[1] if p.ndim == 3 and p.shape[0] == 2 else p
    if p.shape != tuple(e["shape"]):
        raise SegError(f"{path}: probability map has shape {p.shape}, expected (H, W) = {tuple(e['shape'])}")
    return p


def run_calibrate(cfg: dict, *, dataset: str, variant: str, pred: str | os.PathLike, out: str | os.PathLike,
                  data_dir: str | os.PathLike | None = None) -> dict:
    """Choose the threshold from the val-split predictions in ``pred`` and write ``out`` (JSON).

    Args:
        pred: folder of ``seg predict --split val`` (``<id>_prob.tif``: ISBI (H, W) interior
            probability; CTC (classes, H, W) probabilities, class 1 = cell).

    Returns:
        The document written: the chosen settings (threshold; CTC also h and min_size), criterion
        (iou_mean for ISBI, seg for CTC), split, the scores at the chosen and at the configured
        settings and the table over the grid.

    Raises:
        SegError: the predictions are not of the val split, a file is missing or of the wrong shape,
            or the split has no annotated slice.
    """
    from seg.config import dataset_dir, postprocess_section
    from seg.data import canonical
    from seg.io import read_json, write_json
    from seg.kinds import get_kind

    ds_dir = dataset_dir(cfg, dataset, data_dir)  # SegError for an unknown dataset
    pred = Path(pred)
    summary_path = pred / "predict_summary.json"
    if not summary_path.is_file():
        raise SegError(f"{summary_path}: not found (run seg predict --split val first)")
    split = read_json(summary_path).get("split")
    if split != "val":
        raise SegError(f"{summary_path}: predictions of split {split!r}; the threshold is chosen on 'val' only")
    meta = canonical.load_meta(ds_dir)
    if len(meta["classes"]) != 2:
        raise SegError(f"{ds_dir / 'meta.json'}: calibration needs two classes, got {meta['classes']}")
    entries = [e for e in canonical.slices(meta, "val") if e.get("semantic")]
    if not entries:
        raise SegError(f"{ds_dir / 'meta.json'}: split 'val' has no annotated slices to calibrate on")
    head = {"dataset": dataset, "variant": variant, "split": "val", "n_slices": len(entries)}
    if get_kind(meta["kind"]).instances:  # instances: threshold, h and min_size chosen by val SEG
        doc = {**head, **_calibrate_ctc(cfg, dataset, variant, pred, ds_dir, meta, entries)}
    else:
        counts = ThresholdCounts()
        for e in entries:
            counts.add(_read_probability(pred, e), canonical.load_semantic(ds_dir, e) == 1)
        threshold, table = choose_threshold(counts)
        fixed = float(postprocess_section(cfg, dataset)["threshold"])
        doc = {**head, "criterion": "iou_mean", "threshold": threshold, "at_chosen": counts.scores(threshold),
               "at_fixed": counts.scores(fixed), "table": table}
    write_json(out, doc)
    return doc


def read_calibration(path: str | os.PathLike) -> dict:
    """The settings of a ``seg calibrate`` file: ``{"threshold"}`` plus ``"h"``, ``"min_size"`` and
    (three_class) ``"seed_threshold"`` when it has them (CTC data). SegError naming the file if
    absent or invalid."""
    from seg.io import read_json

    out = {"threshold": read_threshold(path)}
    doc = read_json(path)
    if "h" in doc:
        if not isinstance(doc["h"], (int, float)) or not doc["h"] > 0:
            raise SegError(f"{path}: 'h' must be a number > 0, got {doc['h']!r}")
        out["h"] = float(doc["h"])
    if "min_size" in doc:
        if not isinstance(doc["min_size"], int) or doc["min_size"] < 0:
            raise SegError(f"{path}: 'min_size' must be an integer >= 0, got {doc['min_size']!r}")
        out["min_size"] = int(doc["min_size"])
    if "seed_threshold" in doc:
        if not isinstance(doc["seed_threshold"], (int, float)) or not 0 <= doc["seed_threshold"] <= 1:
            raise SegError(f"{path}: 'seed_threshold' must be a number in [0, 1], got {doc['seed_threshold']!r}")
        out["seed_threshold"] = float(doc["seed_threshold"])
    return out


def read_threshold(path: str | os.PathLike) -> float:
    """The threshold of a ``seg calibrate`` file (SegError naming the file if absent or invalid)."""
    from seg.io import read_json

    p = Path(path)
    if not p.is_file():
        raise SegError(f"{p}: threshold file not found (run seg calibrate)")
    doc = read_json(p)
    t = doc.get("threshold") if isinstance(doc, dict) else None
    if not isinstance(t, (int, float)) or not 0 <= t <= 1:
        raise SegError(f"{p}: 'threshold' must be a number in [0, 1], got {t!r}")
    return float(t)
