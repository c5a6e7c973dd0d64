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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seg.device import resolve_device
from seg.data.fingerprint import inscribed_diameters
from seg.errors import SegError
from seg.export.inputs import discover, read_image, read_stack
from seg.infer.predictor import predict_slice
from seg.infer.rescale import FACTOR_RANGE, is_identity, resize_labels, resize_to, scale_factor, scaled_shape
from seg.io import atomic_path, write_json
from seg.package import ModelPackage
from seg.packaging import load_package
from seg.progress import progress
from seg.version import __version__


def _package(model, **kwargs):
    return model if isinstance(model, ModelPackage) else load_package(model, **kwargs)


def predict_probabilities(pkg, image: np.ndarray, *, device="cpu", amp: str | None = None,
                          scale: float = 1.0) -> np.ndarray:
    """Softmax probabilities float32 (classes, H, W) of one raw 2D image (any numeric dtype), the
    image resized by ``scale`` before the network and the probabilities back to (H, W)."""

    image = np.asarray(image)
    if image.ndim != 2:
        raise SegError(f"segment: expected a 2D image (H, W), got shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise SegError(f"segment: image dtype {image.dtype} is not a grey value type (integer or float)")
    cfg = {**pkg.inference, **({"amp": amp} if amp is not None else {})}  # the package is not changed
    return predict_slice(pkg.model, pkg.preprocess(image), cfg, device, activation=pkg.activation, scale=scale)


# ----------------------------------------------------------------------------- object scale
@dataclass(frozen=True)
class Scale:
    """How one image is resized for a package (:mod:`seg.infer.rescale`).

    Attributes:
        network: resize factor of the image before the network (the package's network learned
            objects of ``network_diameter`` px: factor = that / the image's object diameter).
        decode: resize factor of the probabilities before the post-processing (whose sizes are in
            the pixels of the package's training images: factor = package diameter / the image's);
            the labels come back to the image's grid by nearest neighbour.
        diameter: the image's object diameter in px (None: taken as the package's).
        how: in words, where the diameter came from.
    """

    network: float
    decode: float
    diameter: float | None
    how: str

    def record(self) -> dict:
        return {"factor": round(self.network, 6), "decode_factor": round(self.decode, 6),
                "diameter": None if self.diameter is None else round(float(self.diameter), 3), "how": self.how}


def package_scale(pkg, diameter: float | None = None, *, how: str | None = None) -> Scale:
    """The :class:`Scale` of images whose objects measure ``diameter`` px for ``pkg`` (None: the
    package's own input scale: its ``scale.factor``, 1 for a package trained on its data as they are).

    Raises:
        SegError: a diameter for a package that records none (re-package it), a bad diameter or a
            factor outside :data:`seg.infer.rescale.FACTOR_RANGE` (naming the values).
    """
    sc = pkg.scale
    if diameter is None:
        factor = float(sc["factor"]) if sc else 1.0
        return Scale(factor, 1.0, None, how or "the package's own scale (no --diameter)")
    if sc is None:
        raise SegError(f"{pkg.source or pkg.name}: the package records no object diameter (packaged before seg "
                       "recorded it): re-package its run with this seg to use --diameter")
    network = scale_factor(sc["network_diameter"], diameter, where="--diameter")
    decode = scale_factor(sc["diameter"], diameter, where="--diameter")
    return Scale(1.0 if is_identity(network) else network, 1.0 if is_identity(decode) else decode, float(diameter),
                 how or f"--diameter {float(diameter):g} px")


def decode_at(pkg, probs: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`labels_from` at the post-processing's scale: the probabilities (C, H, W) resized by
    ``factor``, decoded, then the probability bilinearly and the labels by nearest neighbour back
    to (H, W)."""
    if is_identity(factor):
        return labels_from(pkg, probs)
    shape = probs.shape[-2:]
    prob, labels = labels_from(pkg, resize_to(probs, scaled_shape(shape, factor)))
    return resize_to(prob, shape), resize_labels(labels, shape)


def estimate_diameter(pkg, probability: np.ndarray) -> float | None:
    """The objects' median equivalent diameter in px, estimated from a first pass's class-1
    ``probability`` (H, W): the foreground (``>= pkg.threshold``) split into 4-connected regions,
    the median of their inscribed diameters (:func:`seg.data.fingerprint.inscribed_diameters`: a
    measure that a first pass at the wrong scale, which splits large objects or merges small
    touching ones, hardly changes; weighted by the regions' areas, so that specks of noise weigh
    little), converted to an equivalent diameter with the ratio the
    package's training objects have between the two (``scale.diameter / scale.inscribed_diameter``;
    1 for a package that does not record it). None when there is no region of at least 3 px across."""
    from skimage.measure import label

    regions = label(np.asarray(probability) >= pkg.threshold, connectivity=1)
    d = inscribed_diameters(regions)
    area = np.bincount(regions.ravel())[1:]
    area = area[area > 0].astype(np.float64)
    keep = d >= 3.0
    if not keep.any():
        return None
    d, area = d[keep], area[keep]
    order = np.argsort(d)  # the area-weighted median: specks of noise weigh little
    cum = np.cumsum(area[order])
    median = float(d[order][np.searchsorted(cum, 0.5 * cum[-1])])
    sc = pkg.scale or {}
    ratio = float(sc["diameter"]) / float(sc["inscribed_diameter"]) if sc.get("inscribed_diameter") else 1.0
    return median * ratio


def _probe(pkg, image: np.ndarray, factor: float, *, device, amp) -> tuple[float | None, float]:
    """One probe of ``--diameter auto``: the image predicted at ``factor`` without TTA; returns the
    diameter :func:`estimate_diameter` reads off its foreground (px of the image) and the network's
    confidence there, the mean of ``|2p - 1|`` over the foreground pixels (0 without any)."""
    probs = predict_slice(pkg.model, pkg.preprocess(image),
                          {**pkg.inference, "tta": False, **({"amp": amp} if amp is not None else {})},
                          device, activation=pkg.activation, scale=factor)
    p = pkg.target.probability(probs, foreground=pkg.dataset_kind.foreground)
    fg = p >= pkg.threshold
    return estimate_diameter(pkg, p), float(np.mean(np.abs(2.0 * p[fg] - 1.0))) if fg.any() else 0.0


def auto_scale(pkg, image: np.ndarray, *, device="cpu", amp: str | None = None) -> Scale:
    """``--diameter auto``: the objects' diameter estimated from probes (cellpose's size model
    estimates the same quantity).

    A first probe at the package's own scale gives a diameter ``D1`` (:func:`_probe`). Objects much
    larger than the network learned are often split by it into pieces of about its own size, so
    ``D1`` can be too small; the image is probed again at the factor ``D1`` asks for, and at half
    and a quarter of it, and the probe whose foreground the network is most confident about (mean
    ``|2p - 1|``; on GOWT1 shrunk 4x, 2x and enlarged 2x the most confident probe was the one at
    the right scale) gives the diameter. Probes run without TTA; factors outside
    :data:`seg.infer.rescale.FACTOR_RANGE` are not probed.

    Raises:
        SegError: the first probe finds no object (give the diameter), or the estimate needs a
            factor out of range.
    """
    first = package_scale(pkg)
    probes = {first.network: _probe(pkg, image, first.network, device=device, amp=amp)}
    d1 = probes[first.network][0]
    if d1 is None:
        raise SegError("--diameter auto: the first pass at the package's own scale found no object to measure; "
                       "give the objects' diameter in pixels (--diameter D)")
    lo, hi = FACTOR_RANGE
    f1 = float(pkg.scale["network_diameter"]) / d1 if pkg.scale else first.network
    for f in (f1, f1 / 2, f1 / 4):
        if lo <= f <= hi and not any(abs(f / g - 1) < 0.05 for g in probes):
            probes[f] = _probe(pkg, image, f, device=device, amp=amp)
    found = {f: v for f, v in probes.items() if v[0] is not None}
    best = max(found, key=lambda f: found[f][1])
    d = found[best][0]
    tried = ", ".join(f"x{f:.2g}: {v[0]:.0f} px, confidence {v[1]:.3f}" if v[0] is not None else f"x{f:.2g}: none"
                      for f, v in sorted(probes.items()))
    return package_scale(pkg, d, how=f"auto: {d:.1f} px, from the foreground of {pkg.name}'s most confident "
                                      f"probe ({tried})")


def resolve_scale(pkg, diameter, image: np.ndarray, *, device="cpu", amp: str | None = None) -> Scale:
    """The :class:`Scale` for ``diameter`` (None, a number of px, or ``"auto"``: measured on ``image``)."""
    if isinstance(diameter, str):
        if diameter.strip().lower() == "auto":
            return auto_scale(pkg, image, device=device, amp=amp)
        try:
            diameter = float(diameter)
        except ValueError:
            raise SegError(f"--diameter: expected a number of pixels or 'auto', got {diameter!r}") from None
    return package_scale(pkg, diameter)


def segment_image(pkg, image: np.ndarray, scale: Scale, *, device="cpu",
                  amp: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probability float32 (H, W), segmentation (H, W)) of one raw image at ``scale``."""
    probs = predict_probabilities(pkg, image, device=device, amp=amp, scale=scale.network)
    return decode_at(pkg, probs, scale.decode)


