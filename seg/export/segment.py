"""``seg segment`` and :func:`segment`: a packaged model on new images, stacks and CTC sequences.

Per image the computation is exactly ``seg predict``'s: the package's preprocessing
(:meth:`seg.package.format.ModelPackage.preprocess`: the same shift and normalisation functions
``seg predict`` reads canonical images with), :func:`seg.infer.predictor.predict_slice` with the
package's tile / overlap / blend / TTA / AMP settings, then the package's threshold and
post-processing (:mod:`seg.infer.postprocess`). So the probabilities equal the workflow's own
predictions of the same images (to float rounding, fp32).

Outputs (``--out`` folder, built under a temporary name beside it and renamed into place only when
every input is done, so an error leaves no partial folder), by the model's dataset kind (its
``segment_image``, ``segment_stack`` and ``segment_sequence``, :class:`seg.kinds.base.Kind`):

==========================  ===========================================  ==========================================
input                       ISBI 2012 kind (class 1 = interior)           CTC kind (class 1 = cell)
==========================  ===========================================  ==========================================
image ``X.tif``/``X.png``   ``X_prob.tif`` float32 (H, W),               ``X_prob.tif`` float32 (H, W),
                            ``X_seg.tif`` uint8 (1 = interior)            ``X_mask.tif`` uint16 instances
stack ``X.tif`` (Z pages)   ``X_prob.tif`` float32 (Z, H, W): the ISBI    ``X_prob.tif`` float32 (Z, H, W),
                            2012 submission stack (1 = interior),         ``X_RES/maskT.tif`` uint16 (frame = page)
                            ``X_seg.tif`` uint8 (Z, H, W), ``X_prob.json``
CTC sequence ``S/tNNN.tif`` ``S/tNNN_prob.tif``, ``S/tNNN_seg.tif``       ``S_RES/maskT.tif`` uint16 (CTC result
                                                                          layout), ``S_prob/tNNN.tif`` float32
==========================  ===========================================  ==========================================

Every probability TIFF says in its ImageDescription which class it is the probability of;
``segment_summary.json`` lists every input, its outputs and the conventions.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from seg.device import resolve_device
from seg.errors import SegError
from seg.export.inputs import discover, read_image, read_stack
from seg.infer.predictor import predict_slice
from seg.io import atomic_path, write_json
from seg.package import ModelPackage, load_package
from seg.progress import progress
from seg.version import __version__


def _package(model, **kwargs):
    return model if isinstance(model, ModelPackage) else load_package(model, **kwargs)


def predict_probabilities(pkg, image: np.ndarray, *, device="cpu", amp: str | None = None) -> np.ndarray:
    """Softmax probabilities float32 (classes, H, W) of one raw 2D image (any numeric dtype)."""

    image = np.asarray(image)
    if image.ndim != 2:
        raise SegError(f"segment: expected a 2D image (H, W), got shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise SegError(f"segment: image dtype {image.dtype} is not a grey value type (integer or float)")
    cfg = {**pkg.inference, **({"amp": amp} if amp is not None else {})}  # the package is not changed
    return predict_slice(pkg.model, pkg.preprocess(image), cfg, device, activation=pkg.activation)


def labels_from(pkg, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probability float32 (H, W), segmentation) in the convention of the package's kind, decoded by
    its target (:meth:`seg.package.format.ModelPackage.decode`): ISBI uint8 (1 = interior), CTC
    uint16 instance labels."""
    return pkg.decode(probs)


