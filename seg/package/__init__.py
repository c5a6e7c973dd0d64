"""seg.package: the model package, a trained network with everything needed to run it on new images.

- :mod:`seg.package.format`  the package format: :class:`ModelPackage`, write, read (folder or zip)
- :mod:`seg.package.build`   a package from a trained run folder and its config (``seg package``)
- :mod:`seg.package.load`    load a package folder / zip, or a run folder packaged in memory
- :mod:`seg.package.readme`  the README.md written into every package and export

It sits below :mod:`seg.export` (exports, ``seg segment``) and beside :mod:`seg.infer`:
``format`` and ``readme`` never import ``seg.infer``; ``build`` does (the package's test image is
predicted with :func:`seg.infer.predictor.predict_slice`), and ``seg.infer`` never imports this package.
"""

from __future__ import annotations

from seg.package.format import ModelPackage, read_package, write_package
from seg.package.load import load_package

__all__ = ["ModelPackage", "load_package", "read_package", "write_package"]
