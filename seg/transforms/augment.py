"""Training augmentation: the U-Net paper's elastic deformation plus flips, rot90 and mild intensity.

Draw, then apply: :meth:`Augmenter.draw` takes every random number from a ``numpy.random.Generator``
(always the same count in the same order, whatever is enabled, so toggling one option does not
change the other draws) and returns an :class:`AugmentParams`; :meth:`Augmenter.apply` is
deterministic. ``Augmenter(cfg)(image, targets, rng)`` does both. Same seed => same bytes.

Elastic deformation (paper recipe): a coarse ``grid x grid`` (default 3x3) grid of displacement
vectors drawn from N(0, sigma^2) px (default sigma = 10), interpolated to a per-pixel field with cubic
B-splines and applied by ``elasticdeform.deform_grid`` in ONE call for all arrays (one field; image
cubic order 3, integer label maps nearest order 0 so no new label values, float maps such as weight
maps linear order 1; border mode ``mirror``). The control grid spans the array passed in.

Crops for training (what the data loader does): pass the whole slice plus ``crop=(rows, cols)``, two
``slice`` objects giving the output patch in slice coordinates. elasticdeform then evaluates the
deformation only on the patch (cost proportional to the patch area; ~4x cheaper for 256^2 out of
512^2) while sampling context from the whole slice, so there is no border artefact to cut off and
the field is the paper's whole-image field. The alternative "augment a larger patch, then
centre-crop" also works: take a margin of at least :attr:`Augmenter.margin` pixels (4 sigma, beyond
which a displacement is improbable) on each side, call without ``crop`` and cut the margin off
afterwards; the control grid then spans the larger patch, so deformations are relatively stronger.

Zoom (``augment.zoom``, off unless configured): a factor drawn log-uniformly from ``zoom.range``
scales the output about its centre in the same ``deform_grid`` call (its ``zoom`` argument), so the
context comes from the whole slice and labels stay nearest-interpolated. Its two draws come after
all the others, so enabling it leaves every other draw as it was.

Flips and rot90 are applied after the deformation, to all arrays alike (rot90 by 1 or 3 quarter turns
only for square outputs, so the shape never changes). Intensity changes touch the image only:
``x -> x * (1 + a) + b`` (a ~ U(-scale, scale), b ~ U(-shift, shift) in normalised units), then a
gamma ``exp(g)``, g ~ U(-gamma, gamma), applied on the sample's [min, max] range mapped to [0, 1],
then additive Gaussian noise of std ``noise``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from seg.config import complete_section
from seg.errors import SegError

ELASTIC_MODE = "mirror"


@dataclass(frozen=True)
class AugmentParams:
    """One drawn augmentation.

    Attributes:
        displacement: float64 (2, grid, grid) control-point displacements in pixels (axis 0 = (row,
            col) component), or None for no deformation.
        flip_rows: flip along axis 0 (up-down). flip_cols: flip along axis 1 (left-right).
        rot90: quarter turns (``np.rot90(k=rot90)``, counter-clockwise), 0..3.
        scale, shift, log_gamma: intensity change (1.0, 0.0, 0.0 = none).
        noise_std, noise_seed: additive Gaussian noise (std 0 = none) and the seed of its generator.
        zoom: scale factor about the output's centre (> 1 enlarges; 1.0 = none).
    """

    displacement: np.ndarray | None
    flip_rows: bool
    flip_cols: bool
    rot90: int
    scale: float = 1.0
    shift: float = 0.0
    log_gamma: float = 0.0
    noise_std: float = 0.0
    noise_seed: int = 0
    zoom: float = 1.0


class Augmenter:
    """Random elastic + flip + rot90 + intensity augmentation of an image and its targets.

    Args:
        augment_cfg: the config's ``augment`` section (e.g. ``variant_section(cfg, v, "augment")``);
            missing keys take the schema defaults (``seg.config.complete_section``, which also
            validates it: SegError naming a bad key); ``copies`` is ignored here.

    Call: ``image, targets = aug(image, targets, rng, crop=None)``

    * image: float32 (H, W), normally the per-slice normalised image (zero mean, unit std).
    * targets: dict name -> (H, W) array, e.g. {"semantic": uint8, "instances": int32, "weights":
      float32}. Integer/bool arrays are interpolated nearest, float arrays linearly.
    * rng: ``numpy.random.Generator``; the only source of randomness.
    * crop: optional (rows, cols) slices: the output window in input coordinates (see module doc).

    Returns float32 image and targets of the same dtypes, all of the (cropped) shape.
    """

    def __init__(self, augment_cfg: dict | None = None):
        self.cfg = complete_section("augment", augment_cfg)
        z = self.cfg.get("zoom")
        if z is not None and not float(z["range"][0]) <= float(z["range"][1]):
            raise SegError(f"augment.zoom.range: [smallest, largest] with smallest <= largest, got {z['range']}")
        self.margin = int(math.ceil(4 * self.cfg["elastic"]["sigma"])) if self.cfg["elastic"]["enabled"] else 0

    def draw(self, rng: np.random.Generator, shape: tuple[int, int]) -> AugmentParams:
        """Draw one augmentation for an output of ``shape`` (H, W)."""
        e, it = self.cfg["elastic"], self.cfg["intensity"]
        g = int(e["grid"])
        # Fixed draw order and count, whatever is enabled.
        do_elastic = rng.random() < e["prob"]
        disp = rng.normal(0.0, 1.0, size=(2, g, g)) * float(e["sigma"])
        flips = rng.random(2) < 0.5
        k = int(rng.integers(4))
        do_int = rng.random() < it["prob"]
        u = rng.uniform(-1.0, 1.0, size=3)
        noise_seed = int(rng.integers(2**63 - 1))
        zoom = 1.0
        z = self.cfg.get("zoom")
        if z is not None:  # drawn last: the draws above do not depend on it
            do_zoom = rng.random() < z.get("prob", 1.0)
            lo, hi = (math.log(float(v)) for v in z["range"])
            f = math.exp(lo + (hi - lo) * float(rng.random()))
            zoom = f if do_zoom else 1.0
        if not (self.cfg["elastic"]["enabled"] and do_elastic and e["sigma"] > 0):
            disp = None
        if not self.cfg["flip"]:
            flips = np.zeros(2, dtype=bool)
        if not self.cfg["rot90"]:
            k = 0
        elif shape[0] != shape[1]:
            k = 2 * (k % 2)  # keep the shape: only 0 or 180 degrees
        if do_int:
            return AugmentParams(disp, bool(flips[0]), bool(flips[1]), k, scale=1.0 + it["scale"] * u[0],
                                 shift=it["shift"] * u[1], log_gamma=it["gamma"] * u[2],
                                 noise_std=float(it["noise"]), noise_seed=noise_seed, zoom=zoom)
        return AugmentParams(disp, bool(flips[0]), bool(flips[1]), k, zoom=zoom)

    def apply(
        self,
        params: AugmentParams,
        image: np.ndarray,
        targets: dict[str, np.ndarray] | None = None,
        *,
        crop: tuple[slice, slice] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Apply a drawn augmentation (deterministic). See the class docstring for shapes."""
        targets = dict(targets or {})
        image = np.asarray(image)
        if image.ndim != 2:
            raise SegError(f"image: expected a 2D (H, W) array, got shape {image.shape}")
        for name, t in targets.items():
            if np.shape(t) != image.shape:
                raise SegError(f"targets[{name!r}]: shape {np.shape(t)} differs from image shape {image.shape}")
        crop = _check_crop(crop, image.shape)
        names = list(targets)
        arrays = [np.ascontiguousarray(image, dtype=np.float32)] + [np.ascontiguousarray(targets[n]) for n in names]
        arrays = elastic_deform(arrays, params.displacement, crop=crop, zoom=params.zoom)
        arrays = [_flip_rot(a, params) for a in arrays]
        img = _intensity(arrays[0], params)
        return img, dict(zip(names, arrays[1:]))

    def __call__(self, image, targets=None, rng=None, *, crop=None):
        if rng is None:
            raise SegError("Augmenter: rng (numpy.random.Generator) is required")
        shape = np.shape(image) if crop is None else tuple(s.stop - s.start for s in _check_crop(crop, np.shape(image)))
        return self.apply(self.draw(rng, shape), image, targets, crop=crop)


