"""Blending overlapping tiles: MONAI's importance map, and summing tiles back into one image.

:func:`importance_map` computes MONAI's map (``monai.data.utils.compute_importance_map``) here
instead of importing MONAI: ``import monai`` imports all of its subpackages, about 4 s per process,
and every ``seg predict``, ``seg segment`` and export job would pay it for this one array (the
workflow and the test suite start dozens of them). ``tests/test_infer.py`` checks that both maps
are equal.

:func:`fold_tiles` sums tiles into their places. Eager inference adds them with ``index_add``;
exported graphs (``scatter_free=True``) multiply by one-hot placement matrices instead, because
``index_add`` becomes ONNX ``ScatterND(reduction="add")``, whose multi-threaded CPU kernel in
ONNX Runtime races on repeated indices (wrong by up to 0.1 in one run of five, measured on ORT
1.32). Both give the same sums up to float rounding (the matmuls add zeros).
"""

from __future__ import annotations

import torch

from seg.errors import SegError

BLENDS = ("gaussian", "constant")
SIGMA_SCALE = 0.125  # Gaussian sigma as a fraction of the tile (MONAI's default)
MIN_WEIGHT = 1e-3  # MONAI clamps the map at max(its minimum, 1e-3)


def importance_map(tile: int, blend: str = "gaussian", device: torch.device | str = "cpu") -> torch.Tensor:
    """Blending weights of one (tile, tile) output tile: float32 in [1e-3, 1].

    ``gaussian``: exp(-d^2 / (2 sigma^2)) per axis (d = pixel offset from the tile's centre,
    sigma = 0.125 * tile), the outer product of the two axes, clamped at max(its minimum, 1e-3);
    ``constant``: ones. Equal to ``monai.data.utils.compute_importance_map((tile, tile), mode=blend,
    sigma_scale=0.125)`` (the same float32 operations; see the module docstring for why it is not
    imported).
    """
    if blend not in BLENDS:
        raise SegError(f"inference.blend: unknown option {blend!r} (choices: {', '.join(BLENDS)})")
    if blend == "constant":
        weights = torch.ones((tile, tile), device=device, dtype=torch.float)
    else:
        sigma = tile * SIGMA_SCALE
        x = torch.arange(start=-(tile - 1) / 2.0, end=(tile - 1) / 2.0 + 1, dtype=torch.float, device=device)
        x = torch.exp(x**2 / (-2 * sigma**2))
        weights = x.unsqueeze(-1) * x[None]
    floor = max(torch.min(weights).item(), MIN_WEIGHT)
    return torch.clamp_(weights, min=floor).to(torch.float32)


def fold_axis(tiles: torch.Tensor, index: torch.Tensor, size, dim: int, *, scatter_free: bool = False) -> torch.Tensor:
    """Sum slices of ``tiles`` along ``dim`` (-1 or -2) into ``size`` places: slice i goes to
    ``index[i]`` (repeated where tiles overlap).

    Args:
        tiles: (..., R, C) float tensor.
        index: int64 (C,) for ``dim=-1`` or (R,) for ``dim=-2``: where each slice goes.
        size: output length along ``dim`` (int, SymInt or 0-d tensor).
        scatter_free: a one-hot placement matmul instead of ``index_add`` (exported graphs).

    Returns:
        ``tiles`` with ``dim`` of length ``size``, same dtype and device.
    """
    if scatter_free:
        place = (index[:, None] == torch.arange(size, device=tiles.device)[None, :]).to(tiles.dtype)
        return tiles @ place if dim == -1 else place.transpose(0, 1) @ tiles
    shape = list(tiles.shape)
    shape[dim] = size
    return tiles.new_zeros(shape).index_add_(tiles.dim() + dim, index, tiles)


def fold_tiles(tiles: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, height, width, *,
               scatter_free: bool = False) -> torch.Tensor:
    """Sum a grid of tiles into an image: ``out[..., rows[i], cols[j]] += tiles[..., i, j]``
    (:func:`fold_axis` along the columns, then the rows).

    Args:
        tiles: (..., R, C) float tensor: the tiles of one grid row after another along R
            (``ny * tile`` rows) and of one grid column after another along C.
        rows: int64 (R,) output row of every tile row; cols: int64 (C,) output column of every
            tile column (repeated where tiles overlap).
        height, width: output size (ints, SymInts or 0-d tensors).
        scatter_free: one-hot placement matmuls instead of ``index_add`` (for exported graphs).

    Returns:
        (..., height, width) tensor of ``tiles``' dtype.
    """
    out = fold_axis(tiles, cols, width, -1, scatter_free=scatter_free)
    return fold_axis(out, rows, height, -2, scatter_free=scatter_free)
