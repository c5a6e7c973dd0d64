"""Pretraining tasks for ``seg pretrain``: where the classification batches come from.

Task ``patches`` (default; Ciresan et al., NIPS 2012, the ISBI 2012 winner before U-Net): classify
the centre pixel of a ``patch_size`` x ``patch_size`` window of a normalised image as class 0 or 1 of
the dataset's semantic map (ISBI: membrane vs interior; CTC: background vs cell), classes balanced
(each batch draws the same number of centres per class). Only **training-split** slices are used: a
``held_out_fraction`` of them (at least one, chosen with the seed) supplies a fixed, balanced set of
held-out patches for the reported accuracy; val/test slices are never read. Images are padded by
reflection so centres can lie anywhere. Training patches get random flips / 90-degree rotations.

Task ``imagefolder``: any torchvision ``ImageFolder`` directory (class = sub-folder), converted to
grayscale, resized (short side) and center-cropped to ``patch_size``, normalised per image like the
slices; a ``held_out_fraction`` of its images (seeded) is held out.

Each task has ``classes`` (names), ``held_out_ids`` and ``batch(n, rng, held_out=, augment=)`` ->
``(x, y)``: x float32 (n, 1, patch_size, patch_size) normalised, y int64 (n,) class indices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seg.data import canonical
from seg.data.canonical import normalise
from seg.errors import SegError


# ----------------------------------------------------------------------------- patch task (arrays)
def class_pools(semantics: list[np.ndarray], num_classes: int) -> list[tuple[int, list[np.ndarray]]]:
    """Per class present: (class, flat pixel indices of that class in each slice)."""
    pools = []
    for c in range(num_classes):
        per_slice = [np.flatnonzero(s.ravel() == c) for s in semantics]
        if sum(len(p) for p in per_slice):
            pools.append((c, per_slice))
    if len(pools) < 2:
        raise SegError("pretrain: the training slices contain fewer than two classes")
    return pools


def balanced_centres(semantics: list[np.ndarray], n: int, num_classes: int, rng: np.random.Generator,
                     pools: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` patch centres, classes as equal as possible, uniform within a class.

    Args:
        semantics: class maps uint8 (H, W), one per slice.
        n: number of centres.
        num_classes: classes 0..num_classes-1; classes absent from all maps are skipped.
        pools: :func:`class_pools` of ``semantics`` (computed if None; pass it to save time).

    Returns:
        centres int64 (n, 3) rows (slice index, y, x) and labels int64 (n,).
    """
    pools = pools if pools is not None else class_pools(semantics, num_classes)
    which = np.arange(n) % len(pools)
    rng.shuffle(which)
    centres = np.zeros((n, 3), np.int64)
    labels = np.zeros(n, np.int64)
    for j, (c, per_slice) in enumerate(pools):
        rows = np.flatnonzero(which == j)
        cum = np.cumsum([len(p) for p in per_slice])
        flat = rng.integers(0, cum[-1], size=len(rows))
        sl = np.searchsorted(cum, flat, side="right")
        off = flat - np.concatenate([[0], cum])[sl]
        pix = np.array([per_slice[i][o] for i, o in zip(sl, off)], dtype=np.int64)
        widths = np.array([semantics[i].shape[1] for i in sl], dtype=np.int64)
        if len(rows):
            centres[rows] = np.stack([sl, pix // widths, pix % widths], axis=1)
        labels[rows] = c
    return centres, labels


def extract_patches(padded: list[np.ndarray], centres: np.ndarray, patch_size: int) -> np.ndarray:
    """float32 (n, 1, P, P) windows; ``padded[i]`` is slice i padded by P // 2 on every side, so the
    window of centre (y, x) is ``padded[i][y : y + P, x : x + P]`` (centre pixel at index P // 2)."""
    out = np.empty((len(centres), 1, patch_size, patch_size), np.float32)
    for k, (i, y, x) in enumerate(centres):
        out[k, 0] = padded[i][y : y + patch_size, x : x + patch_size]
    return out


def random_dihedral(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random flip / 90-degree rotation per sample of (n, C, P, P)."""
    out = batch.copy()
    for k in range(len(out)):
        r, f = rng.integers(4), rng.integers(2)
        x = np.rot90(out[k], r, axes=(1, 2))
        out[k] = x[:, :, ::-1] if f else x
    return out


class PatchTask:
    """Centre-pixel classification on the training split of a canonical dataset."""

    def __init__(self, ds_dir: Path, patch_size: int, held_out_fraction: float, rng: np.random.Generator):
        meta = canonical.load_meta(ds_dir)
        train = [s for s in canonical.slices(meta, "train") if s.get("semantic")]
        if len(train) < 2:
            raise SegError(f"{ds_dir}/meta.json: pretrain needs >= 2 annotated training slices "
                           f"(one is held out), found {len(train)}")
        self.classes = list(meta["classes"])
        n_hold = min(len(train) - 1, max(1, int(round(held_out_fraction * len(train)))))
        order = rng.permutation(len(train))
        self.held_out_ids = sorted(train[i]["id"] for i in order[:n_hold])
        self.train_ids = sorted(train[i]["id"] for i in order[n_hold:])
        self.patch_size = patch_size
        pad = patch_size // 2

        def load(ids):
            ents = [s for s in train if s["id"] in ids]
            imgs = [np.pad(canonical.load_image(ds_dir, e), pad, mode="reflect") for e in ents]
            sems = [canonical.load_semantic(ds_dir, e) for e in ents]
            return imgs, sems, class_pools(sems, len(self.classes))

        self._train = load(set(self.train_ids))
        self._held = load(set(self.held_out_ids))

    def batch(self, n: int, rng: np.random.Generator, *, held_out: bool = False, augment: bool = True):
        imgs, sems, pools = self._held if held_out else self._train
        centres, labels = balanced_centres(sems, n, len(self.classes), rng, pools)
        x = extract_patches(imgs, centres, self.patch_size)
        return (random_dihedral(x, rng) if augment else x), labels


class ImageFolderTask:
    """Image classification on a torchvision ``ImageFolder`` tree, grayscale, ``patch_size`` crops."""

    def __init__(self, root: Path, patch_size: int, held_out_fraction: float, rng: np.random.Generator):
        from torchvision import datasets, transforms

        if not Path(root).is_dir():
            raise SegError(f"{root}: pretrain.imagefolder: directory not found")
        tf = transforms.Compose([transforms.Grayscale(1), transforms.Resize(patch_size),
                                 transforms.CenterCrop(patch_size), transforms.PILToTensor()])
        try:
            self.ds = datasets.ImageFolder(str(root), transform=tf)
        except (FileNotFoundError, RuntimeError) as e:
            raise SegError(f"{root}: not an ImageFolder tree ({e})") from None
        self.classes = list(self.ds.classes)
        self.patch_size = patch_size
        order = rng.permutation(len(self.ds))
        n_hold = min(len(order) - 1, max(1, int(round(held_out_fraction * len(order)))))
        if n_hold < 1 or len(self.classes) < 2:
            raise SegError(f"{root}: pretrain needs >= 2 classes and >= 2 images")
        self.held_idx, self.train_idx = order[:n_hold], order[n_hold:]
        self.held_out_ids = [str(Path(self.ds.samples[i][0]).relative_to(root)) for i in sorted(self.held_idx)]

    def batch(self, n: int, rng: np.random.Generator, *, held_out: bool = False, augment: bool = True):
        pool = self.held_idx if held_out else self.train_idx
        idx = pool[rng.integers(0, len(pool), size=n)] if not held_out else pool[:n]
        xs, ys = [], []
        for i in idx:
            img, y = self.ds[int(i)]
            xs.append(normalise(img.numpy()[0])[None])
            ys.append(y)
        x = np.stack(xs)
        return (random_dihedral(x, rng) if augment else x), np.asarray(ys, np.int64)
