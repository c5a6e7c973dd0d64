"""Test-time augmentation over the dihedral group D4 (the 8 flips / 90-degree rotations of a square).

The U-Net paper averaged rotated versions of the ISBI test slices; here every one of the 8 symmetries
is applied to the input, the prediction mapped back with the inverse symmetry, and the results are
averaged in probability space. The average over a whole group is equivariant: the TTA prediction
of a rotated/flipped image is the rotated/flipped TTA prediction (exactly, for a predictor that
treats all positions alike, e.g. one whole-slice forward pass).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from seg.errors import SegError

# (k, flip): first flip left-right (last axis) if ``flip``, then rotate by k * 90 degrees.
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))


def apply_dihedral(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Apply one symmetry to the last two axes (H, W) of ``x``: flip W if ``flip``, then rot90 ``k``."""
    if flip:
        x = x[..., ::-1]
    return np.rot90(x, k, axes=(-2, -1))


def invert_dihedral(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Inverse of :func:`apply_dihedral` (rotate back by ``-k``, then undo the flip)."""
    x = np.rot90(x, -k, axes=(-2, -1))
    if flip:
        x = x[..., ::-1]
    return x


def predict_tta(
    image: np.ndarray,
    predict_fn: Callable[[np.ndarray], np.ndarray],
    *,
    transforms: tuple[tuple[int, bool], ...] = DIHEDRAL,
) -> np.ndarray:
    """Average ``predict_fn`` over symmetries of the input.

    Args:
        image: (H, W) or (C, H, W) array (any dtype ``predict_fn`` accepts).
        predict_fn: maps an image of the same layout (possibly with H and W swapped) to probabilities
            (classes, H', W') with the image's spatial size.
        transforms: (k, flip) pairs; default all 8 elements of D4.

    Returns:
        float32 (classes, H, W), the mean of the back-transformed predictions.
    """
    if not transforms:
        raise SegError("predict_tta: transforms is empty (give at least one (k, flip) pair)")
    acc: np.ndarray | None = None
    for k, flip in transforms:
        view = np.ascontiguousarray(apply_dihedral(np.asarray(image), k, flip))
        pred = invert_dihedral(np.asarray(predict_fn(view), dtype=np.float32), k, flip)
        acc = pred.copy() if acc is None else acc + pred
    return np.ascontiguousarray(acc / len(transforms), dtype=np.float32)
