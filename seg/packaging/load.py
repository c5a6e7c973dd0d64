"""Loading a model: a package folder, a package zip, or a trained run folder packaged in memory.

Kept apart from :mod:`seg.package.format` (which knows only finished packages) because a run folder
is packaged by :mod:`seg.packaging.build`, which predicts the package's test image with
:mod:`seg.infer`.
"""

from __future__ import annotations

import os
from pathlib import Path

from seg.errors import SegError
from seg.packaging.build import build_package
from seg.package.format import PACKAGE_FILE, ModelPackage, read_package
from seg.settings import load_config


def load_package(path: str | os.PathLike, *, config: str | os.PathLike | None = None,
                 data_dir: str | os.PathLike | None = None, with_test: bool = False) -> ModelPackage:
    """Load a package folder, a package zip, or a run folder (``results/<dataset>/<variant>/``).

    A run folder is packaged in memory from ``config``, by default the workflow's
    ``<results>/config.resolved.yaml`` two levels up; ``data_dir`` and ``with_test`` (predict the
    test image, as exports need) as in :func:`seg.packaging.build.build_package`.

    Raises:
        SegError: missing path, neither a package nor a run folder, other format version, damage.
    """
    p = Path(path)
    if not p.exists():
        raise SegError(f"{p}: no such model package or run folder")
    if p.is_dir() and not (p / PACKAGE_FILE).is_file():
        if (p / "train_summary.json").is_file() and (p / "checkpoints" / "best.pt").is_file():
            cfg_path = Path(config) if config is not None else p.parent.parent / "config.resolved.yaml"
            if not cfg_path.is_file():
                raise SegError(f"{p}: a run folder needs its config (--config; {cfg_path} not found)")
            return build_package(load_config(cfg_path), p, data_dir=data_dir, with_test=with_test)
        raise SegError(f"{p}: neither a seg model package ({PACKAGE_FILE}) nor a run folder "
                       "(train_summary.json and checkpoints/best.pt)")
    return read_package(p)

