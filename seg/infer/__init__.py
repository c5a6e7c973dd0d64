"""seg.infer: tiled whole-slice inference, test-time augmentation, post-processing, ``seg predict``.

Modules: ``tiling`` (the one tiling implementation, in traceable torch: ``predict_batch``,
``tiled_probabilities``, ``predict_tiled``; ``seg predict``, training validation, ``seg segment``
and the exported graphs all run it), ``plan`` (where tiles go: MONAI's grid, aligned grids),
``padding`` (numpy's mirror modes as index arithmetic), ``blend`` (MONAI's importance map, summing
tiles), ``tta`` (dihedral TTA), ``network`` (the network prepared for inference, tile batches),
``postprocess`` (ISBI maps, CTC instances), ``predict`` (predict_slice, run_predict), ``calibrate``,
``cli`` (the ``seg predict`` command). Device, AMP and the batch predictor are :mod:`seg.device`'s
(shared with training). ``seg segment`` runs model packages and lives in :mod:`seg.export`, which
builds on this package (never the other way round).
"""

from __future__ import annotations


def predict_slice(model, image, infer_cfg=None, device="cpu", activation="softmax"):
    """Softmax probabilities (classes, H, W) float32 of one slice; see :func:`seg.infer.predict.predict_slice`."""
    from seg.infer.predict import predict_slice as _predict_slice

    return _predict_slice(model, image, infer_cfg, device, activation)


__all__ = ["predict_slice"]
