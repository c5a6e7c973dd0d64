"""Small seeded synthetic datasets in the raw formats, for tests (``seg synth``).

- ``ctc``: CTC layout ``01/tNNN.tif`` + ``01_GT/SEG/man_segNNN.tif`` (and ``02``): irregular cells
  that touch, slowly moving, imaged with DIC-like relief shading (directional derivative of a
  height map), an illumination gradient and Gaussian noise; uint8 images, uint16 instance masks;
  only every ``every``-th frame annotated (sparse annotation in a longer sequence). Options: with
  ``annotated`` < 1 only that fraction of the cells (a fixed random subset per sequence) is in the
  masks (sparse annotation in space, as in DIC-HeLa: an unannotated cell is not background); with
  ``silver`` a silver truth ``<seq>_ST/SEG/man_segNNN.tif`` for every frame (the same cells, eroded
  by one pixel: computer-generated masks are not the gold truth).
- ``isbi``: ``train-volume.tif``, ``train-labels.tif``, ``test-volume.tif``: (Z, H, W) uint8 stacks
  of warped Voronoi cells with dark membranes about 4 px thick and noise; labels {0 membrane,
  255 interior}.

Everything derives from one ``numpy.random.Generator`` seeded by ``seed`` (the annotated subset from
a second one seeded by ``[seed, 1]``, so the default output does not change): same seed, same bytes.
A ``synth.json`` beside the data records kind, seed and parameters.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from seg.data.ctc import ctc_semantic
from seg.errors import SegError
from seg.io import atomic_path

MARKER = "synth.json"


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to unit std, float64 (H, W)."""
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return f / (f.std() + 1e-12)


