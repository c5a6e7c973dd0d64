"""seg: a reproducible biomedical image segmentation pipeline.

The package is a library of small modules, one per stage of the workflow:

- ``seg.kinds``    the dataset kinds (ISBI 2012, Cell Tracking Challenge): one registry, one module each
- ``seg.data``     ingest of ISBI 2012 and Cell Tracking Challenge data into the canonical form
- ``seg.targets``  U-Net border-weight maps and elastic-deformation augmentation
- ``seg.models``   model registry (classic U-Net, FCN-8s/16s/32s, smp encoder U-Nets), pretraining, zoo
- ``seg.train``    training loop (weighted loss, resume, DDP)
- ``seg.infer``    tiled inference with overlap and post-processing; ``seg segment`` on new images
- ``seg.package``  the self-contained model package format (write, read)
- ``seg.packaging`` a package from a trained run; loading a package or a run folder
- ``seg.export``   bioimage.io, TorchScript and ONNX exports; ``seg segment`` on new images (``--diameter``)
- ``seg.finetune`` ``seg finetune``: a package trained further on a folder of images and masks
- ``seg.metrics``  IoU, Dice, pixel error, ISBI V_rand/V_info, CTC SEG
- ``seg.report``   leaderboard and HTML report

Every stage is also a ``seg <command>`` (see ``seg --help``), and every Snakemake rule calls one.
"""

from seg.version import __version__


def segment(image, model, **kwargs):
    """Segment an image (H, W) or stack (Z, H, W) with a model package (path or loaded package):
    returns (class-1 probabilities float32, labels); see :func:`seg.export.segment.segment`."""
    from seg.export.segment import segment as _segment

    return _segment(image, model, **kwargs)


__all__ = ["segment", "__version__"]
