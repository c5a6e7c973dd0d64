"""Mirror padding as index arithmetic: numpy's pad modes on torch tensors, traceable and exportable.

Padding is a gather (``index_select``) with indices computed from the axis length, so a traced
(``torch.jit.trace``) or exported (``torch.export``) graph keeps its dependence on the input size,
and no mode-specific padding op is needed in ONNX. Pads wider than the axis continue the periodic
extension, exactly as ``numpy.pad`` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: numpy pad modes the tiler supports (``reflect``: the U-Net paper's mirroring, edge not repeated).
PAD_MODES = ("reflect", "symmetric", "edge", "constant")


def pad_indices(n, before, after, mode: str = "reflect", device: torch.device | str = "cpu") -> torch.Tensor:
    """int64 indices (length ``before + n + after``) into an axis of length ``n`` that pad it like
    ``numpy.pad(mode=mode)`` for ``reflect``, ``symmetric`` and ``edge``.

    ``n``, ``before`` and ``after`` may be ints, SymInts (``torch.export``) or 0-d tensors
    (``torch.jit.trace``): everything is tensor arithmetic. The indices live on ``device``.
    """
    idx = torch.arange(-before, n + after, device=device)
    size = torch.ones((), dtype=torch.int64, device=device) * n
    if mode == "edge":
        return torch.clamp(torch.clamp(idx, max=size - 1), min=0)
    if mode == "symmetric":  # edge pixel repeated: period 2n
        m = torch.remainder(idx, 2 * size)
        return torch.where(m >= size, 2 * size - 1 - m, m)
    period = torch.clamp(2 * (size - 1), min=1)  # reflect: period 2(n - 1); n = 1 repeats the pixel
    m = torch.remainder(idx, period)
    return torch.where(m >= size, period - m, m)


def mirror_indices(n, before, after) -> torch.Tensor:
    """``reflect`` indices of :func:`pad_indices` (numpy's default mirroring, edge not repeated)."""
    return pad_indices(n, before, after, "reflect")


def mirror_pad(x: torch.Tensor, top, bottom, left, right, mode: str = "reflect") -> torch.Tensor:
    """Pad the last two axes of (..., H, W) ``x`` like ``numpy.pad(mode=mode)`` (``constant``: zeros).

    Args:
        x: (N, C, H, W) tensor, any dtype and device.
        top, bottom, left, right: pad widths in pixels (ints, SymInts or 0-d int64 tensors).
        mode: one of :data:`PAD_MODES`.

    Returns:
        (N, C, top + H + bottom, left + W + right) tensor of ``x``'s dtype and device.
    """
    if mode == "constant":
        return F.pad(x, (int(left), int(right), int(top), int(bottom)))
    x = x.index_select(-2, pad_indices(x.shape[-2], top, bottom, mode, x.device))
    return x.index_select(-1, pad_indices(x.shape[-1], left, right, mode, x.device))