def interpolation_order(a: np.ndarray) -> int:
    """elasticdeform spline order per array: 0 (nearest) for integer/bool arrays, 1 (linear) for
    float arrays; the image (first array) gets 3 (cubic) in :func:`elastic_deform`."""
    return 1 if np.issubdtype(a.dtype, np.floating) else 0


def elastic_deform(arrays: list[np.ndarray], displacement: np.ndarray | None, *, crop=None,
                   zoom: float = 1.0) -> list[np.ndarray]:
    """Deform (H, W) arrays with one coarse displacement grid in one ``elasticdeform`` call.

    Args:
        arrays: [image, *targets], all (H, W); the first is interpolated cubic, the others by
            :func:`interpolation_order`. Dtypes are kept.
        displacement: (2, g, g) control-point displacements in pixels, or None (then only cropped,
            and zoomed if ``zoom`` != 1).
        crop: None or (rows, cols) slices of the output window.
        zoom: scale factor about the output window's centre (``deform_grid``'s ``zoom``; 1 = none).

    Returns:
        The deformed (and cropped) arrays, C-contiguous.
    """
    if displacement is None and zoom == 1.0:
        return [np.ascontiguousarray(a[crop] if crop else a) for a in arrays]
    import elasticdeform

    if displacement is None:
        displacement = np.zeros((2, 3, 3))

    orders = [3] + [interpolation_order(a) for a in arrays[1:]]
    if arrays[0].dtype.kind in "iub":
        orders[0] = 0
    out = elasticdeform.deform_grid(list(arrays), np.asarray(displacement, dtype=np.float64), order=orders,
                                    mode=ELASTIC_MODE, crop=list(crop) if crop else None,
                                    zoom=None if zoom == 1.0 else float(zoom))
    return [np.ascontiguousarray(o) for o in out]


