"""Example test slices for the report: image, ground truth, prediction and an error overlay.

Everything is compared on the foreground class, class 1 of the canonical semantic map (ISBI:
1 = interior, 0 = membrane; CTC: 1 = cell, 0 = background). A *false positive* pixel is predicted
class 1 where the ground truth is class 0, a *false negative* the reverse.

Sparse annotations (meta.json ``annotations: sparse``): a predicted object that overlaps no annotated
cell may well be a real, unannotated cell, so it is neither a false positive nor scored; its pixels
are drawn in a third colour (:data:`UNSCORED_COLOR`) and left out of the error fractions.

The canonical files are read directly by the layout of meta.json (``images/<id>.tif``,
``semantic/<id>.tif``) so the report needs nothing but the files; the raw intensities are shown
(percentile-stretched), not the training normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seg.errors import SegError
from seg.io import read_json, read_tiff
from seg.kinds.ctc import slice_mask_path
from seg.metrics.ctc import overlap_table

# RGB uint8 colours of the overlay (Okabe-Ito-like, distinguishable with colour-blindness).
FP_COLOR = (255, 160, 0)   # orange: predicted foreground, truly background
FN_COLOR = (0, 150, 255)   # blue: missed foreground
UNSCORED_COLOR = (170, 120, 210)  # lilac: predicted object touching no annotated cell (sparse data)


def stretch(image: np.ndarray, lo: float = 1.0, hi: float = 99.0) -> np.ndarray:
    """Percentile contrast stretch of a 2D image (any dtype) to float32 [0, 1]."""
    img = np.asarray(image, dtype=np.float32)
    a, b = np.percentile(img, [lo, hi])
    if b <= a:
        return np.zeros_like(img)
    return np.clip((img - a) / (b - a), 0.0, 1.0)


def error_overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, *,
                  alpha: float = 0.7, unscored: np.ndarray | None = None) -> np.ndarray:
    """Colour false positives and false negatives over a grey image.

    Args:
        image: (H, W) any dtype; shown percentile-stretched in grey.
        truth, pred: (H, W) bool (or 0/1) foreground masks.
        alpha: opacity of the error colours in [0, 1].
        unscored: (H, W) bool, sparse annotations: pixels of predicted objects that overlap no
            annotated cell, drawn in :data:`UNSCORED_COLOR` instead of as false positives.

    Returns:
        (H, W, 3) uint8 RGB: grey where prediction and truth agree, :data:`FP_COLOR` where
        ``pred & ~truth``, :data:`FN_COLOR` where ``truth & ~pred``.
    """
    truth, pred = np.asarray(truth, bool), np.asarray(pred, bool)
    if not (image.shape == truth.shape == pred.shape):
        raise SegError(f"error overlay: shapes differ: image {image.shape}, truth {truth.shape}, "
                       f"prediction {pred.shape}")
    grey = stretch(image)[..., None] * 255.0
    rgb = np.repeat(grey, 3, axis=2)
    extra = np.zeros_like(pred) if unscored is None else np.asarray(unscored, bool)
    for mask, colour in ((pred & ~truth & ~extra, FP_COLOR), (truth & ~pred, FN_COLOR),
                         (extra & ~truth, UNSCORED_COLOR)):
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(colour, np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


@dataclass
class Example:
    """One test slice: ``image`` (H, W) raw dtype; ``truth``/``pred`` (H, W) bool foreground;
    ``unscored`` (H, W) bool or None: sparse annotations, predicted objects touching no annotated cell."""

    id: str
    image: np.ndarray
    truth: np.ndarray
    pred: np.ndarray
    unscored: np.ndarray | None = None

    @property
    def fp_fraction(self) -> float:
        fp = self.pred & ~self.truth
        return float((fp if self.unscored is None else fp & ~self.unscored).mean())

    @property
    def fn_fraction(self) -> float:
        return float((self.truth & ~self.pred).mean())

    @property
    def iou(self) -> float:
        pred = self.pred if self.unscored is None else self.pred & ~self.unscored
        union = (pred | self.truth).sum()
        return float((pred & self.truth).sum() / union) if union else 1.0


def load_prediction(pred_dir: Path, entry: dict, *, threshold: float = 0.5,
                    meta: dict | None = None) -> np.ndarray | None:
    """The foreground mask (H, W) bool predicted for a slice, or None if no file is there.

    Looks, in order, for ``<id>_seg.tif`` (ISBI, {0,1}, 1 = interior), the CTC instance mask
    ``<sequence>_RES/maskT.tif`` (>0 = cell; :func:`seg.kinds.ctc.slice_mask_path`, its digits from
    the sequence's length in ``meta`` when given), then ``<id>_prob.tif`` (a (H, W) foreground
    probability, or (classes, H, W) probabilities of which class 1 is used) thresholded at ``threshold``.
    """
    seg = pred_dir / f"{entry['id']}_seg.tif"
    if seg.is_file():
        return read_tiff(seg, ndim=2) > 0
    if entry.get("sequence") is not None and entry.get("frame") is not None:
        mask = slice_mask_path(pred_dir, entry, meta)
        if mask.is_file():
            return read_tiff(mask, ndim=2) > 0
    prob = pred_dir / f"{entry['id']}_prob.tif"
    if prob.is_file():
        p = read_tiff(prob)
        if p.ndim == 3:
            p = p[1]
        return p >= threshold
    return None


def pick_evenly(items: list, n: int) -> list:
    """``n`` items spread evenly over the list (first and last included), in order."""
    if n <= 0 or not items:
        return []
    if n >= len(items):
        return list(items)
    idx = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in idx]


def load_examples(ds_dir: Path, run_dir: Path, n: int, *, split: str = "test",
                  threshold: float = 0.5) -> tuple[list[Example], list[str]]:
    """Up to ``n`` annotated slices of ``split`` with the run's predictions.

    Args:
        ds_dir: canonical dataset folder ``data/<dataset>/``.
        run_dir: result folder holding ``pred/<split>/``.

    Returns:
        The examples and notes explaining anything that was left out (no dataset, no
        predictions, shape mismatch). Never raises for missing files.
    """
    notes: list[str] = []
    meta_path = ds_dir / "meta.json"
    if not meta_path.is_file():
        return [], [f"no canonical dataset at {ds_dir} (run `seg ingest`), so no example slices"]
    try:
        meta = read_json(meta_path)
        entries = [s for s in meta["slices"] if s.get("split") == split and s.get("semantic")]
    except (SegError, KeyError, TypeError) as e:
        return [], [f"{meta_path}: cannot list slices ({e}), so no example slices"]
    if not entries:
        return [], [f"{meta_path}: no annotated {split} slices, so no example slices"]
    pred_dir = run_dir / "pred" / split
    out = []
    for entry in pick_evenly(entries, n):
        try:
            pred = load_prediction(pred_dir, entry, threshold=threshold, meta=meta)
            if pred is None:
                notes.append(f"{pred_dir}: no prediction for slice {entry['id']}")
                continue
            image = read_tiff(ds_dir / entry["image"], ndim=2)
            truth = read_tiff(ds_dir / entry["semantic"], ndim=2) == 1
        except SegError as e:
            notes.append(f"example {entry['id']} left out: {e}")
            continue
        if not (image.shape == truth.shape == pred.shape):
            notes.append(f"example {entry['id']} left out: image {image.shape}, ground truth "
                         f"{truth.shape} and prediction {pred.shape} differ in shape")
            continue
        unscored = None
        if meta.get("annotations") == "sparse":
            unscored = _unscored(pred_dir, entry, ds_dir, meta)
            if unscored is not None and unscored.shape != pred.shape:
                unscored = None
        out.append(Example(entry["id"], image, truth, pred, unscored))
    return out, notes


def _unscored(pred_dir: Path, entry: dict, ds_dir: Path, meta: dict) -> np.ndarray | None:
    """Pixels of the predicted CTC objects that overlap no annotated cell (bool (H, W)), or None
    when the instance mask or the annotation is not there."""
    mask = slice_mask_path(pred_dir, entry, meta)
    if not mask.is_file() or not entry.get("instances"):
        return None
    try:
        inst = read_tiff(mask, ndim=2)
        ref = read_tiff(ds_dir / entry["instances"], ndim=2) > 0
    except SegError:
        return None
    if inst.shape != ref.shape:
        return None
    touching = np.unique(inst[ref & (inst > 0)])
    return (inst > 0) & ~np.isin(inst, touching)


def load_target_panels(ds_dir: Path, runs: list[tuple[str, Path]], *, split: str = "test"
                       ) -> tuple[dict | None, list[tuple[str, np.ndarray, float]], list[str]]:
    """One annotated ``split`` slice (the middle one) with each run's instance labels on it, for the
    comparison of targets.

    Args:
        runs: (panel title, run folder holding ``pred/<split>/``) per target.

    Returns:
        ({"id", "image" (H, W), "truth" int (H, W) instances} or None, [(title, instances uint
        (H, W), SEG of the slice's annotated cells)], notes). Never raises for missing files.
    """

    notes: list[str] = []
    try:
        meta = read_json(ds_dir / "meta.json")
        entries = [s for s in meta["slices"] if s.get("split") == split and s.get("instances")]
    except (SegError, KeyError, TypeError) as e:
        return None, [], [f"{ds_dir / 'meta.json'}: cannot list slices ({e}), so no target comparison"]
    if not entries:
        return None, [], [f"{ds_dir / 'meta.json'}: no annotated {split} slice, so no target comparison"]
    entry = entries[len(entries) // 2]
    try:
        image = read_tiff(ds_dir / entry["image"], ndim=2)
        truth = read_tiff(ds_dir / entry["instances"], ndim=2)
    except SegError as e:
        return None, [], [f"target comparison left out: {e}"]
    panels = []
    for title, run_dir in runs:
        mask = slice_mask_path(run_dir / "pred" / split, entry, meta)
        try:
            inst = read_tiff(mask, ndim=2)
        except SegError as e:
            notes.append(f"target comparison: {title} left out: {e}")
            continue
        if inst.shape != truth.shape:
            notes.append(f"target comparison: {mask} has shape {inst.shape}, the slice {truth.shape}")
            continue
        seg = float(overlap_table(truth, inst).counts(None).scores()["seg"])
        panels.append((title, inst, seg))
    return {"id": entry["id"], "image": image, "truth": truth}, panels, notes
