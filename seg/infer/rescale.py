"""Object scale at inference and training: resizing an image so that its objects have the diameter
a network was trained at, and mapping the results back to the image's own pixel grid.

A model learns objects of one size: a package records the median equivalent diameter ``D`` of its
training objects (:mod:`seg.data.fingerprint`). Images whose objects measure ``D_new`` px are
resized by ``factor = D / D_new`` before the network (``factor`` > 1 enlarges), and the
probabilities are resized back by the inverse; label images go back by nearest neighbour, so
instance ids survive (cellpose's ``diameter`` does the same).

Conventions: ``factor`` is a plain float (new size / old size, both axes); the resized shape of an
(H, W) image is ``(max(1, round(H * factor)), max(1, round(W * factor)))``. Images are resized
with bilinear interpolation (``skimage.transform.resize``, order 1, values kept: ``preserve_range``),
with Gaussian anti-aliasing when shrinking; probabilities (C, H, W) bilinear, per channel; labels
(H, W) with order 0 and no anti-aliasing (every output pixel carries an input label).
"""

from __future__ import annotations

import numpy as np

from seg.errors import SegError

#: The range of factors seg accepts (a network asked to see objects 5x smaller or larger than it
#: learned is out of its depth, and the images grow 25x).
FACTOR_RANGE = (0.2, 5.0)
#: Factors this close to 1 are taken as 1 (no resizing: the interpolation would only blur).
IDENTITY_TOLERANCE = 0.02


def is_identity(factor: float) -> bool:
    """True when ``factor`` is within :data:`IDENTITY_TOLERANCE` of 1 (the image is used as it is)."""
    return abs(float(factor) - 1.0) <= IDENTITY_TOLERANCE


def scale_factor(network_diameter: float, diameter: float, *, where: str = "diameter") -> float:
    """The resize factor ``network_diameter / diameter`` that brings objects of ``diameter`` px to
    the ``network_diameter`` px the network learned (both in px, equivalent diameters).

    Raises:
        SegError: a non-positive diameter, or a factor outside :data:`FACTOR_RANGE` (naming both
            diameters, ``where`` they came from and the range).
    """
    d_net, d = float(network_diameter), float(diameter)
    if not (np.isfinite(d) and d > 0):
        raise SegError(f"{where}: the object diameter must be a positive number of pixels, got {diameter!r}")
    if not (np.isfinite(d_net) and d_net > 0):
        raise SegError(f"{where}: the model's object diameter is {network_diameter!r}; cannot resize to it")
    factor = d_net / d
    lo, hi = FACTOR_RANGE
    if not lo <= factor <= hi:
        raise SegError(f"{where}: objects of {d:.3g} px for a model trained on objects of {d_net:.3g} px need a "
                       f"resize factor of {factor:.3g}, outside the accepted {lo:g}-{hi:g}")
    return factor


def scaled_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """(H', W') of an (H, W) image resized by ``factor`` (at least 1 px a side)."""
    return tuple(max(1, int(round(int(s) * float(factor)))) for s in shape[-2:])


def resize_image(image: np.ndarray, factor: float) -> np.ndarray:
    """An image (H, W) or (C, H, W) resized by ``factor`` (float32, bilinear, anti-aliased when
    shrinking); the image itself when ``factor`` is 1 (:func:`is_identity`)."""
    from skimage.transform import resize

    image = np.asarray(image)
    if is_identity(factor):
        return image
    shape = image.shape[:-2] + scaled_shape(image.shape, factor)
    return resize(image.astype(np.float32, copy=False), shape, order=1, mode="reflect", preserve_range=True,
                  anti_aliasing=factor < 1, anti_aliasing_sigma=None).astype(np.float32)


def resize_to(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Float maps (H', W') or (C, H', W') resized bilinearly to ``shape`` (H, W) per channel, float32
    (probabilities back to the input's grid)."""
    from skimage.transform import resize

    maps = np.asarray(maps)
    out_shape = maps.shape[:-2] + tuple(int(s) for s in shape)
    if maps.shape == out_shape:
        return maps.astype(np.float32, copy=False)
    return resize(maps.astype(np.float32, copy=False), out_shape, order=1, mode="edge", preserve_range=True,
                  anti_aliasing=False).astype(np.float32)


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A label image (H', W') resized to ``shape`` (H, W) by nearest neighbour, its dtype kept (every
    output pixel carries one of the input's labels: instance ids survive)."""
    labels = np.asarray(labels)
    if labels.shape == tuple(shape):
        return labels
    rows = np.minimum((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0], labels.shape[0] - 1).astype(np.intp)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1], labels.shape[1] - 1).astype(np.intp)
    return labels[np.ix_(rows, cols)]
