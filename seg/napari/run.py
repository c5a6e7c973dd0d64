"""The plugin's long jobs as plain generators, run by the widgets in napari thread workers.

Each job yields ``(done, total, message)`` between steps (the widget's progress bar; cancelling stops
the job at the next yield) and returns its result. Nothing here imports napari or Qt, so the jobs
are tested as they are (``tests/test_napari.py``).

- :func:`segment_job`: a package (folder or zip, :func:`seg.packaging.load_package`) on an image
  (H, W) or a stack / time-lapse (N, H, W), plane by plane as :func:`seg.segment` does (the
  package's preprocessing, tiling, threshold and post-processing at the scale ``diameter`` asks:
  ``auto`` is measured once, on the first plane). Returns a :class:`Segmentation`.
- :func:`finetune_job`: :func:`seg.finetune.finetune` from the BASE package on every pair of a
  training folder (:mod:`seg.napari.pairs`; its ``dataset.json`` says if it is sparse), into the next
  free ``<folder>_models/finetune-NNN``; then the new package is loaded and, given an image, segments
  it again. Returns ``(summary, Segmentation | None)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from seg.errors import SegError
from seg.napari.pairs import folder_options, list_pairs
from seg.package import ModelPackage
from seg.packaging import load_package

from seg.export.segment import resolve_scale, segment_image
from seg.finetune import finetune

Progress = tuple[int, int, str]
MODELS_SUFFIX = "_models"


@dataclass
class Segmentation:
    """One image's segmentation: ``probability`` float32 and ``labels`` of the image's shape ((H, W)
    or (N, H, W)); ``labels_kind`` ``instance`` (uint16 ids, 0 = background) or ``semantic``
    (uint8 class map, 1 = foreground); the package used and where it came from."""

    probability: np.ndarray
    labels: np.ndarray
    labels_kind: str
    package: ModelPackage
    package_path: str
    scale: dict | None = None  # the resize used and how it was found (seg.export.segment.Scale.record)


def resolve_package_path(path: str | os.PathLike) -> Path:
    """A package folder or zip from what the user chose: the folder itself, its ``package.json``
    (the file dialog picks files), or a ``.zip``.

    Raises:
        SegError: empty or missing path.
    """
    if not str(path).strip() or str(path).strip() == ".":
        raise SegError("choose a model package (a folder from seg package, its package.json, or a .zip)")
    p = Path(path).expanduser()
    if p.is_file() and p.name == "package.json":
        p = p.parent
    if not p.exists():
        raise SegError(f"{p}: no such model package")
    return p


def parse_diameter(text: str | float | None) -> float | str | None:
    """The widget's diameter field: empty = the package's own scale (None: not passed to
    :func:`seg.segment`), ``auto`` = estimated from the image, else a number of pixels > 0.

    Raises:
        SegError: anything else.
    """
    if text is None:
        return None
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        t = text.strip().lower()
        if t in ("", "none", "package"):
            return None
        if t == "auto":
            return "auto"
        try:
            value = float(t)
        except ValueError:
            raise SegError(f"diameter {text!r}: a number of pixels, 'auto', or empty (the package's)") from None
    if not np.isfinite(value) or value <= 0:
        raise SegError(f"diameter {text!r}: must be > 0 pixels")
    return value


def labels_kind(pkg: ModelPackage) -> str:
    """``instance`` if the package's kind segments instances, else ``semantic`` (a class map)."""
    return "instance" if pkg.dataset_kind.instances else "semantic"