def _cell_labels(centres: np.ndarray, radii: np.ndarray, harm: np.ndarray, size: int) -> np.ndarray:
    """Label image (H, W) uint16: pixel -> cell with the smallest normalised distance if it is < 1.

    centres (N, 2) (y, x); radii (N,); harm (N, K, 2) amplitude/phase of shape harmonics k = 2..K+1.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dy = yy[None] - centres[:, 0, None, None]
    dx = xx[None] - centres[:, 1, None, None]
    theta = np.arctan2(dy, dx)
    r = np.ones_like(theta)
    for k in range(harm.shape[1]):
        r += harm[:, k, 0, None, None] * np.cos((k + 2) * theta + harm[:, k, 1, None, None])
    d = np.hypot(dy, dx) / (radii[:, None, None] * r)
    best = d.argmin(axis=0)
    inside = d.min(axis=0) < 1.0
    return np.where(inside, best + 1, 0).astype(np.uint16)


def _dic_image(labels: np.ndarray, rng: np.random.Generator, gradient: np.ndarray) -> np.ndarray:
    """DIC-like uint8 image of a label image: shear derivative of a smooth height map + gradient + noise."""
    from scipy.ndimage import distance_transform_edt, gaussian_filter


    separated = ctc_semantic(labels.astype(np.int32)).astype(bool)
    height = 1.0 - np.exp(-distance_transform_edt(separated) / 5.0)
    height = gaussian_filter(height + 0.15 * _smooth_noise(rng, labels.shape, 2.0) * separated, 1.2)
    gy, gx = np.gradient(height)
    relief = (gx + gy) / np.sqrt(2.0)
    img = 120.0 + 260.0 * relief + gradient + rng.normal(0.0, 6.0, labels.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def synth_ctc(rng: np.random.Generator, *, size: int = 256, frames: int = 12, every: int = 3,
              sequences: tuple[str, ...] = ("01", "02"), cells: int = 12, annotated: float = 1.0,
              silver: bool = False, subset_rng: np.random.Generator | None = None) -> dict[str, dict]:
    """Generate CTC-like sequences.

    Args:
        annotated: fraction in (0, 1] of the cells in the masks (a random subset per sequence drawn
            from ``subset_rng``, at least one cell); the images show every cell.
        silver: also return a silver-truth mask of every frame (annotated cells eroded by 1 px).

    Returns:
        ``{seq: {"images": [uint8 (H, W)] * frames, "masks": {frame: uint16 (H, W)}, "silver":
        {frame: uint16 (H, W)} (empty without ``silver``), "all": {frame: uint16 (H, W)} (every
        cell, masks frames only)}}`` with masks for frames 0, every, 2*every, ...
    """
    from scipy.ndimage import binary_erosion

    if not 0 < annotated <= 1:
        raise SegError(f"annotated: the fraction of annotated cells must be in (0, 1], got {annotated}")
    out = {}
    for seq in sequences:
        keep = np.arange(1, cells + 1)
        if annotated < 1:
            sub = subset_rng if subset_rng is not None else np.random.default_rng(0)
            keep = np.sort(sub.permutation(keep)[:max(1, int(round(annotated * cells)))])
        # Cells on a jittered grid, spacing below twice the radius so that neighbours touch.
        side = int(np.ceil(np.sqrt(cells)))
        spacing = size / (side + 0.6)
        grid = np.array([(i, j) for i in range(side) for j in range(side)][:cells], dtype=np.float64)
        centres = (grid + 0.8) * spacing + rng.uniform(-0.12, 0.12, (cells, 2)) * spacing
        radii = spacing * rng.uniform(0.55, 0.68, cells)
        harm = np.stack([rng.uniform(0.03, 0.12, (cells, 3)), rng.uniform(0, 2 * np.pi, (cells, 3))], axis=-1)
        velocity = rng.normal(0.0, 0.6, (cells, 2))
        spin = rng.normal(0.0, 0.05, (cells, 3))
        ramp = np.linspace(-1.0, 1.0, size)
        angle = rng.uniform(0, 2 * np.pi)
        gradient = 18.0 * (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None])
        images, masks, st, full = [], {}, {}, {}
        for t in range(frames):
            c = np.clip(centres + t * velocity + rng.normal(0.0, 0.3, (cells, 2)), 0.1 * size, 0.9 * size)
            h = harm.copy()
            h[:, :, 1] += t * spin
            labels = _cell_labels(c, radii, h, size)
            images.append(_dic_image(labels, rng, gradient))
            sparse = labels if annotated == 1 else np.where(np.isin(labels, keep), labels, 0).astype(np.uint16)
            if t % every == 0:
                masks[t], full[t] = sparse, labels
            if silver:
                inner = np.zeros_like(sparse)
                for k in np.unique(sparse[sparse > 0]):
                    inner[binary_erosion(sparse == k)] = k
                st[t] = inner
        out[seq] = {"images": images, "masks": masks, "silver": st, "all": full}
    return out


def _voronoi_slice(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Label image (H, W) of warped Voronoi cells (int)."""
    from scipy.spatial import cKDTree

    seeds = rng.uniform(0, size, (cells, 2))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    warp = 5.0
    pts = np.stack([(yy + warp * _smooth_noise(rng, (size, size), 10.0)).ravel(),
                    (xx + warp * _smooth_noise(rng, (size, size), 10.0)).ravel()], axis=1)
    return cKDTree(seeds).query(pts)[1].reshape(size, size) + 1


def synth_isbi(rng: np.random.Generator, *, size: int = 256, slices: int = 30,
               cells: int | None = None) -> dict[str, np.ndarray]:
    """Generate ISBI-like stacks: ``{"train", "labels", "test"}`` (Z, H, W) uint8; labels {0, 255}.

    ``cells`` per slice defaults to 60 per 256x256 pixels (cells about 33 px across).
    """
    cells = cells or max(4, round(60 * (size / 256) ** 2))
    from scipy.ndimage import binary_dilation, gaussian_filter
    from skimage.segmentation import find_boundaries

    def one() -> tuple[np.ndarray, np.ndarray]:
        vor = _voronoi_slice(rng, size, cells)
        membrane = binary_dilation(find_boundaries(vor, mode="thick"), np.ones((3, 3), bool))
        interior = 175.0 + 14.0 * _smooth_noise(rng, (size, size), 3.0)
        img = np.where(membrane, 55.0, interior)
        img = gaussian_filter(img, 1.0) + rng.normal(0.0, 12.0, (size, size))
        lab = np.where(membrane, 0, 255).astype(np.uint8)
        return np.clip(np.rint(img), 0, 255).astype(np.uint8), lab

    train, labels = zip(*(one() for _ in range(slices)))
    test = [one()[0] for _ in range(slices)]
    return {"train": np.stack(train), "labels": np.stack(labels), "test": np.stack(test)}


