"""Reading a ``seg calibrate`` file (``results/<dataset>/<variant>/calibration.json``): the
post-processing settings chosen on the val split, which :meth:`seg.settings.RunSettings.postprocess`
merges over the configured ones (the one place they are merged). :mod:`seg.evaluate.calibrate`
writes the file."""

from __future__ import annotations

import os
from pathlib import Path

from seg.errors import SegError
from seg.io import read_json


def read_calibration(path: str | os.PathLike) -> dict:
    """The settings of a ``seg calibrate`` file: ``{"threshold"}`` plus ``"h"``, ``"min_size"`` and
    (three_class) ``"seed_threshold"`` when it has them (CTC data). SegError naming the file if
    absent or invalid."""
    out = {"threshold": read_threshold(path)}
    doc = read_json(path)
    if "h" in doc:
        if not isinstance(doc["h"], (int, float)) or not doc["h"] > 0:
            raise SegError(f"{path}: 'h' must be a number > 0, got {doc['h']!r}")
        out["h"] = float(doc["h"])
    if "min_size" in doc:
        if not isinstance(doc["min_size"], int) or doc["min_size"] < 0:
            raise SegError(f"{path}: 'min_size' must be an integer >= 0, got {doc['min_size']!r}")
        out["min_size"] = int(doc["min_size"])
    if "seed_threshold" in doc:
        if not isinstance(doc["seed_threshold"], (int, float)) or not 0 <= doc["seed_threshold"] <= 1:
            raise SegError(f"{path}: 'seed_threshold' must be a number in [0, 1], got {doc['seed_threshold']!r}")
        out["seed_threshold"] = float(doc["seed_threshold"])
    return out


def read_threshold(path: str | os.PathLike) -> float:
    """The threshold of a ``seg calibrate`` file (SegError naming the file if absent or invalid)."""
    p = Path(path)
    if not p.is_file():
        raise SegError(f"{p}: threshold file not found (run seg calibrate)")
    doc = read_json(p)
    t = doc.get("threshold") if isinstance(doc, dict) else None
    if not isinstance(t, (int, float)) or not 0 <= t <= 1:
        raise SegError(f"{p}: 'threshold' must be a number in [0, 1], got {t!r}")
    return float(t)
