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
        from seg.errors import SegError

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


def fold_tiles(tiles: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, height, width, *,
               scatter_free: bool = False) -> torch.Tensor:
    """Sum a grid of tiles into an image: ``out[..., rows[i], cols[j]] += tiles[..., i, j]``.

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
    if scatter_free:
        place_rows = (torch.arange(height, device=tiles.device)[:, None] == rows[None, :]).to(tiles.dtype)
        place_cols = (cols[:, None] == torch.arange(width, device=tiles.device)[None, :]).to(tiles.dtype)
        return place_rows @ (tiles @ place_cols)
    lead = tiles.shape[:-2]
    out = tiles.new_zeros((*lead, tiles.shape[-2], width)).index_add_(-1, cols, tiles)
    return tiles.new_zeros((*lead, height, width)).index_add_(-2, rows, out)