def _write_ctc_layout(tmp: Path, rng: np.random.Generator, params: dict, *, seed: int, size: int, frames: int,
                      every: int, annotated: float, silver: bool, **_) -> None:
    """The ``ctc`` layout into ``tmp``: ``<seq>/tNNN.tif``, ``<seq>_GT/SEG/man_segNNN.tif`` (and ST)."""
    import tifffile

    params.update(frames=frames, every=every)
    if annotated != 1 or silver:
        params.update(annotated=annotated, silver=silver)
    data = synth_ctc(rng, size=size, frames=frames, every=every, annotated=annotated, silver=silver,
                     subset_rng=np.random.default_rng([seed, 1]))
    for seq, d in data.items():
        (tmp / seq).mkdir()
        (tmp / f"{seq}_GT" / "SEG").mkdir(parents=True)
        for t, img in enumerate(d["images"]):
            tifffile.imwrite(tmp / seq / f"t{t:03d}.tif", img)
        for t, m in d["masks"].items():
            tifffile.imwrite(tmp / f"{seq}_GT" / "SEG" / f"man_seg{t:03d}.tif", m)
        if d["silver"]:
            (tmp / f"{seq}_ST" / "SEG").mkdir(parents=True)
        for t, m in d["silver"].items():
            tifffile.imwrite(tmp / f"{seq}_ST" / "SEG" / f"man_seg{t:03d}.tif", m)


def _write_isbi_layout(tmp: Path, rng: np.random.Generator, params: dict, *, size: int, slices: int, **_) -> None:
    """The ``isbi`` layout into ``tmp``: ``train-volume.tif``, ``train-labels.tif``, ``test-volume.tif``."""
    import tifffile

    params.update(slices=slices)
    stacks = synth_isbi(rng, size=size, slices=slices)
    for key, fname in (("train", "train-volume.tif"), ("labels", "train-labels.tif"), ("test", "test-volume.tif")):
        tifffile.imwrite(tmp / fname, stacks[key])


#: The raw layouts ``seg synth`` writes (``--kind``), each by its writer.
LAYOUTS = {"ctc": _write_ctc_layout, "isbi": _write_isbi_layout}
KINDS = tuple(LAYOUTS)


def write_synth(out: str | os.PathLike, *, kind: str = "ctc", seed: int = 0, size: int = 256,
                frames: int = 12, every: int = 3, slices: int = 30, annotated: float = 1.0,
                silver: bool = False) -> Path:
    """Write a synthetic raw dataset to ``out`` atomically (replacing an earlier synth output only).
    ``kind``: the raw layout (:data:`LAYOUTS`: ``ctc`` or ``isbi``), ingested as dataset kind
    ``ctc`` or ``isbi2012``.

    Raises:
        SegError: bad kind/parameters, or ``out`` exists, is not empty and is not a synth output.
    """

    if kind not in LAYOUTS:
        raise SegError(f"--kind: {kind!r} is not one of {list(KINDS)}")
    if size < 32 or frames < 1 or every < 1 or slices < 1:
        raise SegError("seg synth: size must be >= 32 and frames, every, slices >= 1")
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise SegError(f"{out}: exists and is not an earlier seg synth output; refusing to replace it")
    rng = np.random.default_rng(seed)
    params = {"kind": kind, "seed": seed, "size": size}
    with atomic_path(out) as tmp:
        tmp.mkdir()
        LAYOUTS[kind](tmp, rng, params, seed=seed, size=size, frames=frames, every=every, slices=slices,
                      annotated=annotated, silver=silver)
        (tmp / MARKER).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
    return out
