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
3. Tiling, TTA and softmax: :func:`seg.infer.tiling.predict_batch`, the very function ``seg
   predict`` and ``seg segment`` run (not a re-implementation), so an export reproduces their
   probabilities (to float rounding) at every image size: MONAI's tile grid and importance map
   for same-padding networks (an image smaller than a tile mirror-padded, centred, to one), the
   overlap-tile strategy for the valid-padding U-Net (mirror padding by its border, tiles on its
   pooling grid: exact), the 8 flips/rotations with ``tta``. Two differences, both for the graph's
   sake: all tiles of a view go through the network in one call (the tile count depends on H and
   W), and overlapping tiles are summed with one-hot matmuls instead of ``index_add``, which ONNX
   turns into a racing ScatterND-add (:mod:`seg.infer.blend`).

Input: float32 (N, in_channels, H, W), the image's raw values (e.g. 0..255 for uint8 data), any
H, W >= ``min_size``. Output: float32 (N, classes, H, W) softmax probabilities.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seg.infer.padding import mirror_pad
from seg.infer.tiling import TileSpec, predict_batch

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


class SegmentGraph(nn.Module):
    """Raw image -> probabilities (see module docstring).

    Args:
        net: the trained network in eval mode ((N, C, h, w) -> logits (N, classes, h', w')).
        spec: how the image is tiled and activated (:func:`seg.infer.predictor.tile_spec`: the
            tile from the model's size contract, overlap and blending from the inference settings,
            the target's activation).
        shift: (dy, dx) px image shift, or None / zeros for none.
        min_size: smallest H, W the graph is declared for (e.g. 128 for smp PAN / UPerNet, whose
            pyramids pool the deepest map further); metadata for the exports, default 1.
        tta: average over the 8 dihedral transforms.
    """

    def __init__(self, net: nn.Module, spec: TileSpec, *, shift=None, min_size: int = 1, tta: bool = False):
        super().__init__()
        self.net = net.eval()
        self.spec = spec
        self.tta = bool(tta)
        self.register_buffer("weight", self.spec.weight(), persistent=False)
        self._min_size = max(1, int(min_size))
        dy, dx = (float(s) for s in (shift or (0.0, 0.0)))
        self.shift_y, self.shift_x = dy != 0.0, dx != 0.0
        self.register_buffer("taps_y", torch.from_numpy(shift_taps(dy).astype(np.float32)), persistent=False)
        self.register_buffer("taps_x", torch.from_numpy(shift_taps(dx).astype(np.float32)), persistent=False)

    @property
    def min_size(self) -> int:
        """Smallest H and W the graph is declared for."""
        return self._min_size

    @property
    def border(self) -> int:
        return self.spec.border

    @property
    def tile(self) -> int:
        return self.spec.tile

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

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (N, C, H, W) -> probabilities (N, classes, H, W): ``seg predict``'s tiling and
        TTA (:func:`seg.infer.tiling.predict_batch`), all tiles of a view in one network call,
        blended without reducing scatters."""
        return predict_batch(x, self.net, self.spec, tta=self.tta, weight=self.weight, scatter_free=True)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.predict(self.preprocess(image))
