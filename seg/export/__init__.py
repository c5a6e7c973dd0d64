"""seg.export: trained models as self-contained packages and as bioimage.io / TorchScript / ONNX.

Modules: ``package`` (the model package format: write, load), ``build`` (a package from a trained
run; ``seg package``),
``graph`` (the exported graph: raw image -> probabilities, preprocessing inside, tiling and TTA
from :mod:`seg.infer.tiling`), ``exporters`` (TorchScript and ONNX files, checked against
PyTorch), ``bioimageio`` (bioimage.io model packages, validated and tested), ``readme`` (the
generated documentation), ``cli`` (``seg package``, ``seg export``), ``segment`` and ``inputs``
(``seg segment``: a package on new images, stacks and CTC sequences; ``segment_cli``).
This package builds on :mod:`seg.infer`; ``seg.infer`` never imports it.
"""

from __future__ import annotations


def load_package(path, **kwargs):
    """Load a model package folder / zip or a run folder; see :func:`seg.export.package.load_package`."""
    from seg.export.package import load_package as _load

    return _load(path, **kwargs)


__all__ = ["load_package"]
