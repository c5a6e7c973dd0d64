"""seg.export: trained models as self-contained packages and as bioimage.io / TorchScript / ONNX.

Modules: ``package`` (the model package format: write, load), ``build`` (a package from a trained
run; ``seg package``),
``graph`` (the exported graph: raw image -> probabilities, preprocessing and size contract inside),
``exporters`` (TorchScript and ONNX files, checked against PyTorch), ``bioimageio`` (bioimage.io
model packages, validated and tested), ``readme`` (the generated documentation), ``cli``
(``seg package``, ``seg export``). ``seg segment`` (in :mod:`seg.infer.segment`) runs packages.
"""

from __future__ import annotations


def load_package(path, **kwargs):
    """Load a model package folder / zip or a run folder; see :func:`seg.export.package.load_package`."""
    from seg.export.package import load_package as _load

    return _load(path, **kwargs)


__all__ = ["load_package"]
