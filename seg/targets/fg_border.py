"""Target ``fg_border`` (the default; the U-Net paper's recipe): the dataset's own classes.

ISBI membrane / interior; CTC background / cell with a 0-line between touching cells, trained with
the border-weight maps (:mod:`seg.transforms.weights`). Instances come from the foreground
probability by the dataset's ``postprocess.method``: connected components or the distance-transform
watershed of seed depth ``h`` (:func:`seg.infer.postprocess.label_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from seg.infer.postprocess import foreground_maps, foreground_objects
from seg.targets.base import Target


@dataclass(frozen=True)
class FgBorder(Target):
    """The dataset's classes with the paper's border-weighted loss (module docstring)."""

    name: ClassVar[str] = "fg_border"
    description: ClassVar[str] = ("the dataset's classes with the U-Net paper's border-weighted loss; instances "
                                  "from the foreground probability by the dataset's post-processing method")

    def probability(self, out: np.ndarray, *, foreground: int) -> np.ndarray:
        """Class ``foreground`` of the softmax probabilities (classes, H, W), float32 (H, W)."""
        return foreground_maps(out, foreground=foreground, threshold=0.5)[0]

    def objects(self, x: np.ndarray, *, pp: dict, threshold: float, second: float) -> np.ndarray:
        """Components (``connected_components``) or the watershed of seed depth ``second`` px
        (``watershed``) of ``x >= threshold``, by ``pp["method"]``."""
        return foreground_objects(x, method=pp["method"], threshold=threshold, h=second)

    def second_grid(self, pp: dict) -> list[float]:
        """``search.h`` for the watershed (it has a seed depth to search), else the configured ``h``."""
        if pp["method"] == "watershed":
            return [float(v) for v in ((pp.get("search") or {}).get("h") or [pp["h"]])]
        return [float(pp["h"])]
