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


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel cross-entropy (scalar, float32)."""
    target = center_crop(target, tuple(logits.shape[-2:]))
    return F.cross_entropy(logits.float(), target)


def soft_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MONAI soft Dice loss over all classes (softmax of the logits vs one-hot targets), batch-pooled."""
    from monai.losses import DiceLoss

    target = center_crop(target, tuple(logits.shape[-2:]))
    fn = DiceLoss(include_background=True, to_onehot_y=True, softmax=True, batch=True)
    return fn(logits.float(), target.unsqueeze(1))


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
        if name.startswith("wce"):
            if weights is None:
                raise SegError("train.loss.name: 'wce' needs border-weight maps (run `seg weights`)")
            value = weighted_cross_entropy(logits, target, weights)
        else:
            value = cross_entropy(logits, target)
        if name.endswith("_dice"):
            value = value + dice_w * soft_dice(logits, target)
        return value

    return loss


def needs_weights(cfg: dict) -> bool:
    """Whether the configured loss reads the border-weight maps."""
    return cfg.get("name", "wce").startswith("wce")
