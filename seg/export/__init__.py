"""seg.export: model packages (:mod:`seg.package`) as bioimage.io / TorchScript / ONNX, and on new images.

Modules: ``graph`` (the exported graph: raw image -> probabilities, preprocessing inside, tiling
and TTA from :mod:`seg.infer.tiling`), ``exporters`` (TorchScript and ONNX files, checked against
PyTorch), ``bioimageio`` (bioimage.io model packages, validated and tested), ``cli`` (``seg
package``, ``seg export``), ``segment`` and ``inputs`` (``seg segment``: a package on new images,
stacks and CTC sequences; ``segment_cli``).
The package format itself (write, load, build from a run) is :mod:`seg.package`, below this one.
This package builds on :mod:`seg.infer` and :mod:`seg.package`; neither imports it.
"""

from __future__ import annotations

from seg.packaging.load import load_package as _load


def load_package(path, **kwargs):
    """Load a model package folder / zip or a run folder; see :func:`seg.packaging.load.load_package`."""

    return _load(path, **kwargs)


__all__ = ["load_package"]
