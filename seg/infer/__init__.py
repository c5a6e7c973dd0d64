"""seg.infer: the inference engine: a network over a whole slice, tile by tile, and the algorithms that
turn its maps into objects.

Modules: ``predictor`` (:func:`~seg.infer.predictor.predict_slice`: one slice through the network,
tile geometry from the model's size contract, inference precision), ``tiling`` (the one tiling
implementation, in traceable torch: ``predict_batch``, ``tiled_probabilities``, ``predict_tiled``;
``seg predict``, training validation, ``seg segment`` and the exported graphs all run it),
``tiles`` (where tiles go: MONAI's grid, aligned grids), ``padding`` (numpy's mirror modes as index
arithmetic), ``blend`` (MONAI's importance map, summing tiles), ``tta`` (dihedral TTA), ``network``
(the network prepared for inference, tile batches), ``postprocess`` (the algorithms from maps to
objects: thresholds, connected components, seeded watersheds; which one a model's output needs is
its target's, :mod:`seg.targets`).

This package knows no config file, dataset kind or target: the stages that apply a trained run
(``seg predict``, ``seg calibrate``) are :mod:`seg.evaluate`'s, ``seg segment`` is :mod:`seg.export`'s.
"""