def labels_from(pkg, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probability float32 (H, W), segmentation) in the convention of the package's kind, decoded by
    its target (:meth:`seg.package.format.ModelPackage.decode`): ISBI uint8 (1 = interior), CTC
    uint16 instance labels."""
    return pkg.decode(probs)


def segment(image, model, *, device: str = "cpu", amp: str | None = None,
            diameter: float | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Segment an image or a stack with a packaged model (what ``seg segment`` does per image).

    Args:
        image: (H, W) image, or (Z, H, W) stack of them, any integer or float grey values (raw, not
            normalised: the package's preprocessing is applied). (H, W, 3|4) colour arrays are refused.
        model: a :class:`seg.package.format.ModelPackage`, or the path of a package folder / zip /
            run folder (loaded on every call: load it once with ``load_package`` for many images).
        device: ``cpu``, ``cuda`` or ``auto``.
        amp: override of the package's ``inference.amp`` (``none`` = fp32, exact on every CPU).
        diameter: the objects' diameter in px (each image is resized so that its objects have the
            size the package's network learned; results come back at the input's size), ``"auto"``
            (measured on a first pass; a stack: on its first plane) or None (the package's own scale).

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
    scale = resolve_scale(pkg, diameter, planes[0], device=dev, amp=amp)
    probs, labels = [], []
    for plane in planes:
        p, lab = segment_image(pkg, plane, scale, device=dev, amp=amp)
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
                data_dir: str | os.PathLike | None = None, diameter: float | str | None = None) -> dict:
    """Segment every input (see module docstring) into ``out`` atomically; returns the summary
    (also ``out/segment_summary.json``).

    ``diameter``: the objects' diameter in px, ``"auto"`` or None (:func:`segment`); ``auto``
    measures it per input (a stack or a sequence: on its first image, then keeps it for all). The
    summary says per input the factor used and how it was found.

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
    if diameter is not None and str(diameter).strip().lower() != "auto":
        resolve_scale(pkg, diameter, None)  # a bad diameter stops here, before any prediction

    def runner():
        """A ``run(image)`` for one input, which resolves its scale on its first image."""
        state: dict = {}

        def run(image):
            if "scale" not in state:
                state["scale"] = resolve_scale(pkg, diameter, image, device=dev, amp=use_amp)
            return segment_image(pkg, image, state["scale"], device=dev, amp=use_amp)

        return run, state

    total = sum(it.n_images for it in items)
    records, all_secs = [], []
    t_start = time.perf_counter()
    with atomic_path(out) as tmp, torch.inference_mode():
        tmp.mkdir(parents=True)
        with progress(total=total, desc=f"segment {pkg.name}", unit="image") as bar:
            for it in items:
                run, state = runner()
                written, secs = _segment_item(pkg, it, tmp, run, bar)
                all_secs += secs
                records.append({"input": str(it.path), "kind": it.kind, "shape": list(it.shape),
                                "outputs": written, "seconds": round(float(np.sum(secs)), 4),
                                "scale": state["scale"].record() if "scale" in state else None})
        wall = time.perf_counter() - t_start
        summary = {
            "model": pkg.name, "model_source": pkg.source, "kind": pkg.kind, "seg_version": __version__,
            "package_format_version": pkg.meta["format_version"], "conventions": _conventions(pkg),
            "postprocess": pkg.postprocess, "inference": {**pkg.inference, "amp": use_amp}, "device": str(dev),
            "inputs": records, "n_images": total, "seconds_predict": float(np.sum(all_secs)),
            "seconds_total": wall, "images_per_second": total / wall if wall > 0 else None,
            "scale": {"diameter": diameter, "package": pkg.scale},
        }
        write_json(tmp / "segment_summary.json", summary)
    return summary
