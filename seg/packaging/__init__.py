"""seg.packaging: model packages made from trained runs, and loading what ``--model`` may name.

- :mod:`seg.packaging.build`  a package from a trained run folder and its config (``seg package``),
  and the val winner among a dataset's runs (``--best-of``)
- :mod:`seg.packaging.load`   load a package folder / zip, or a run folder packaged in memory

The format itself (:mod:`seg.package`) sits below the run settings, so that training can start
from a package (``init:``) and ``seg finetune`` can read one; this package sits above training and
evaluation (a run folder is packaged with its settings and :mod:`seg.infer`).
"""

from __future__ import annotations

from seg.packaging.build import best_run, build_package
from seg.packaging.load import load_package

__all__ = ["best_run", "build_package", "load_package"]