def planes_of(image) -> np.ndarray:
    """The image as (N, H, W) planes (N = 1 for (H, W)).

    Raises:
        SegError: not 2D or 3D (colour images and (T, Z, H, W) are refused).
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        return arr
    raise SegError(f"expected an image (H, W), a stack or a time-lapse (N, H, W), got shape {arr.shape}")


def segment_job(image, package: ModelPackage | str | os.PathLike, *, device: str = "cpu",
                diameter: float | str | None = None) -> Iterator[Progress]:
    """Segment ``image`` (H, W) or (N, H, W) plane by plane with ``package`` (loaded, or a path);
    yields ``(planes done, planes, message)``; returns a :class:`Segmentation` of the image's shape.

    Raises:
        SegError: bad image shape, missing / bad package, and what :func:`seg.segment` raises.
    """
    planes = planes_of(image)
    n = len(planes)
    if isinstance(package, ModelPackage):
        pkg, where = package, package.source
    else:
        yield 0, n, "loading the package"
        p = resolve_package_path(package)
        pkg, where = load_package(p), str(p)
    kind = labels_kind(pkg)
    probs, labels = [], []
    yield 0, n, f"segmenting with {pkg.name}"
    scale = resolve_scale(pkg, diameter, planes[0], device=device)  # auto: measured on the first plane
    for i, plane in enumerate(planes):
        prob, lab = segment_image(pkg, plane, scale, device=device)
        probs.append(prob)
        labels.append(lab)
        yield i + 1, n, f"segmented {i + 1} of {n}"
    prob, lab = np.stack(probs).astype(np.float32), np.stack(labels)
    if np.ndim(image) == 2:
        prob, lab = prob[0], lab[0]
    return Segmentation(prob, lab, kind, pkg, where, scale.record())


def next_model_dir(folder: str | os.PathLike) -> Path:
    """``<folder>_models/finetune-NNN`` with the next free NNN (beside the training folder, which
    keeps only pairs)."""
    root = Path(folder).with_name(Path(folder).name + MODELS_SUFFIX)
    i = 1
    while (root / f"finetune-{i:03d}").exists():
        i += 1
    return root / f"finetune-{i:03d}"


def finetune_job(base: str | os.PathLike, folder: str | os.PathLike, *, steps: int | None = None,
                 minutes: float | None = None, device: str = "auto", image=None,
                 diameter: float | str | None = None, segment_device: str = "cpu",
                 out: str | os.PathLike | None = None) -> Iterator[Progress]:
    """Fine-tune the BASE package on every pair of ``folder`` (sparse as its ``dataset.json``
    says), load the new package and, if ``image`` is given, segment it again.

    Yields ``(step, 3, message)``: fine-tuning, loading, then :func:`segment_job`'s own progress.
    Returns ``(summary, Segmentation | None)``; ``summary`` is :func:`seg.finetune.finetune`'s
    (``package``, ``before``, ``after``, ``held_out``, ``pairs``, ``seconds``) plus ``out``.

    Raises:
        SegError: a folder without pairs, a missing base package, and what ``seg finetune`` raises.
    """
    base_path = resolve_package_path(base)
    names = list_pairs(folder)
    if not names:
        raise SegError(f"{folder}: no teaching pairs yet (save corrected frames with Teach first)")
    opts = folder_options(folder)
    out = Path(out) if out is not None else next_model_dir(folder)
    yield 0, 3, f"fine-tuning on {len(names)} pairs ({'sparse' if opts['sparse'] else 'dense'})"
    summary = dict(finetune(base_path, Path(folder), out, steps=steps, minutes=minutes, device=device, **opts))
    summary["out"] = str(out)
    yield 1, 3, "loading the new package"
    pkg = load_package(summary["package"])
    if image is None:
        return summary, None
    yield 2, 3, "segmenting again"
    result = yield from segment_job(image, pkg, device=segment_device, diameter=diameter)
    return summary, result


def _score(d: dict | None) -> str | None:
    if not d:
        return None
    for key, label in (("seg", "SEG"), ("iou_mean", "mean IoU"), ("iou", "IoU")):
        if d.get(key) is not None:
            return f"{label} {float(d[key]):.3f}"
    return None


def scores_text(summary: dict) -> str:
    """One line for the widget: before -> after on the held-out pairs, or why there are none."""
    before, after = _score(summary.get("before")), _score(summary.get("after"))
    held = summary.get("held_out") or []
    head = f"{summary.get('pairs', '?')} pairs"
    if summary.get("seconds") is not None:
        head += f", {float(summary['seconds']):.0f} s"
    if before is None and after is None:
        return f"{head}; no before/after scores (fewer than 3 pairs: every pair was trained on)"
    return f"{head}; held out {', '.join(map(str, held)) or '-'}: before {before or '-'} -> after {after or '-'}"
