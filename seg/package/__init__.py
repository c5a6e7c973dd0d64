"""seg.package: the model package format, a trained network with everything needed to run it on new images.

- :mod:`seg.package.format`  the package format: :class:`ModelPackage`, write, read (folder or zip)
- :mod:`seg.package.readme`  the README.md written into every package and export

It sits below the run settings (a variant's ``init:`` and ``seg finetune`` start from a package);
building a package from a run and loading a run folder as one is :mod:`seg.packaging`, above
training. Neither module imports :mod:`seg.infer`'s predictors.
"""

from __future__ import annotations

from seg.package.format import ModelPackage, read_package, write_package

__all__ = ["ModelPackage", "read_package", "write_package"]
