"""Tiled whole-slice inference: sliding windows (same padding) and overlap-tile (valid padding).

Two paths, one contract (:func:`predict_tiled`):

* ``border == 0`` (same-padding networks, output tile = input tile): MONAI's
  ``sliding_window_inference`` does the windowing, batching and blending; we pass it a precomputed
  importance map, the batch size and a predictor that returns softmax probabilities.
* ``border > 0`` (valid-padding networks such as the original U-Net, output = input - 2*border):
  the paper's overlap-tile strategy. The image is mirror-padded (reflect) by ``border`` so every
  output pixel has full context, output tiles of size ``tile`` are planned to cover the image, the
  matching input tiles (``tile + 2*border``) are cut from the padded image and the output tiles are
  stitched. With no batch-dependent normalisation this equals the network run on the whole padded
  slice; with overlap the copies of a pixel are identical, so blending them changes nothing.

Tile positions follow MONAI's rule (:func:`plan_starts`) in both paths; the blending weights are
MONAI's importance map (:func:`tile_weight`). Images smaller than a tile are mirror-padded to the
tile size first (centred) and the result cropped back.

Probabilities are blended (softmax per tile, then weighted average), so the result sums to 1 per pixel.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from seg.errors import SegError

BLENDS = ("gaussian", "constant")
PAD_MODES = ("reflect", "symmetric", "edge", "constant")

Predictor = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- planning helpers
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
    step = max(int(tile * (1 - overlap)), 1)
    last = size - tile
    if align > 1:
        step = max(step // align * align, align)
        last = -(-last // align) * align
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


def tile_weight(tile: int, blend: str = "gaussian", device: torch.device | str = "cpu") -> torch.Tensor:
    """Blending weights of one (tile, tile) output tile, float32 in (0, 1]: MONAI's importance map
    (``gaussian``: sigma = 0.125 * tile, clamped at 1e-3; ``constant``: ones)."""
    from monai.data.utils import compute_importance_map

    return compute_importance_map((tile, tile), mode=blend, sigma_scale=0.125, device=device, dtype=torch.float32)


def balanced_batch(n_tiles: int, batch_size: int) -> int:
    """Largest-needed batch size that splits ``n_tiles`` into the same number of batches as
    ``batch_size`` but as evenly as possible (9 tiles at 4 -> 3 batches of 3, not 4 + 4 + 1)."""
    n_batches = -(-n_tiles // batch_size)
    return -(-n_tiles // n_batches)


def pad_amounts(size: int, tile: int) -> tuple[int, int]:
    """(before, after) padding that brings ``size`` up to ``tile`` (centred, as MONAI does); (0, 0)
    when the image is already at least one tile."""
    diff = max(tile - size, 0)
    return diff // 2, diff - diff // 2


def mirror_pad(image: np.ndarray, pads: Sequence[tuple[int, int]], mode: str = "reflect") -> np.ndarray:
    """Pad the last two axes of a (C, H, W) array by ``pads`` = ((top, bottom), (left, right)).

    ``reflect`` mirrors without repeating the edge pixel (the U-Net paper's mirroring); numpy handles
    pads wider than the image by repeated reflection.
    """
    width = ((0, 0), tuple(pads[0]), tuple(pads[1]))
    if not any(sum(p) for p in width):
        return image
    return np.pad(image, width, mode=mode)


# ----------------------------------------------------------------------------- validation
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


def check_options(*, tile: int, overlap: float, blend: str, batch_size: int, border: int, pad_mode: str,
                  align: int = 1) -> None:
    """Raise SegError naming the option and the allowed values for a bad tiling option."""
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise SegError(f"inference.tile: must be a positive integer, got {tile!r}")
    if not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
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


# ----------------------------------------------------------------------------- public entry
def predict_tiled(
    image,
    predictor: Predictor,
    *,
    tile: int,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch_size: int = 4,
    border: int = 0,
    align: int = 1,
    pad_mode: str = "reflect",
    device: torch.device | str | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Softmax probabilities of a whole slice, predicted tile by tile.

    Args:
        image: float32 (H, W) or (C_in, H, W), any size (normalised as the model was trained).
        predictor: callable on a float32 torch batch (N, C_in, h, w) on ``device`` returning logits
            (N, classes, h - 2*border, w - 2*border). Called under ``torch.inference_mode``.
        tile: tile size in pixels: the network input for ``border == 0``, the OUTPUT tile for
            ``border > 0`` (the input tile is ``tile + 2*border``). Must be a size the network accepts.
        overlap: fraction of a tile shared with its neighbour, in [0, 1).
        blend: ``"gaussian"`` (MONAI importance map, sigma 0.125*tile) or ``"constant"``.
        batch_size: most tiles per predictor call (batches are balanced, see :func:`balanced_batch`).
        border: valid-padding border of the network ((input - output) / 2); 0 for same padding.
        align: (``border > 0``) tile offsets are multiples of this: the network's size divisor
            (``2**depth`` for a valid U-Net), so tiles share the whole slice's pooling grid and the
            result equals the whole-slice result exactly. Ignored for ``border == 0`` (MONAI's grid).
        pad_mode: numpy pad mode for mirror padding (default ``reflect``).
        device: where tiles are sent (the predictor's device); stitching happens on the CPU.
        progress: show a tqdm bar over tile batches.

    Returns:
        float32 (classes, H, W) probabilities (sum to 1 over classes).

    Raises:
        SegError: bad option (naming it and the choices), bad image shape, or a predictor output
            whose size does not match the tile (wrong ``border``).
    """
    check_options(tile=tile, overlap=overlap, blend=blend, batch_size=batch_size, border=border,
                  pad_mode=pad_mode, align=align)
    x = _as_chw(image)
    _, h, w = x.shape
    device = torch.device(device) if device is not None else torch.device("cpu")
    with torch.inference_mode():
        if border == 0:
            (t0, t1), (l0, l1) = pad_amounts(h, tile), pad_amounts(w, tile)
            xp = mirror_pad(x, ((t0, t1), (l0, l1)), pad_mode)
            probs = _sliding_window(torch.from_numpy(xp), predictor, tile=tile, overlap=overlap, blend=blend,
                                    batch_size=batch_size, device=device, progress=progress)
        else:
            corners = plan_tiles((h, w), tile, overlap, align)
            gh, gw = max(c[0] for c in corners) + tile, max(c[1] for c in corners) + tile
            t0 = l0 = 0  # pad only after the image: keeps the pooling grid of the whole slice
            xp = mirror_pad(x, ((border, gh - h + border), (border, gw - w + border)), pad_mode)
            probs = _overlap_tile(torch.from_numpy(xp), predictor, corners, tile=tile, blend=blend,
                                  batch_size=batch_size, border=border, device=device, progress=progress)
    return np.ascontiguousarray(probs[:, t0:t0 + h, l0:l0 + w].numpy(), dtype=np.float32)


def softmax_predictor(predictor: Predictor) -> Predictor:
    """Wrap a logits predictor so it returns float32 softmax probabilities over axis 1."""

    def fn(batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(predictor(batch).float(), dim=1)

    return fn


def _sliding_window(x, predictor, *, tile, overlap, blend, batch_size, device, progress) -> torch.Tensor:
    """Same-padding path through MONAI. x: float32 (C, H, W) with H, W >= tile. -> (classes, H, W)."""
    from monai.inferers import sliding_window_inference

    soft = softmax_predictor(predictor)

    def checked(batch: torch.Tensor) -> torch.Tensor:
        out = soft(batch)
        if tuple(out.shape[2:]) != tuple(batch.shape[2:]):
            raise SegError(
                f"predict_tiled: predictor output {tuple(out.shape[2:])} differs from its input tile "
                f"{tuple(batch.shape[2:])}: a valid-padding model needs border > 0"
            )
        return out

    n_tiles = len(plan_tiles(x.shape[1:], tile, overlap))
    out = sliding_window_inference(
        x[None], roi_size=(tile, tile), sw_batch_size=balanced_batch(n_tiles, batch_size), predictor=checked,
        overlap=overlap, mode=blend, roi_weight_map=tile_weight(tile, blend, device), sw_device=device, device="cpu",
        progress=progress,
    )
    return torch.as_tensor(out)[0].float()


def _overlap_tile(x, predictor, corners, *, tile, blend, batch_size, border, device, progress) -> torch.Tensor:
    """Valid-padding path. x: float32 (C, H + 2*border, W + 2*border), already mirror-padded, with
    the output grid (H, W) exactly covered by output tiles at ``corners``. Returns (classes, H, W)."""
    from tqdm import tqdm

    h, w = x.shape[1] - 2 * border, x.shape[2] - 2 * border
    weight = tile_weight(tile, blend, device)
    count = torch.zeros((h, w), dtype=torch.float32)
    wc = weight.cpu()
    for y, xx in corners:
        count[y:y + tile, xx:xx + tile] += wc
    size_in = tile + 2 * border
    out: torch.Tensor | None = None
    batch_size = balanced_batch(len(corners), batch_size)
    batches = [corners[i:i + batch_size] for i in range(0, len(corners), batch_size)]
    for group in tqdm(batches, disable=not progress, desc="tiles", leave=False):
        batch = torch.stack([x[:, y:y + size_in, xx:xx + size_in] for y, xx in group]).to(device)
        logits = predictor(batch)
        if tuple(logits.shape[2:]) != (tile, tile):
            raise SegError(
                f"predict_tiled: predictor turned input tiles of {size_in} px into {tuple(logits.shape[2:])}, "
                f"expected ({tile}, {tile}) from border {border}: wrong border or an illegal tile size"
            )
        probs = (torch.softmax(logits.float(), dim=1) * weight).cpu()
        if out is None:
            out = torch.zeros((probs.shape[1], h, w), dtype=torch.float32)
        for p, (y, xx) in zip(probs, group):
            out[:, y:y + tile, xx:xx + tile] += p
    out /= count
    return out
