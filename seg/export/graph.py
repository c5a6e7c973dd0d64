"""The exported inference graph: raw image in, class probabilities out, preprocessing included.

:class:`SegmentGraph` wraps a trained network so that TorchScript, ONNX and bioimage.io consumers get
the whole per-image computation of ``seg segment`` in one graph, nothing to re-implement:

1. ``shift`` (only for datasets ingested with ``align_images``): resample the image by the package's
   sub-pixel ``image_shift`` (dy, dx) px, as :func:`seg.data.align.shift_image` does
   (``scipy.ndimage.shift``, cubic spline, mirrored borders). A cubic-spline shift by a constant is a
   separable convolution with the cardinal cubic spline kernel; its taps fall off as 0.268^|k|, so
   :func:`shift_taps` keeps 16 px on each side (truncation < 1e-9) and the image is mirror-extended
   first, exactly like scipy's ``mode="mirror"``.
2. ``normalise``: zero mean / unit std per image over (C, H, W), a std below 1e-6 counts as 1
   (:func:`seg.data.canonical.normalise`).
3. Size contract and tiling, inside the graph, as ``seg predict`` / ``seg segment`` do it, so an
   export reproduces their probabilities (to float rounding) at every image size.
   Valid-padding U-Net: mirror-padded by its ``valid_border`` on every side plus up to the next
   legal output size after the image, one pass (the overlap-tile strategy is seamless: its tiles
   equal one pass over the padded image; the pooling grid starts at the image's top-left corner
   like ``seg predict``'s aligned tiles). Same-padding models with a ``tile``: an image smaller
   than a tile is mirror-padded (centred) to it, then the tiles of :func:`seg.infer.tiling.plan_starts`
   (MONAI's rule) are cut, run as one batch, and blended with the same importance map
   (:func:`seg.infer.tiling.tile_weight`): weighted sum / sum of weights, like MONAI's
   ``sliding_window_inference``. Without a tile: padded after the image to a multiple of the size
   divisor, one pass.
4. Network, softmax over classes; with ``tta`` the mean over the 8 flips/rotations
   (:data:`seg.infer.tta.DIHEDRAL`, summed in the same order; each view tiled on its own, as
   :func:`seg.infer.tta.predict_tta` does around the tiled prediction).

Input: float32 (N, in_channels, H, W), the image's raw values (e.g. 0..255 for uint8 data), any
H, W >= ``min_size``. Output: float32 (N, classes, H, W) softmax probabilities.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seg.infer.tta import DIHEDRAL

SHIFT_RADIUS = 16  # px of spline-kernel support kept on each side beyond the shift itself


def shift_taps(shift: float) -> np.ndarray:
    """1D correlation taps (float64, odd length 2r+1, r = 16 + ceil(|shift|)) such that
    ``out[i] = sum_t taps[t] * ext[i + t - r]`` equals ``scipy.ndimage.shift(x, shift, order=3,
    mode="mirror")[i]`` for the mirror extension ``ext`` of ``x`` (to < 1e-9 of the signal's range)."""
    from scipy import ndimage as ndi

    r = SHIFT_RADIUS + int(np.ceil(abs(float(shift))))
    n = 8 * r + 1
    impulse = np.zeros(n)
    impulse[n // 2] = 1.0
    response = ndi.shift(impulse, float(shift), order=3, mode="mirror")  # g[m] = response[c + m]
    g = response[n // 2 - r: n // 2 + r + 1]
    return g[::-1].copy()  # convolution -> correlation (conv2d correlates)


def mirror_indices(n, before: int | torch.Tensor, after: int | torch.Tensor) -> torch.Tensor:
    """int64 indices into an axis of length ``n`` that pad it by ``before``/``after`` with numpy's
    ``reflect`` mode (edge not repeated; wider pads continue the periodic mirror extension).

    ``n``, ``before`` and ``after`` may be traced sizes: everything is tensor arithmetic, so a traced
    or exported graph keeps the dependency on the input size.
    """
    idx = torch.arange(-before, n + after)
    size = torch.ones((), dtype=torch.int64) * n
    period = torch.clamp(2 * (size - 1), min=1)
    m = torch.remainder(idx, period)
    return torch.where(m >= size, period - m, m)


def mirror_pad(x: torch.Tensor, top, bottom, left, right) -> torch.Tensor:
    """Pad the last two axes of (N, C, H, W) ``x`` like ``numpy.pad(mode="reflect")``."""
    x = x.index_select(2, mirror_indices(x.shape[2], top, bottom))
    return x.index_select(3, mirror_indices(x.shape[3], left, right))


class SegmentGraph(nn.Module):
    """Raw image -> probabilities (see module docstring).

    Args:
        net: the trained network in eval mode ((N, C, h, w) -> logits (N, classes, h', w')).
        shift: (dy, dx) px image shift, or None / zeros for none.
        border: ``valid_border`` of a valid-padding network, 0 for same padding.
        divisor: the network's size divisor (``seg.models.size_divisor``; the step between legal
            sizes of a valid-padding U-Net).
        min_output: valid padding: the smallest legal output size (any H, W >= it works).
        min_size: smallest H, W the network takes after padding (e.g. 128 for smp PAN / UPerNet,
            whose pyramids pool the deepest map further); default ``min_output`` for valid padding,
            else 1. Smaller inputs are the caller's to avoid (the exports' metadata states it).
        tta: average over the 8 dihedral transforms.
    """

    def __init__(self, net: nn.Module, *, shift=None, border: int = 0, divisor: int = 1,
                 min_output: int = 1, min_size: int | None = None, tta: bool = False,
                 tile: int | None = None, overlap: float = 0.25, blend: str = "gaussian"):
        super().__init__()
        self.net = net.eval()
        self.border, self.divisor, self.min_output, self.tta = int(border), int(divisor), int(min_output), bool(tta)
        # same-padding tiling (tile: the output tile of seg.infer.predict.tile_geometry)
        self.tile = int(tile) if tile and not self.border else 0
        self.step = max(int(self.tile * (1 - overlap)), 1) if self.tile else 0
        if self.tile:
            from seg.infer.tiling import tile_weight

            self.register_buffer("weight", tile_weight(self.tile, blend).float(), persistent=False)
        default = self.min_output if self.border else 1
        self._min_size = max(default, int(min_size)) if min_size is not None else default
        dy, dx = (float(s) for s in (shift or (0.0, 0.0)))
        self.shift_y, self.shift_x = dy != 0.0, dx != 0.0
        self.register_buffer("taps_y", torch.from_numpy(shift_taps(dy).astype(np.float32)), persistent=False)
        self.register_buffer("taps_x", torch.from_numpy(shift_taps(dx).astype(np.float32)), persistent=False)

    @property
    def min_size(self) -> int:
        """Smallest H and W the graph accepts."""
        return self._min_size

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (N, C, H, W) -> shifted and normalised (N, C, H, W) float32."""
        x = x.float()
        c = x.shape[1]
        if self.shift_y:
            r = (self.taps_y.shape[0] - 1) // 2
            w = self.taps_y.reshape(1, 1, -1, 1).repeat(c, 1, 1, 1)
            x = F.conv2d(mirror_pad(x, r, r, 0, 0), w, groups=c)
        if self.shift_x:
            r = (self.taps_x.shape[0] - 1) // 2
            w = self.taps_x.reshape(1, 1, 1, -1).repeat(c, 1, 1, 1)
            x = F.conv2d(mirror_pad(x, 0, 0, r, r), w, groups=c)
        # Mean and std in float64: a runtime's float32 reduction over a large image (ONNX Runtime
        # sums 1M pixels in one float32 accumulator) is off by ~1e-4 of the mean, which a trained
        # network amplifies to ~1e-3 in the probabilities; in float64 every runtime agrees.
        xd = x.double()
        mean = xd.mean(dim=(1, 2, 3), keepdim=True)
        std = ((xd - mean) ** 2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        return ((xd - mean) / std).float()

    def whole(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (N, C, H, W) -> probabilities (N, classes, H, W): pad to the size contract,
        run the network once, crop, softmax."""
        h, w = x.shape[2], x.shape[3]
        d, b = self.divisor, self.border
        if b:  # valid padding: border on every side, then up to the next legal output size after
            ho = self.min_output + (h - self.min_output + d - 1) // d * d
            wo = self.min_output + (w - self.min_output + d - 1) // d * d
            xp = mirror_pad(x, b, ho - h + b, b, wo - w + b)
        else:
            ho, wo = (h + d - 1) // d * d, (w + d - 1) // d * d
            xp = mirror_pad(x, 0, ho - h, 0, wo - w)
        logits = self.net(xp)
        return torch.softmax(logits[:, :, :h, :w].float(), dim=1)

    def tiled(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (N, C, H, W) -> probabilities (N, classes, H, W) by blended tiles (see the
        module docstring); every size-dependent quantity is tensor arithmetic, so traced and
        exported graphs keep it dynamic."""
        t, step = self.tile, self.step
        h, w = x.shape[2], x.shape[3]  # ints, SymInts (torch.export) or tensors (torch.jit.trace)
        if torch.jit.is_tracing():
            dh, dw = torch.clamp(t - h, min=0), torch.clamp(t - w, min=0)
        else:
            dh, dw = torch.sym_max(t - h, 0), torch.sym_max(t - w, 0)
        top, left = dh // 2, dw // 2  # centred pad up to one tile
        xp = mirror_pad(x, top, dh - top, left, dw - left)
        hp, wp = h + dh, w + dw
        ny, nx = (hp - t + step - 1) // step + 1, (wp - t + step - 1) // step + 1  # tiles per axis
        ar = torch.arange(t)
        rows = (torch.clamp(torch.arange(ny) * step, max=hp - t)[:, None] + ar).reshape(ny * t)
        cols = (torch.clamp(torch.arange(nx) * step, max=wp - t)[:, None] + ar).reshape(nx * t)
        n, c = x.shape[0], x.shape[1]
        # (N, C, ny*t, nx*t) -> (N*ny*nx, C, t, t), row-major tile order
        grid = xp.index_select(2, rows).index_select(3, cols)
        tiles = grid.reshape(n, c, ny, t, nx, t).permute(0, 2, 4, 1, 3, 5).reshape(n * ny * nx, c, t, t)
        probs = torch.softmax(self.net(tiles).float(), dim=1) * self.weight
        k = probs.shape[1]
        probs = probs.reshape(n, ny, nx, k, t, t).permute(0, 3, 1, 4, 2, 5).reshape(n, k, ny * t, nx * t)
        # Fold back: overlapping rows / columns accumulate, then divide by the weight sum. The sums
        # are products with one-hot placement matrices, not index_add: index_add becomes ONNX
        # ScatterND(reduction=add), whose multi-threaded CPU kernel in ONNX Runtime races on
        # repeated indices (wrong by up to 0.1 in one run of five, measured on ORT 1.32).
        place_rows = (torch.arange(hp)[:, None] == rows[None, :]).to(probs.dtype)  # (hp, ny*t)
        place_cols = (cols[:, None] == torch.arange(wp)[None, :]).to(probs.dtype)  # (nx*t, wp)
        out = place_rows @ (probs @ place_cols)
        wsum = place_rows @ (self.weight.repeat(ny, nx) @ place_cols)
        out = out / wsum[None, None]
        return out.index_select(2, torch.arange(x.shape[2]) + top).index_select(3, torch.arange(x.shape[3]) + left)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (N, C, H, W) -> probabilities, tiled or in one pass."""
        return self.tiled(x) if self.tile else self.whole(x)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(image)
        if not self.tta:
            return self.predict(x)
        if self.tile:  # each view tiled on its own grid, as predict_tta around the tiled prediction
            acc: torch.Tensor | None = None
            for k, flip in DIHEDRAL:
                v = torch.flip(x, dims=[3]) if flip else x
                v = torch.rot90(v, k, dims=[2, 3]) if k else v
                p = self.tiled(v)
                p = torch.rot90(p, -k, dims=[2, 3]) if k else p
                p = torch.flip(p, dims=[3]) if flip else p
                acc = p if acc is None else acc + p
            return acc / float(len(DIHEDRAL))
        # The 8 views in two batched passes (views with k even keep (H, W), odd ones swap them),
        # then mapped back and summed in DIHEDRAL order, as seg.infer.tta.predict_tta does.
        n = x.shape[0]
        flipped = torch.flip(x, dims=[3])
        even = self.whole(torch.cat([x, torch.rot90(x, 2, dims=[2, 3]),
                                     flipped, torch.rot90(flipped, 2, dims=[2, 3])], dim=0))
        odd = self.whole(torch.cat([torch.rot90(x, 1, dims=[2, 3]), torch.rot90(x, 3, dims=[2, 3]),
                                    torch.rot90(flipped, 1, dims=[2, 3]), torch.rot90(flipped, 3, dims=[2, 3])],
                                   dim=0))
        views = {(0, False): even[0:n], (2, False): even[n:2 * n], (0, True): even[2 * n:3 * n],
                 (2, True): even[3 * n:4 * n], (1, False): odd[0:n], (3, False): odd[n:2 * n],
                 (1, True): odd[2 * n:3 * n], (3, True): odd[3 * n:4 * n]}
        acc: torch.Tensor | None = None
        for k, flip in DIHEDRAL:
            p = views[(k, flip)]
            p = torch.rot90(p, -k, dims=[2, 3]) if k else p
            p = torch.flip(p, dims=[3]) if flip else p
            acc = p if acc is None else acc + p
        return acc / float(len(DIHEDRAL))
