"""A run that starts from a model package (a variant's ``init: <package>``; ``seg finetune``).

The package fixes what its network is: the model and its params, the target (with the settings it
was trained with: three_class's boundary width is in the network's pixels) and the object scale it
learned. The run's data are resized to that scale: a training image whose objects measure ``D`` px
(the median equivalent diameter of the dataset's training objects, :mod:`seg.data.fingerprint`) is
resized by ``factor = D_network / D`` before training and before every prediction, and the
probabilities go back to the image's own pixels (:mod:`seg.infer.rescale`); the post-processing
stays in the dataset's pixels, planned from its own fingerprint. Everything else (augmentation,
optimiser, loss, budget) is the variant's, as for any row.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from seg.errors import SegError
from seg.infer.rescale import is_identity, scale_factor
from seg.package.format import read_package_meta, scale_of
from seg.targets import target_from_record


@dataclass(frozen=True)
class StartPackage:
    """The package a run starts from and the scale its data take.

    Attributes:
        path: the package folder or zip.
        meta: its checked ``package.json``.
        factor: resize factor of the run's images (1: no resizing).
        network_diameter: the object diameter in px the package's network learned (None: the
            package records none; then ``factor`` is 1).
        data_diameter: the run's training objects' median equivalent diameter in px (None: no
            annotated object).
        how: in words, how the factor was found (for summaries and the report).
    """

    path: Path
    meta: dict
    factor: float
    network_diameter: float | None
    data_diameter: float | None
    how: str

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def weights_sha256(self) -> str:
        """SHA-256 of the package's weights (its identity: a run starting from other weights is another run)."""
        return str(self.meta["files"]["weights.pt"])

    @property
    def target(self):
        """The package's target with the settings it was trained with."""
        return target_from_record(self.meta.get("target"))

    def record(self) -> dict:
        """What summaries, packages and the report say of the start: the package, its weights' hash and the scale."""
        return {"package": str(self.path), "name": self.name, "weights_sha256": self.weights_sha256,
                "factor": round(self.factor, 6), "network_diameter": self.network_diameter,
                "data_diameter": self.data_diameter, "how": self.how}


def start_package(path: str | os.PathLike, data_diameter: float | None, *, where: str,
                  rescale: bool = True) -> StartPackage:
    """The :class:`StartPackage` of ``path`` for data whose objects measure ``data_diameter`` px.

    ``rescale`` False keeps the data as they are (factor 1, said in ``how``).

    Raises:
        SegError: the package is missing, damaged or of another format version; the factor is
            outside :data:`seg.infer.rescale.FACTOR_RANGE` (``where`` names the setting).
    """
    p = Path(path)
    try:
        meta = read_package_meta(p)
    except SegError as e:
        raise SegError(f"{where}: {e}") from None
    scale = scale_of(meta)
    net = float(scale["network_diameter"]) if scale else None
    if not rescale:
        return StartPackage(p, meta, 1.0, net, data_diameter, "not resized (asked)")
    if net is None:
        return StartPackage(p, meta, 1.0, None, data_diameter,
                            "not resized: the package records no object diameter (packaged before seg recorded it)")
    if data_diameter is None:
        return StartPackage(p, meta, 1.0, net, None, "not resized: the data have no annotated object to measure")
    factor = scale_factor(net, data_diameter, where=where)
    if is_identity(factor):
        return StartPackage(p, meta, 1.0, net, data_diameter,
                            f"not resized: objects of {data_diameter:.1f} px, the package's {net:.1f} px")
    return StartPackage(p, meta, factor, net, data_diameter,
                        f"resized by {factor:.3f}: the data's objects measure {data_diameter:.1f} px (median "
                        f"equivalent diameter), the package's network learned {net:.1f} px")


def check_fits(start: StartPackage, model: str, params: dict, target_name: str | None, *, where: str) -> None:
    """SegError unless the run's ``model``, ``params`` and target (None: not set) are the package's."""
    m = start.meta["model"]
    if model != m["name"] or dict(params or {}) != dict(m.get("params") or {}):
        raise SegError(f"{where}: the package {start.path} holds a {m['name']} with params {m.get('params') or {}}, "
                       f"the variant asks for {model} with params {params or {}} (set them to the package's)")
    if target_name is not None and target_name != start.target.name:
        raise SegError(f"{where}: the package {start.path} was trained for target {start.target.name!r}, "
                       f"the variant asks for {target_name!r}")
