"""Shared fixtures: the real data in ../shared/data (beside the project root), read-only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data (ISBI 2012 stacks in isbi2012/, 6 GOWT1 frames in Fluo-N2DH-GOWT1/)."""
    if not (SHARED_DATA / "isbi2012" / "train-volume.tif").is_file():
        pytest.fail(f"real data missing: {SHARED_DATA} (CI must run with ../shared beside the project)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def isbi_stacks(shared_data: Path) -> dict[str, np.ndarray]:
    """The real ISBI 2012 stacks: train (30,512,512) uint8, labels (30,512,512) uint8 {0 membrane,
    255 interior}, test (30,512,512) uint8. Treat as read-only."""
    import tifffile

    d = shared_data / "isbi2012"
    out = {
        "train": tifffile.imread(d / "train-volume.tif"),
        "labels": tifffile.imread(d / "train-labels.tif"),
        "test": tifffile.imread(d / "test-volume.tif"),
    }
    for a in out.values():
        a.setflags(write=False)
    return out