def segment(image, model, *, device: str = "cpu", amp: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Segment an image or a stack with a packaged model (what ``seg segment`` does per image).

    Args:
        image: (H, W) image, or (Z, H, W) stack of them, any integer or float grey values (raw, not
            normalised: the package's preprocessing is applied). (H, W, 3|4) colour arrays are refused.
        model: a :class:`seg.package.format.ModelPackage`, or the path of a package folder / zip /
            run folder (loaded on every call: load it once with ``load_package`` for many images).
        device: ``cpu``, ``cuda`` or ``auto``.
        amp: override of the package's ``inference.amp`` (``none`` = fp32, exact on every CPU).

    Returns:
        (probabilities, labels): float32 probability of class 1 (ISBI: interior, 1 = interior;
        CTC: cell), (H, W) or (Z, H, W); labels of the same shape, ISBI uint8 1 = interior
        (p >= threshold), CTC uint16 instances 0 = background.
    """

    pkg = _package(model)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:
        raise SegError(f"segment: image of shape {arr.shape} looks like colour (H, W, {arr.shape[-1]}); the model "
                       "expects one grey channel")
    if arr.ndim not in (2, 3):
        raise SegError(f"segment: expected an image (H, W) or a stack (Z, H, W), got shape {arr.shape}")
    dev = resolve_device(device, section="inference")
    planes = arr[None] if arr.ndim == 2 else arr
    probs, labels = [], []
    for plane in planes:
        p, lab = labels_from(pkg, predict_probabilities(pkg, plane, device=dev, amp=amp))
        probs.append(p)
        labels.append(lab)
    if arr.ndim == 2:
        return probs[0], labels[0]
    return np.stack(probs), np.stack(labels)


# ----------------------------------------------------------------------------- writing
def _conventions(pkg) -> dict:
    cls = pkg.meta["dataset"]["classes"][1]
    return {
        "probability": f"class 1 '{cls}': {pkg.meta['outputs']['probability']}",
        "segmentation": pkg.meta["outputs"]["segmentation"],
        "threshold": pkg.threshold,
    }


def _segment_item(pkg, item, tmp: Path, run, bar) -> tuple[list[str], list[float]]:
    """Predict one input item and write it as the package's kind does (:meth:`~seg.kinds.base.Kind.segment_image`,
    ``segment_stack``, ``segment_sequence``); returns (written paths relative to ``tmp``, seconds/image)."""

    kind = pkg.dataset_kind
    conv = _conventions(pkg)["probability"]
    secs = []

    def one(image):
        t0 = time.perf_counter()
        out = run(image)
        secs.append(time.perf_counter() - t0)
        bar.update(1)
        return out

    if item.kind == "image":
        prob, lab = one(read_image(item.path))
        written = kind.segment_image(tmp, item.name, prob, lab, conv)
    elif item.kind == "stack":
        results = [one(plane) for plane in read_stack(item)]
        info = {"input": str(item.path), "model": pkg.name, "threshold": pkg.threshold,
                "class_1": pkg.meta["dataset"]["classes"][1], "segmentation": pkg.meta["outputs"]["segmentation"]}
        written = kind.segment_stack(tmp, item.name, results, conv, info)
    else:  # CTC sequence
        written = kind.segment_sequence(tmp, item.name, item.frames, lambda path: one(read_image(path)), conv)
    return written, secs


def run_segment(model, inputs: list[str | os.PathLike], out: str | os.PathLike, *, device: str = "auto",
                amp: str | None = None, config: str | os.PathLike | None = None,
                data_dir: str | os.PathLike | None = None) -> dict:
    """Segment every input (see module docstring) into ``out`` atomically; returns the summary
    (also ``out/segment_summary.json``).

    Raises:
        SegError: bad model or input (named; checked before any prediction), or a failure on the way
            (nothing is left under ``out``).
    """
    import torch


    if not inputs:
        raise SegError("segment: no INPUT given")
    pkg = _package(model, config=config, data_dir=data_dir)
    items = discover(inputs)
    dev = resolve_device(device, section="inference")
    use_amp = amp if amp is not None else pkg.inference["amp"]

    def run(image):
        return labels_from(pkg, predict_probabilities(pkg, image, device=dev, amp=use_amp))

    total = sum(it.n_images for it in items)
    records, all_secs = [], []
    t_start = time.perf_counter()
    with atomic_path(out) as tmp, torch.inference_mode():
        tmp.mkdir(parents=True)
        with progress(total=total, desc=f"segment {pkg.name}", unit="image") as bar:
            for it in items:
                written, secs = _segment_item(pkg, it, tmp, run, bar)
                all_secs += secs
                records.append({"input": str(it.path), "kind": it.kind, "shape": list(it.shape),
                                "outputs": written, "seconds": round(float(np.sum(secs)), 4)})
        wall = time.perf_counter() - t_start
        summary = {
            "model": pkg.name, "model_source": pkg.source, "kind": pkg.kind, "seg_version": __version__,
            "package_format_version": pkg.meta["format_version"], "conventions": _conventions(pkg),
            "postprocess": pkg.postprocess, "inference": {**pkg.inference, "amp": use_amp}, "device": str(dev),
            "inputs": records, "n_images": total, "seconds_predict": float(np.sum(all_secs)),
            "seconds_total": wall, "images_per_second": total / wall if wall > 0 else None,
        }
        write_json(tmp / "segment_summary.json", summary)
    return summary