def dense_displacement(displacement: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The per-pixel field (float64 (2, H, W), pixels) that ``elastic_deform`` uses for a grid.

    Output pixel x samples the input at x + u(x). Recovered exactly by deforming the coordinate
    ramps with linear interpolation (exact for a linear function) where x + u(x) lies inside the
    array; elsewhere the ramps are mirrored, so use only interior pixels for analysis.
    """
    import elasticdeform

    rows, cols = np.meshgrid(np.arange(shape[0], dtype=np.float64), np.arange(shape[1], dtype=np.float64),
                             indexing="ij")
    r, c = elasticdeform.deform_grid([rows, cols], np.asarray(displacement, np.float64), order=1, mode="nearest")
    return np.stack([r - rows, c - cols])


def _check_crop(crop, shape):
    if crop is None:
        return None
    if len(crop) != 2 or not all(isinstance(s, slice) and s.step in (None, 1) for s in crop):
        raise SegError(f"crop: expected two slices (rows, cols), got {crop!r}")
    out = []
    for s, n in zip(crop, shape):
        start, stop = s.start or 0, n if s.stop is None else s.stop
        if not 0 <= start < stop <= n:
            raise SegError(f"crop: window {start}:{stop} outside 0:{n}")
        out.append(slice(start, stop))
    return tuple(out)


def _flip_rot(a: np.ndarray, p: AugmentParams) -> np.ndarray:
    if p.flip_rows:
        a = a[::-1]
    if p.flip_cols:
        a = a[:, ::-1]
    if p.rot90:
        a = np.rot90(a, p.rot90)
    return np.ascontiguousarray(a)


def _intensity(img: np.ndarray, p: AugmentParams) -> np.ndarray:
    img = img.astype(np.float32, copy=False)
    if p.scale != 1.0 or p.shift != 0.0:
        img = img * np.float32(p.scale) + np.float32(p.shift)
    if p.log_gamma != 0.0:
        lo, hi = float(img.min()), float(img.max())
        if hi > lo:
            t = (img - lo) / (hi - lo)
            img = (np.power(t, np.float32(math.exp(p.log_gamma))) * (hi - lo) + lo).astype(np.float32)
    if p.noise_std > 0:
        noise = np.random.default_rng(p.noise_seed).standard_normal(img.shape, dtype=np.float32)
        img = img + noise * np.float32(p.noise_std)
    return img.astype(np.float32, copy=False)
