"""seg.finetune: a model package trained further on a user's folder of images and masks (``seg finetune``).

- :mod:`seg.finetune.run`  :func:`finetune`: ingest the folder, train from the package at its scale,
  calibrate on held-out pairs, score before and after, write the new package with its lineage

It sits above :mod:`seg.packaging` and :mod:`seg.export` (it packages the run and scores packages
with ``seg segment``'s functions) and below the commands and the napari plugin that call it.
"""

from __future__ import annotations

from seg.finetune.run import finetune

__all__ = ["finetune"]
