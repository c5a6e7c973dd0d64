"""Random training patches from the canonical training split, augmented on the fly.

Geometry. A model maps an input window of ``input_size`` pixels to an output window of
``output_size`` pixels centred in it (``border = (input_size - output_size) / 2``; 0 for
same-padding models). Each training slice is mirror-padded once (``numpy.pad`` mode ``reflect``) so
that any input window around an output window inside the slice exists; the network therefore
sees mirrored context at slice edges, as in the U-Net paper's overlap-tile strategy.

Sampling. Sample ``index`` is fully determined by ``numpy.random.default_rng([seed, index])``: the
slice (probability proportional to its area), the output window (uniform, or with probability
``border_sampling`` centred on a pixel of the slice's top-10 % border weights) and the augmentation
draw. The elastic deformation is evaluated only on the input window but with the whole padded
slice as context (``Augmenter(..., crop=window)``), so a fresh deformation is drawn for every sample
and there is no deformation border artefact. Training step ``i`` of rank ``r`` with per-rank batch
``B`` and ``W`` ranks uses indices ``i*B*W + r*B + j`` (j < B): the data position is a function of the
iteration count (exact resume), the ranks draw different patches, and a run with W ranks x B patches
sees exactly the patches of a one-process run with batch W*B.

Sample: ``{"image": float32 (1, input_size, input_size), "target": int64 (out, out) class indices,
"weights": float32 (out, out)}`` (``weights`` only when the loss needs them); for a regression target
(``target: distance``) ``"target"`` is float32 (channels, out, out), its channels deformed linearly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from seg.data.canonical import load_image, load_instances, load_meta, load_semantic, slices
from seg.data.ctc import ctc_semantic
from seg.errors import SegError
from seg.infer.rescale import is_identity, resize_image, resize_labels, resize_to
from seg.io import read_json, read_tiff
from seg.models import input_size_for, output_size
from seg.transforms.augment import Augmenter

BORDER_QUANTILE = 0.9  # "high border weight" = the top 10 % of a slice's weight values


@dataclass(frozen=True)
class PatchGeometry:
    """Input window, output window and the border between them (pixels)."""

    input_size: int
    output_size: int

    @property
    def border(self) -> int:
        return (self.input_size - self.output_size) // 2


def patch_geometry(model: torch.nn.Module, patch_size: int) -> PatchGeometry:
    """The input/output window sizes for output patch ``patch_size`` (``seg.models`` size contract).

    Valid-padding models get the smallest legal input whose output is >= ``patch_size``;
    same-padding models get ``patch_size`` rounded up to their size divisor.
    """

    inp = int(input_size_for(model, int(patch_size)))
    out = int(output_size(model, inp))
    if out > inp or (inp - out) % 2:
        raise SegError(f"train.patch_size: model maps {inp} px to {out} px; cannot center the output window")
    return PatchGeometry(inp, out)


@dataclass
class _Slice:
    id: str
    image: np.ndarray  # float32 (H+2p, W+2p), normalised, mirror-padded
    target: np.ndarray  # uint8 (H+2p, W+2p) class map, or float32 (C, H+2p, W+2p) regression maps
    weights: np.ndarray | None  # float32 (H+2p, W+2p)
    shape: tuple[int, int]  # unpadded (H, W)
    hot: np.ndarray  # int64 flat indices (unpadded) of high-weight pixels, may be empty


def load_training_slices(
    ds_dir: str | os.PathLike, split: str = "train", *, with_weights: bool = True, target=None,
    scale: float = 1.0, instance_kind: bool = False,
) -> list[dict[str, np.ndarray | str]]:
    """Read a split's annotated slices: ``[{"id", "image" float32 (H,W) normalised, "target" uint8
    (H,W), "weights" float32 (H,W) or None}]`` (weights from ``<ds_dir>/weights/<id>.tif``).

    ``target`` (:class:`seg.targets.Target`, None = the default): what the slice trains on,
    the canonical semantic map, or the target's map of the slice's instances (three_class: uint8
    (H, W) classes; distance: float32 (2, H, W) maps, :meth:`~seg.targets.Target.train_map`).

    ``scale`` (a run started from a package, :mod:`seg.settings.start`): every slice is resized by
    this factor first (:mod:`seg.infer.rescale`): the normalised image bilinearly, the instances by
    nearest neighbour (the target map is made from them at the new size; ``instance_kind``: the
    class map too, as :func:`seg.data.ctc.ctc_semantic` makes it, so the 0-lines between touching
    objects stay one pixel wide), else the class map by nearest neighbour; the weight maps
    bilinearly (their sigma and sparse band scale with the objects).

    Raises:
        SegError: no annotated slice in the split, or a weight map is missing.
    """

    ds_dir = Path(ds_dir)
    entries = [e for e in slices(load_meta(ds_dir), split) if e.get("semantic")]
    if not entries:
        raise SegError(f"{ds_dir / 'meta.json'}: no annotated slice in split {split!r}")
    out = []
    for e in entries:
        w = None
        if with_weights:
            wp = ds_dir / "weights" / f"{e['id']}.tif"
            if not wp.is_file():
                raise SegError(f"{wp}: weight map missing (run `seg weights` first, or use train.loss.name ce)")
            w = read_tiff(wp, ndim=2).astype(np.float32, copy=False)
        image = load_image(ds_dir, e)
        shape = image.shape
        if not is_identity(scale):
            image = resize_image(image, scale)
            w = None if w is None else resize_to(w, image.shape)
        instances = None
        if e.get("instances") and ((target is not None and target.needs_instances)
                                   or (instance_kind and not is_identity(scale))):
            instances = resize_labels(load_instances(ds_dir, e), image.shape)
        if target is not None and target.needs_instances:
            cls = target.train_map(None, instances)
        elif instances is not None:
            cls = ctc_semantic(instances)
        else:
            cls = resize_labels(load_semantic(ds_dir, e), image.shape) if image.shape != shape else load_semantic(ds_dir, e)
        if target is not None:  # three_class: its boundary pixels weigh more
            w = target.weigh(cls, w)
        out.append({"id": e["id"], "image": image, "target": cls, "weights": w})
    return out


def load_pseudo_slices(pseudo_dir: str | os.PathLike, ds_dir: str | os.PathLike, *, target=None) -> list[dict]:
    """The self-training slices of ``seg pseudolabel``'s folder, as :func:`load_training_slices`
    gives the training split's: the dataset's normalised images, the target built from the kept
    objects (the CTC class map with 0-lines, or the variant's target map) and their band-limited
    weight maps (0 = ignored: every pixel beyond ``band`` px of a kept object). Empty when the
    teacher kept no object.

    Raises:
        SegError: the folder's meta.json or one of its files is missing.
    """

    pseudo_dir, ds_dir = Path(pseudo_dir), Path(ds_dir)
    doc = read_json(pseudo_dir / "meta.json")
    by_id = {e["id"]: e for e in load_meta(ds_dir)["slices"]}
    out = []
    for rec in doc.get("slices", []):
        if rec["id"] not in by_id:
            raise SegError(f"{pseudo_dir / 'meta.json'}: slice {rec['id']!r} is not in {ds_dir / 'meta.json'}")
        inst = read_tiff(pseudo_dir / rec["instances"], ndim=2)
        sem = read_tiff(pseudo_dir / rec["semantic"], ndim=2)
        cls = target.train_map(sem, inst) if target is not None and target.needs_instances else sem
        w = read_tiff(pseudo_dir / rec["weights"], ndim=2).astype(np.float32, copy=False)
        out.append({"id": f"pseudo_{rec['id']}", "image": load_image(ds_dir, by_id[rec["id"]]), "target": cls,
                    "weights": target.weigh(cls, w) if target is not None else w})
    return out


def mirror_pad(a: np.ndarray, pad: int) -> np.ndarray:
    """Reflect-pad a 2D array by ``pad`` px on every side (repeated reflection if pad > size)."""
    return np.pad(a, pad, mode="reflect") if pad > 0 else a


class PatchDataset(torch.utils.data.Dataset):
    """Map-style dataset of random augmented patches; ``len`` is unbounded (any index >= 0 is valid).

    Args:
        slices: from :func:`load_training_slices`.
        geometry: input/output window sizes.
        augment_cfg: the ``augment`` config section for ``seg.transforms.augment.Augmenter`` (None = off).
        seed: the run's seed.
        border_sampling: fraction of patches centred on high border-weight pixels (needs weights).
    """

    def __init__(self, slices: list[dict], geometry: PatchGeometry, *, augment_cfg: dict | None, seed: int,
                 border_sampling: float = 0.0):

        self.geometry, self.seed, self.border_sampling = geometry, int(seed), float(border_sampling)
        self.augmenter = Augmenter(augment_cfg) if augment_cfg is not None else None
        small = min(min(s["image"].shape) for s in slices)
        # Pad so every input window around an output window that overlaps the slice fits.
        self.pad = geometry.border + max(0, geometry.output_size - small)
        self.slices: list[_Slice] = []
        for s in slices:
            w = s["weights"]
            hot = np.zeros(0, np.int64)
            if w is not None and self.border_sampling > 0:
                hot = np.flatnonzero(w >= np.quantile(w, BORDER_QUANTILE)).astype(np.int64)
            self.slices.append(_Slice(
                id=s["id"],
                image=mirror_pad(np.asarray(s["image"], np.float32), self.pad),
                target=(np.stack([mirror_pad(np.asarray(c, np.float32), self.pad) for c in s["target"]])
                        if np.ndim(s["target"]) == 3 else mirror_pad(np.asarray(s["target"], np.uint8), self.pad)),
                weights=None if w is None else mirror_pad(np.asarray(w, np.float32), self.pad),
                shape=tuple(s["image"].shape),
                hot=hot,
            ))
        areas = np.array([s.shape[0] * s.shape[1] for s in self.slices], np.float64)
        self.probs = areas / areas.sum()
        self.total_area = int(areas.sum())

    def __len__(self) -> int:  # samplers below never use it; kept finite for DataLoader checks
        return 2**62

    def patches_per_epoch(self) -> int:
        """Output patches that cover the training slices once (the epoch unit)."""
        return max(1, -(-self.total_area // self.geometry.output_size**2))

    def window(self, index: int) -> tuple[int, tuple[int, int], np.random.Generator]:
        """Slice number, top-left of the output window (unpadded slice coordinates, may be negative
        for slices smaller than the window) and the generator for the augmentation of sample ``index``."""
        rng = np.random.default_rng([self.seed, int(index)])
        k = int(rng.choice(len(self.slices), p=self.probs))
        s, out = self.slices[k], self.geometry.output_size
        use_border = rng.random() < self.border_sampling
        u = rng.random(2)
        hot_pick = int(rng.integers(max(len(s.hot), 1)))
        corner = []
        for ax in range(2):
            n = s.shape[ax]
            lo, hi = (0, n - out) if n >= out else (n - out, 0)
            if use_border and len(s.hot):
                c = np.unravel_index(s.hot[hot_pick], s.shape)[ax] - out // 2
                corner.append(int(np.clip(c, lo, hi)))
            else:
                corner.append(int(lo + np.floor(u[ax] * (hi - lo + 1))))
        return k, (corner[0], corner[1]), rng

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        k, (top, left), rng = self.window(index)
        s, g = self.slices[k], self.geometry
        r0, c0 = top + self.pad - g.border, left + self.pad - g.border
        crop = (slice(r0, r0 + g.input_size), slice(c0, c0 + g.input_size))
        maps = s.target.ndim == 3  # regression maps: one (H, W) array per channel
        targets = {f"target{c}": t for c, t in enumerate(s.target)} if maps else {"target": s.target}
        if s.weights is not None:
            targets["weights"] = s.weights
        if self.augmenter is not None:
            image, targets = self.augmenter(s.image, targets, rng, crop=crop)
        else:
            image, targets = s.image[crop], {n: t[crop] for n, t in targets.items()}
        b = g.border
        inner = (slice(b, b + g.output_size), slice(b, b + g.output_size))
        target = (np.stack([targets[f"target{c}"][inner] for c in range(len(s.target))]).astype(np.float32)
                  if maps else targets["target"][inner].astype(np.int64))
        out = {
            "image": torch.from_numpy(np.ascontiguousarray(image, np.float32)[None]),
            "target": torch.from_numpy(np.ascontiguousarray(target)),
        }
        if "weights" in targets:
            out["weights"] = torch.from_numpy(np.ascontiguousarray(targets["weights"][inner], np.float32))
        return out


class IterationBatchSampler(torch.utils.data.Sampler):
    """Yields the sample indices of training steps ``start .. stop-1`` for one rank.

    Step ``i`` -> ``[i*B*W + r*B + j for j in range(B)]`` (B = per-rank batch, W = world size, r = rank).
    """

    def __init__(self, start: int, stop: int, batch_size: int, *, rank: int = 0, world_size: int = 1):
        self.start, self.stop, self.batch_size = int(start), int(stop), int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        B = self.batch_size
        for i in range(self.start, self.stop):
            base = i * B * self.world_size + self.rank * B
            yield list(range(base, base + B))


def worker_seeder(seed: int, rank: int, start_iteration: int):
    """A DataLoader ``worker_init_fn`` seeding each worker's global generators from
    (seed, rank, start iteration, worker id). Samples do not depend on it (each has its own
    generator); it makes any library that uses the global generators reproducible too."""

    def init(worker_id: int) -> None:
        import random

        ss = np.random.SeedSequence([int(seed), int(rank), int(start_iteration), int(worker_id)])
        state = ss.generate_state(2, dtype=np.uint32)
        random.seed(int(state[0]))
        np.random.seed(int(state[0]))
        torch.manual_seed(int(state[0]) << 32 | int(state[1]))

    return init


def make_loader(dataset: PatchDataset, *, start: int, stop: int, batch_size: int, rank: int, world_size: int,
                num_workers: int, seed: int, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over training steps ``start .. stop-1`` (augmentation runs in the workers)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=IterationBatchSampler(start, stop, batch_size, rank=rank, world_size=world_size),
        num_workers=num_workers,
        worker_init_fn=worker_seeder(seed, rank, start) if num_workers > 0 else None,
        persistent_workers=False,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers > 0 else None,
    )
