"""Tiled whole-image inference: the one implementation behind ``seg predict``, training validation,
``seg segment`` and the exported TorchScript / ONNX graphs.

:func:`tiled_probabilities` takes a batch of normalised images as a torch tensor and is written in
traceable tensor operations only: eager callers (:func:`predict_tiled`,
:func:`seg.infer.predictor.predict_slice`) run it directly, :class:`seg.export.graph.SegmentGraph`
traces and exports it. Per image:

1. Plan the tiles (:func:`seg.infer.tiles.axis_plan`): MONAI's grid (``sliding_window_inference``)
   for same-padding networks, a grid aligned to the network's pooling for valid-padding ones.
2. Pad (:func:`seg.infer.padding.mirror_pad`). Same padding (``border == 0``, output tile = input
   tile): an image smaller than a tile is mirror-padded to it, centred. Valid padding (the U-Net
   paper's overlap-tile strategy, output = input - 2 * border): mirror-padded by ``border`` on
   every side so each output pixel has full context, plus the grid's extension after the image.
3. Cut the input tiles with two ``index_select`` gathers on the device (no per-tile copies), run
   the network on them, softmax per tile. Eager callers go one row of tiles at a time (memory
   holds one row of tiles, whatever the image size) in balanced chunks of at most ``chunk``
   tiles; graphs cut and run every tile at once (their tile count depends on H and W).
4. Blend with MONAI's importance map (:func:`seg.infer.blend.importance_map`): the weighted sum of
   the tiles' probabilities over the sum of the weights (:func:`seg.infer.blend.fold_tiles`), so
   probabilities still sum to 1 per pixel; crop back to the image.

Valid padding is exact: tiles on the pooling grid equal the network run on the whole padded
image, so overlapping copies of a pixel are equal and blending them changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from seg.errors import SegError
from seg.infer.blend import BLENDS, fold_axis, fold_tiles, importance_map
from seg.infer.padding import PAD_MODES, mirror_pad
from seg.infer.tiles import axis_plan, balanced_batch
from seg.infer.tta import predict_tta

Predictor = Callable[[torch.Tensor], torch.Tensor]


ACTIVATIONS = ("softmax", "sigmoid")


def check_options(*, tile: int, overlap: float, blend: str, batch_size: int = 1, border: int = 0,
                  pad_mode: str = "reflect", align: int = 1) -> None:
    """Raise SegError naming the option and the allowed values for a bad tiling option."""
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise SegError(f"inference.tile: must be a positive integer, got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
        raise SegError(f"inference.overlap: must be in [0, 1), got {overlap!r}")
    if blend not in BLENDS:
        raise SegError(f"inference.blend: unknown option {blend!r} (choices: {', '.join(BLENDS)})")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise SegError(f"inference.batch_size: must be a positive integer, got {batch_size!r}")
    if isinstance(border, bool) or not isinstance(border, (int, np.integer)) or border < 0:
        raise SegError(f"predict_tiled: border must be a non-negative integer, got {border!r}")
    if isinstance(align, bool) or not isinstance(align, (int, np.integer)) or align < 1:
        raise SegError(f"predict_tiled: align must be a positive integer, got {align!r}")
    if pad_mode not in PAD_MODES:
        raise SegError(f"predict_tiled: unknown pad_mode {pad_mode!r} (choices: {', '.join(PAD_MODES)})")


@dataclass(frozen=True)
class TileSpec:
    """How an image is tiled (validated on construction, SegError naming the option).

    Attributes:
        tile: OUTPUT tile size in pixels (the network's input tile is ``tile + 2 * border``); a
            size the network accepts.
        overlap: fraction of a tile shared with its neighbour, in [0, 1).
        blend: ``gaussian`` (MONAI's importance map, sigma 0.125 * tile) or ``constant``.
        border: valid-padding border of the network ((input - output) / 2); 0 for same padding.
        align: (``border > 0``) tile starts are multiples of it: the network's size divisor
            (``2**depth`` for a valid U-Net), so tiles share the whole image's pooling grid and the
            result equals the whole-image result exactly. Ignored for ``border == 0`` (MONAI's grid).
        pad_mode: numpy pad mode of the mirror padding (default ``reflect``).
        activation: what each tile's network outputs go through before blending: ``softmax`` over
            the channels (class probabilities, the default) or ``sigmoid`` per channel (regressed
            maps in [0, 1]: a variant with ``target: distance``).
    """

    tile: int
    overlap: float
    blend: str
    border: int = 0
    align: int = 1
    pad_mode: str = "reflect"
    activation: str = "softmax"

    def __post_init__(self) -> None:
        check_options(tile=self.tile, overlap=self.overlap, blend=self.blend, border=self.border,
                      align=self.align, pad_mode=self.pad_mode)
        if self.activation not in ACTIVATIONS:
            raise SegError(f"tiling: unknown activation {self.activation!r} (choices: {', '.join(ACTIVATIONS)})")

    @property
    def input_tile(self) -> int:
        """The network's input tile in pixels."""
        return self.tile + 2 * self.border

    def weight(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """float32 (tile, tile) blending weights (:func:`seg.infer.blend.importance_map`)."""
        return importance_map(self.tile, self.blend, device)


def tiled_probabilities(x: torch.Tensor, predictor: Predictor, spec: TileSpec, *,
                        weight: torch.Tensor | None = None, chunk: int | None = None,
                        scatter_free: bool = False, progress: bool = False) -> torch.Tensor:
    """Softmax probabilities of a batch of whole images, predicted tile by tile (see module doc).

    Args:
        x: float32 (N, C_in, H, W), normalised as the network was trained, any H, W >= 1, on the
            predictor's device.
        predictor: callable (T, C_in, h, w) float32 -> logits (T, classes, h - 2*border,
            w - 2*border) (a network in eval mode, or :meth:`seg.device.Precision.predictor`).
        spec: the tiling (:class:`TileSpec`).
        weight: float32 (tile, tile) blending weights on ``x``'s device; default ``spec.weight``
            (pass it to avoid recomputing it per call; exported graphs hold it as a buffer).
        chunk: most tiles per predictor call; the tiles go one row of tiles at a time, in balanced
            chunks (a row of 3 tiles of one image at 4: one call of 3). None = all tiles of the
            batch in one call (what a traced graph does).
        scatter_free: blend with one-hot matmuls instead of ``index_add`` (exported graphs; see
            :mod:`seg.infer.blend`).
        progress: a tqdm bar over the chunks.

    Returns:
        float32 (N, classes, H, W) probabilities (sum to 1 over classes), on ``x``'s device.

    Raises:
        SegError: the predictor's output tile does not match ``spec`` (wrong border, or a tile
            size the network does not take).
    """
    t, b = spec.tile, spec.border
    same = b == 0
    align = 1 if same else spec.align
    h, w = x.shape[2], x.shape[3]  # ints, SymInts (torch.export) or 0-d tensors (torch.jit.trace)
    py = axis_plan(h, t, spec.overlap, align=align, centre=same, device=x.device)
    px = axis_plan(w, t, spec.overlap, align=align, centre=same, device=x.device)
    if same:
        xp = mirror_pad(x, py.before, py.extent - h - py.before, px.before, px.extent - w - px.before, spec.pad_mode)
    else:
        xp = mirror_pad(x, b, py.extent - h + b, b, px.extent - w + b, spec.pad_mode)
    weight = spec.weight(x.device) if weight is None else weight
    span = torch.arange(t, device=x.device)
    rows, cols = (py.starts[:, None] + span).reshape(-1), (px.starts[:, None] + span).reshape(-1)
    free = scatter_free or x.device.type != "cpu"  # index_add is deterministic on the CPU only
    if chunk is None:  # graphs: every tile in one network call
        out = _tile_rows(xp, py.starts, px.starts, predictor, spec, weight, None, False, cols, px.extent, free)
        out = fold_axis(out, rows, py.extent, -2, scatter_free=free)
    else:  # eager: one row of tiles at a time, so memory holds one row of tiles, not all of them
        out = None
        for i in range(int(py.count)):
            part = _tile_rows(xp, py.starts[i:i + 1], px.starts, predictor, spec, weight, chunk, progress, cols,
                              px.extent, free)
            if out is None:
                out = part.new_zeros((*part.shape[:2], py.extent, px.extent))
            y = int(py.starts[i])
            out[:, :, y:y + t] += part
    wsum = fold_tiles(weight.repeat(py.count, px.count), rows, cols, py.extent, px.extent, scatter_free=free)
    out = out / wsum
    keep_rows = torch.arange(h, device=x.device) + py.before
    keep_cols = torch.arange(w, device=x.device) + px.before
    return out.index_select(2, keep_rows).index_select(3, keep_cols)


def _tile_rows(xp: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, predictor: Predictor, spec: TileSpec,
               weight: torch.Tensor, chunk: int | None, progress: bool, cols: torch.Tensor, width,
               scatter_free: bool) -> torch.Tensor:
    """The tiles starting at rows ``ys`` x columns ``xs`` (output-grid pixels) of the padded batch
    ``xp`` (N, C, H', W'): cut with two gathers, predicted, weighted, and summed along each row of
    tiles into the output grid's columns. Returns (N, classes, len(ys) * tile, width)."""
    size_in, t = spec.input_tile, spec.tile
    n, c = xp.shape[0], xp.shape[1]
    ny, nx = ys.shape[0], xs.shape[0]
    span_in = torch.arange(size_in, device=xp.device)
    rows_in = (ys[:, None] + span_in).reshape(-1)
    cols_in = (xs[:, None] + span_in).reshape(-1)
    # (N, C, ny*T, nx*T) -> (N*ny*nx, C, T, T), row-major tile order
    grid = xp.index_select(2, rows_in).index_select(3, cols_in)
    tiles = grid.reshape(n, c, ny, size_in, nx, size_in).permute(0, 2, 4, 1, 3, 5).reshape(n * ny * nx, c, size_in,
                                                                                           size_in)
    probs = _tile_probabilities(tiles, predictor, spec, weight, chunk, progress)
    k = probs.shape[1]
    probs = probs.reshape(n, ny, nx, k, t, t).permute(0, 3, 1, 4, 2, 5).reshape(n, k, ny * t, nx * t)
    return fold_axis(probs, cols, width, -1, scatter_free=scatter_free)  # rows: placed by the caller


def predict_batch(x: torch.Tensor, predictor: Predictor, spec: TileSpec, *, tta: bool = False,
                  weight: torch.Tensor | None = None, chunk: int | None = None, scatter_free: bool = False,
                  progress: bool = False) -> torch.Tensor:
    """Probabilities of a batch of whole images: :func:`tiled_probabilities`, averaged over the 8
    flips/rotations (:func:`seg.infer.tta.predict_tta`, each view tiled on its own grid) with ``tta``.

    The entry of every caller: :func:`seg.infer.predictor.predict_slice` (eager: ``chunk`` tiles per
    call) and the exported graph (:class:`seg.export.graph.SegmentGraph`: ``chunk=None``,
    ``scatter_free``).
    Arguments and result as :func:`tiled_probabilities`: float32 (N, C_in, H, W) in, float32
    (N, classes, H, W) out.
    """
    weight = spec.weight(x.device) if weight is None else weight

    def tiled(v: torch.Tensor) -> torch.Tensor:
        return tiled_probabilities(v, predictor, spec, weight=weight, chunk=chunk, scatter_free=scatter_free,
                                   progress=progress)

    return predict_tta(x, tiled) if tta else tiled(x)


def _tile_probabilities(tiles: torch.Tensor, predictor: Predictor, spec: TileSpec, weight: torch.Tensor,
                        chunk: int | None, progress: bool) -> torch.Tensor:
    """(T, C, size_in, size_in) tiles -> (T, classes, tile, tile) softmax probabilities (or sigmoid
    maps, :attr:`TileSpec.activation`) x weight."""

    def run(batch: torch.Tensor) -> torch.Tensor:
        logits = predictor(batch)
        _check_output(logits, batch, spec)
        if spec.activation == "sigmoid":
            return torch.sigmoid(logits.float()) * weight
        return torch.softmax(logits.float(), dim=1) * weight

    if chunk is None:
        return run(tiles)
    count = int(tiles.shape[0])
    size = balanced_batch(count, chunk)
    starts = range(0, count, size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="tiles", leave=False, total=-(-count // size))
    parts = [run(tiles[i:i + size]) for i in starts]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _check_output(logits: torch.Tensor, batch: torch.Tensor, spec: TileSpec) -> None:
    if torch.jit.is_tracing():  # sizes are traced values there; the eager runs checked them
        return
    got = tuple(int(s) for s in logits.shape[2:])
    if got == (spec.tile, spec.tile):
        return
    size_in = tuple(int(s) for s in batch.shape[2:])
    if spec.border == 0:
        raise SegError(f"predict_tiled: predictor output {got} differs from its input tile {size_in}: a "
                       "valid-padding model needs border > 0")
    raise SegError(f"predict_tiled: predictor turned input tiles of {size_in} px into {got}, expected "
                   f"({spec.tile}, {spec.tile}) from border {spec.border}: wrong border or an illegal tile size")


# ----------------------------------------------------------------------------- numpy entry
def _as_chw(image) -> np.ndarray:
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise SegError(f"predict_tiled: image must be (H, W) or (C, H, W), got shape {tuple(arr.shape)}")
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise SegError(f"predict_tiled: image is empty, shape {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise SegError(f"predict_tiled: image must be numeric, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def as_batch(image, device: torch.device | str = "cpu") -> torch.Tensor:
    """A numpy/torch (H, W) or (C, H, W) image as a float32 (1, C, H, W) tensor on ``device``
    (SegError for another shape, an empty or a non-numeric image)."""
    return torch.from_numpy(_as_chw(image))[None].to(device)


def predict_tiled(
    image,
    predictor: Predictor,
    *,
    tile: int,
    overlap: float,
    blend: str,
    batch_size: int = 4,
    border: int = 0,
    align: int = 1,
    pad_mode: str = "reflect",
    device: torch.device | str | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Softmax probabilities of one whole image, predicted tile by tile (:func:`tiled_probabilities`).

    Args:
        image: float32 (H, W) or (C_in, H, W), any size (normalised as the model was trained).
        predictor: callable on a float32 torch batch (N, C_in, h, w) on ``device`` returning logits
            (N, classes, h - 2*border, w - 2*border). Called under ``torch.inference_mode``.
        tile, overlap, blend, border, align, pad_mode: the tiling (:class:`TileSpec`).
        batch_size: most tiles per predictor call (balanced chunks).
        device: where the image, the tiles and the blending live (the predictor's device).
        progress: show a tqdm bar over tile batches.

    Returns:
        float32 (classes, H, W) probabilities (sum to 1 over classes), numpy.

    Raises:
        SegError: bad option (naming it and the choices), bad image shape, or a predictor output
            whose size does not match the tile (wrong ``border``).
    """
    check_options(tile=tile, overlap=overlap, blend=blend, batch_size=batch_size, border=border,
                  pad_mode=pad_mode, align=align)
    spec = TileSpec(int(tile), float(overlap), blend, int(border), int(align), pad_mode)
    device = torch.device(device) if device is not None else torch.device("cpu")
    x = as_batch(image, device)
    with torch.inference_mode():
        out = tiled_probabilities(x, predictor, spec, chunk=int(batch_size), progress=progress)
    return np.ascontiguousarray(out[0].float().cpu().numpy(), dtype=np.float32)
