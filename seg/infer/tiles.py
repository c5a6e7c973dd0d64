"""Where the tiles go: MONAI's tile grid, aligned grids for valid-padding networks, tile batches.

One rule (:func:`axis_plan`), computed with tensor arithmetic so that the same code plans the tiles
of an eager prediction (Python ints) and of a traced or exported graph (sizes that are SymInts
under ``torch.export`` or 0-d tensors under ``torch.jit.trace``). :func:`plan_starts` is the same
rule in plain Python, for tests, benchmarks and messages.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch


def plan_starts(size: int, tile: int, overlap: float, align: int = 1) -> list[int]:
    """Start offsets of 1D tiles of length ``tile`` covering ``[0, size)``.

    ``align == 1``: MONAI's rule (``_get_scan_interval`` + ``dense_patch_slices``): step
    ``max(int(tile * (1 - overlap)), 1)``, stop at the first tile reaching the end, and shift that
    last tile back so it ends exactly at ``size``.
    ``align > 1``: every start is a multiple of ``align`` (step rounded down to a multiple, at least
    ``align``); the last tile starts at the smallest aligned offset >= ``size - tile``, so the tiles
    may end past ``size`` (the caller pads). A network with pooling (valid U-Net: align =
    ``2**depth``) then sees every tile on the same pooling grid as the whole slice.
    One tile at 0 when ``size <= tile``. The covered extent is ``starts[-1] + tile``.
    """
    if size <= tile:
        return [0]
    step = tile_step(tile, overlap, align)
    last = -(-(size - tile) // align) * align
    starts, s = [], 0
    while True:
        starts.append(min(s, last))
        if s + tile >= size:
            return starts
        s += step


def plan_tiles(shape: Sequence[int], tile: int, overlap: float, align: int = 1) -> list[tuple[int, int]]:
    """(y, x) top-left corners of the tiles covering an image of ``shape`` (H, W), row-major
    (see :func:`plan_starts`)."""
    ys = plan_starts(int(shape[0]), tile, overlap, align)
    xs = plan_starts(int(shape[1]), tile, overlap, align)
    return [(y, x) for y in ys for x in xs]


def tile_step(tile: int, overlap: float, align: int = 1) -> int:
    """Pixels between tile starts: ``max(int(tile * (1 - overlap)), 1)`` (MONAI), rounded down to a
    multiple of ``align`` (at least ``align``)."""
    step = max(int(tile * (1 - overlap)), 1)
    return max(step // align * align, align) if align > 1 else step


def nonnegative(v):
    """``max(v, 0)`` for an int, a SymInt (``torch.export``) or a 0-d tensor (``torch.jit.trace``)."""
    if isinstance(v, torch.Tensor):
        return torch.clamp(v, min=0)
    if isinstance(v, int):
        return max(v, 0)
    return torch.sym_max(v, 0)


class AxisPlan(NamedTuple):
    """The tiles along one axis (see :func:`axis_plan`).

    Attributes:
        starts: int64 (count,) tile starts on the output grid, in pixels.
        count: number of tiles (int, SymInt or 0-d tensor).
        extent: length of the output grid the tiles cover (``starts[-1] + tile`` >= the image's size).
        before: pixels of the output grid before the image's first pixel (same padding centres an
            image smaller than a tile; 0 otherwise).
    """

    starts: torch.Tensor
    count: object
    extent: object
    before: object


def axis_plan(size, tile: int, overlap: float, *, align: int = 1, centre: bool = False,
              device: torch.device | str = "cpu") -> AxisPlan:
    """The tiles along an axis of ``size`` pixels, as :func:`plan_starts` places them.

    Args:
        size: image length in pixels (int, SymInt or 0-d tensor).
        tile: output tile length in pixels.
        overlap: fraction in [0, 1) of a tile shared with its neighbour.
        align: tile starts are multiples of it (1 = MONAI's rule).
        centre: an image shorter than a tile is centred on it (same padding, as MONAI pads); else
            it starts at 0 and the grid extends after it (valid padding keeps the pooling grid).
        device: where ``starts`` lives.
    """
    step = tile_step(tile, overlap, align)
    short = nonnegative(tile - size)
    excess = nonnegative(size - tile)
    last = (excess + align - 1) // align * align
    count = 1 + (excess + step - 1) // step
    starts = torch.clamp(torch.arange(count, device=device) * step, max=last)
    return AxisPlan(starts, count, last + tile, short // 2 if centre else 0)


def balanced_batch(n_tiles: int, batch_size: int) -> int:
    """Largest-needed batch size that splits ``n_tiles`` into the same number of batches as
    ``batch_size`` but as evenly as possible (9 tiles at 4 -> 3 batches of 3, not 4 + 4 + 1)."""
    n_batches = -(-n_tiles // batch_size)
    return -(-n_tiles // n_batches)
