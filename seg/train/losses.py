"""Training losses: the U-Net paper's pixel-weighted cross-entropy, plain CE, optional soft Dice.

All losses take ``logits`` float (N, C, h, w), ``target`` int64 (N, H, W) class indices
(ISBI: 0 membrane, 1 interior; CTC: 0 background, 1 cell) and ``weights`` float32 (N, H, W)
per-pixel weights (the border-weight maps). If the logits are smaller than the targets (a
valid-padding U-Net's output window), targets and weights are center-cropped to the logits' size.
Losses are computed in float32 whatever the autocast dtype.

- ``wce``: ``sum_x w(x) * CE(x) / sum_x w(x)`` over the batch, i.e. the paper's energy
  ``E = sum w(x) log p_l(x)(x)`` normalised by the total weight (so the lr does not depend on w0).
- ``ce``: the mean per-pixel cross-entropy (weights ignored).
- ``*_dice``: adds ``dice_weight`` times MONAI's soft Dice loss (softmax, all classes).
- :func:`weighted_mse`: regression targets (variant ``target: distance``): float maps (N, C, H, W)
  instead of class indices, the border weights as per-pixel weights; ``train.loss`` does not apply.

Ignored pixels: a pixel whose weight is exactly 0 (sparse annotations: farther than the band from
every annotated object, see :func:`seg.transforms.weights.annotated_region`) is ignored by every loss:
``wce`` gives it no weight, ``ce`` averages over the other pixels only, and the soft Dice terms are
summed over the other pixels only. When the weights hold no zero (full annotations) every loss is
computed exactly as without a mask.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from seg.errors import SegError

LOSSES = ("wce", "ce", "wce_dice", "ce_dice")
LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def center_crop(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Center-crop the last two axes of ``t`` to ``size`` (h, w); no-op if already that size.

    Raises:
        SegError: ``t`` is smaller than ``size`` or the size difference is odd.
    """
    H, W = t.shape[-2:]
    h, w = size
    if (H, W) == (h, w):
        return t
    if H < h or W < w or (H - h) % 2 or (W - w) % 2:
        raise SegError(f"train.patch_size: targets {H}x{W} cannot be center-cropped to the model output {h}x{w}")
    top, left = (H - h) // 2, (W - w) // 2
    return t[..., top : top + h, left : left + w]


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Pixel-weighted cross-entropy ``sum(w * CE) / sum(w)`` (scalar, float32)."""
    size = tuple(logits.shape[-2:])
    target, weights = center_crop(target, size), center_crop(weights, size).float()
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    return (ce * weights).sum() / weights.sum().clamp_min(1e-12)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean per-pixel cross-entropy (scalar, float32); with ``mask`` (bool (N, H, W), True = counted)
    the mean over the counted pixels only (0 when none is counted)."""
    size = tuple(logits.shape[-2:])
    target = center_crop(target, size)
    if mask is None:
        return F.cross_entropy(logits.float(), target)
    mask = center_crop(mask, size)
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    return (ce * mask).sum() / mask.sum().clamp_min(1)


def soft_dice(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MONAI soft Dice loss over all classes (softmax of the logits vs one-hot targets), batch-pooled.

    With ``mask`` (bool (N, H, W), True = counted) the probabilities and the one-hot targets of the
    other pixels are zeroed before the Dice sums, so those pixels add nothing to any class's
    intersection or denominators.
    """
    from monai.losses import DiceLoss

    size = tuple(logits.shape[-2:])
    target = center_crop(target, size)
    if mask is None:
        fn = DiceLoss(include_background=True, to_onehot_y=True, softmax=True, batch=True)
        return fn(logits.float(), target.unsqueeze(1))
    m = center_crop(mask, size).unsqueeze(1).float()
    probs = torch.softmax(logits.float(), dim=1) * m
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float() * m
    fn = DiceLoss(include_background=True, to_onehot_y=False, softmax=False, batch=True)
    return fn(probs, onehot)


def ignore_mask(weights: torch.Tensor | None) -> torch.Tensor | None:
    """``weights > 0`` (bool) when some weight is exactly 0 (ignored pixels), else None."""
    if weights is None:
        return None
    mask = weights > 0
    return None if bool(mask.all()) else mask


def build_loss(cfg: dict) -> LossFn:
    """The loss named by the ``train.loss`` section (``name``, ``dice_weight``).

    Returns:
        ``fn(logits, target, weights) -> scalar``; ``weights`` may be None for the ce losses.
    """
    name = cfg.get("name", "wce")
    if name not in LOSSES:
        raise SegError(f"train.loss.name: {name!r} is not one of {list(LOSSES)}")
    dice_w = float(cfg.get("dice_weight", 1.0))

    def loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        mask = ignore_mask(weights)
        if name.startswith("wce"):
            if weights is None:
                raise SegError("train.loss.name: 'wce' needs border-weight maps (run `seg weights`)")
            value = weighted_cross_entropy(logits, target, weights)
        else:
            value = cross_entropy(logits, target, mask)
        if name.endswith("_dice"):
            value = value + dice_w * soft_dice(logits, target, mask)
        return value

    return loss


def weighted_mse(outputs, target, weights):
    """``sum(w * (sigmoid(outputs) - target)^2) / (channels * sum(w))`` (scalar, float32).

    Args:
        outputs: float (N, C, h, w) network outputs (logits of the sigmoid).
        target: float32 (N, C, H, W) maps in [0, 1], center-cropped to the outputs' size.
        weights: float32 (N, H, W) per-pixel weights (the border-weight maps: their zeros, sparse
            annotations' unannotated pixels, are ignored), or None for weight 1.
    """
    size = tuple(outputs.shape[-2:])
    target = center_crop(target, size).float()
    err = (torch.sigmoid(outputs.float()) - target) ** 2
    if weights is None:
        return err.mean()
    w = center_crop(weights, size).float().unsqueeze(1)
    return (err * w).sum() / (w.sum() * outputs.shape[1]).clamp_min(1e-12)


def needs_weights(cfg: dict, *, sparse: bool = False) -> bool:
    """Whether the configured loss reads the border-weight maps (always with sparse annotations:
    their zeros mark the ignored pixels)."""
    return sparse or cfg.get("name", "wce").startswith("wce")
