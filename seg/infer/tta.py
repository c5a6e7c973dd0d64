"""Test-time augmentation over the dihedral group D4 (the 8 flips / 90-degree rotations of a square).

The U-Net paper averaged rotated versions of the ISBI test slices; here every one of the 8 symmetries
is applied to the input, the prediction mapped back with the inverse symmetry, and the results are
averaged in probability space. The average over a whole group is equivariant: the TTA prediction
of a rotated/flipped image is the rotated/flipped TTA prediction (exactly, for a predictor that
treats all positions alike, e.g. one whole-slice forward pass).

The functions take numpy arrays or torch tensors (symmetries act on the last two axes); on tensors
they are traceable, so ``seg predict``, ``seg segment`` and the exported graphs run this same code.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from seg.errors import SegError

# (k, flip): first flip left-right (last axis) if ``flip``, then rotate by k * 90 degrees.
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))


def apply_dihedral(x, k: int, flip: bool):
    """Apply one symmetry to the last two axes (H, W) of ``x`` (numpy array or torch tensor): flip W
    if ``flip``, then rot90 ``k`` (a view for numpy, a new tensor for torch)."""
    if isinstance(x, torch.Tensor):
        d = x.dim()
        x = torch.flip(x, dims=[d - 1]) if flip else x
        return torch.rot90(x, k, dims=[d - 2, d - 1]) if k % 4 else x
    if flip:
        x = x[..., ::-1]
    return np.rot90(x, k, axes=(-2, -1))


def invert_dihedral(x, k: int, flip: bool):
    """Inverse of :func:`apply_dihedral` (rotate back by ``-k``, then undo the flip)."""
    if isinstance(x, torch.Tensor):
        d = x.dim()
        x = torch.rot90(x, -k, dims=[d - 2, d - 1]) if k % 4 else x
        return torch.flip(x, dims=[d - 1]) if flip else x
    x = np.rot90(x, -k, axes=(-2, -1))
    if flip:
        x = x[..., ::-1]
    return x


def predict_tta(image, predict_fn: Callable, *, transforms: tuple[tuple[int, bool], ...] = DIHEDRAL):
    """Average ``predict_fn`` over symmetries of the input.

    Args:
        image: numpy (H, W) or (C, H, W) array, or torch (N, C, H, W) tensor.
        predict_fn: maps an input of the same layout (H and W possibly swapped) to probabilities
            (classes, H', W') for numpy, (N, classes, H', W') for torch, at the input's size.
        transforms: (k, flip) pairs; default all 8 elements of D4.

    Returns:
        float32 mean of the back-transformed predictions: numpy (classes, H, W) or torch
        (N, classes, H, W).
    """
    if not transforms:
        raise SegError("predict_tta: transforms is empty (give at least one (k, flip) pair)")
    if not isinstance(image, torch.Tensor):
        acc: np.ndarray | None = None
        for k, flip in transforms:
            view = np.ascontiguousarray(apply_dihedral(np.asarray(image), k, flip))
            pred = invert_dihedral(np.asarray(predict_fn(view), dtype=np.float32), k, flip)
            acc = pred.copy() if acc is None else acc + pred
        return np.ascontiguousarray(acc / len(transforms), dtype=np.float32)
    total: torch.Tensor | None = None
    for k, flip in transforms:  # one view at a time: each tiled on its own grid, as few tiles in memory
        back = invert_dihedral(predict_fn(apply_dihedral(image, k, flip)).float(), k, flip)
        total = back if total is None else total + back
    return total / float(len(transforms))
