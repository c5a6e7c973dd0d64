"""seg.infer: tiled whole-slice inference, test-time augmentation, post-processing, ``seg predict``.

Modules: ``tiling`` (predict_tiled: MONAI sliding windows / overlap-tile), ``tta`` (dihedral TTA),
``postprocess`` (ISBI maps, CTC instances), ``predict`` (predict_slice, run_predict), ``cli``
(the ``seg predict`` command), ``segment`` and ``inputs`` (``seg segment``: a model package on new
images, stacks and CTC sequences; ``segment_cli``). Device, AMP and the batch predictor are
:mod:`seg.device`'s (shared with training).
"""

from __future__ import annotations


def predict_slice(model, image, infer_cfg=None, device="cpu"):
    """Softmax probabilities (classes, H, W) float32 of one slice; see :func:`seg.infer.predict.predict_slice`."""
    from seg.infer.predict import predict_slice as _predict_slice

    return _predict_slice(model, image, infer_cfg, device)


__all__ = ["predict_slice"]
