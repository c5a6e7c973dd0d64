"""Validation during training: full-slice tiled inference on the val split and one score per model.

The prediction is ``argmax`` of ``seg.infer.predict_slice`` probabilities (the same tiled inference
``seg predict`` uses). IoU per class is pooled over all val slices (sum of intersections / sum of
unions); the val IoU is the mean over classes (a class absent from both prediction and truth
everywhere counts as IoU 1). With ``calibrate`` (``postprocess.calibrate``, two classes) the
prediction is ``p[1] >= t`` with the threshold ``t`` of the grid that is best on these slices, the
rule ``seg calibrate`` applies after training, so the best checkpoint is chosen for that rule.

CTC data (``postprocess`` given): the score is SEG, the measure ``seg calibrate`` chooses by, of the
instances that ``seg predict`` would make (the dataset's post-processing: method, ``h``,
``min_size``; the threshold of the grid that is best here with ``calibrate``, else the configured
one). SEG counts annotated cells only, so an unannotated cell found by the model (sparse
annotations) is not an error, as it would be for pixel IoU.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from seg.data.canonical import load_image, load_instances, load_meta, load_semantic, slices
from seg.evaluate.calibrate import GRID, ThresholdCounts, choose_threshold, seg_table
from seg.infer.predictor import predict_slice
from seg.targets.base import Target


def confusion_counts(pred: np.ndarray, target: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class intersection and union pixel counts, int64 (classes,), of two (H, W) class maps."""
    pred = np.asarray(pred).ravel().astype(np.int64)
    target = np.asarray(target).ravel().astype(np.int64)
    cm = np.bincount(target * classes + pred, minlength=classes * classes).reshape(classes, classes)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    return inter.astype(np.int64), union.astype(np.int64)


def iou_from_counts(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """IoU per class (float64); 1.0 where the union is empty."""
    inter, union = np.asarray(inter, np.float64), np.asarray(union, np.float64)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def load_val_slices(ds_dir: str | os.PathLike, split: str = "val") -> list[dict]:
    """``[{"id", "image" float32 (H,W) normalised, "target" uint8 (H,W), "instances" int32 (H,W) or
    None}]`` for the annotated slices of ``split`` (empty list when the split has none)."""
    ds_dir = Path(ds_dir)
    return [
        {"id": e["id"], "image": load_image(ds_dir, e), "target": load_semantic(ds_dir, e),
         "instances": load_instances(ds_dir, e) if e.get("instances") else None}
        for e in slices(load_meta(ds_dir), split)
        if e.get("semantic")
    ]


def seg_score(fgs: list[np.ndarray], refs: list[np.ndarray], postprocess: dict, *, target: Target,
              calibrate: bool = False) -> tuple[float, float]:
    """(SEG, threshold): SEG pooled over the frames of the instances made by ``target`` from
    ``fgs`` (its :meth:`~seg.targets.base.Target.calibration_input` of each frame) with the
    post-processing ``postprocess`` (method, threshold, h or seed_threshold, min_size), at the
    configured threshold or, with ``calibrate``, at the best threshold of the grid."""
    thresholds = GRID if calibrate else [float(postprocess["threshold"])]
    rows = seg_table(fgs, refs, target=target, pp=postprocess, thresholds=thresholds,
                     hs=[float(postprocess[target.second_key])], min_sizes=[int(postprocess["min_size"])])
    configured = float(postprocess["threshold"])
    best = max(rows, key=lambda r: (r["seg"] if r["seg"] == r["seg"] else -1.0, -abs(r["threshold"] - configured)))
    return float(best["seg"]), float(best["threshold"])


@torch.no_grad()
def validate(model: torch.nn.Module, val_slices: list[dict], infer_cfg: dict, device: torch.device,
             classes: int, *, target: Target, calibrate: bool = False,
             postprocess: dict | None = None, scale: float = 1.0) -> tuple[float, list[float]]:
    """The val score of ``model`` on ``val_slices`` (model is put in eval mode and back).

    Args:
        calibrate: score ``p[1] >= t`` at the best grid threshold ``t`` instead of the argmax
            (two classes only; ignored otherwise).
        postprocess: CTC data: the dataset's ``postprocess`` settings as the variant's target
            applies them; the score is then SEG of the post-processed instances (needs
            ``instances`` in every val slice).
        target: the run's target: its activation, and (with ``postprocess``) its objects.
        scale: resize factor of the images before the network (a run started from a package:
            :attr:`seg.settings.RunSettings.scale`); scores are on the images' own pixels.

    Returns:
        (mean IoU, per-class IoU list), or with ``postprocess``: (SEG, [threshold used]).
    """
    calibrate = calibrate and (classes == 2 or postprocess is not None)
    was_training = model.training
    model.eval()
    inter = np.zeros(classes, np.int64)
    union = np.zeros(classes, np.int64)
    counts = ThresholdCounts()
    fgs = []
    try:
        for s in val_slices:
            probs = np.asarray(predict_slice(model, s["image"], infer_cfg, device, target.activation,
                                             scale=scale))
            if postprocess is not None:
                fgs.append(target.calibration_input(probs))
                continue
            if calibrate:
                counts.add(probs[1], s["target"] == 1)
                continue
            i, u = confusion_counts(np.argmax(probs, axis=0), s["target"], classes)
            inter += i
            union += u
    finally:
        model.train(was_training)
    if postprocess is not None:
        seg, t = seg_score(fgs, [s["instances"] for s in val_slices], postprocess, target=target, calibrate=calibrate)
        return seg, [t]
    if calibrate:
        t, _ = choose_threshold(counts)
        best = counts.scores(t)
        return float(best["iou_mean"]), [float(best["iou_class0"]), float(best["iou_class1"])]
    iou = iou_from_counts(inter, union)
    return float(iou.mean()), [float(v) for v in iou]
