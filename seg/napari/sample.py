"""Sample data (npe2 ``sample_data``): ``seg synth``'s synthetic cells, so the plugin opens something
without data.

:func:`seg.data.synth.write_synth` (the ``seg synth`` generator: CTC layout, DIC-like relief
shading, touching cells) writes into a temporary folder, which is read back with the folder reader
:func:`seg.data.folder.load_image` and deleted. Seeded: same seed, same pixels.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from seg.data.folder import load_image
from seg.data.synth import write_synth
from seg.io import read_tiff

SIZE = 192


def synthetic_sequence(*, frames: int = 1, seed: int = 0, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (T, H, W), truth uint16 (T, H, W) instances) of sequence ``01`` of ``seg synth
    --kind ctc`` with every frame annotated."""
    with tempfile.TemporaryDirectory(prefix="seg-sample-") as tmp:
        out = write_synth(Path(tmp) / "synth", kind="ctc", seed=seed, size=size, frames=frames, every=1)
        images = np.stack([load_image(out / "01" / f"t{t:03d}.tif") for t in range(frames)])
        truth = np.stack([read_tiff(out / "01_GT" / "SEG" / f"man_seg{t:03d}.tif", ndim=2) for t in range(frames)])
    return images, truth


def synthetic_frame() -> list:
    """npe2 sample: one synthetic frame (Image, uint8 (H, W)) and its true cells (Labels, hidden)."""
    images, truth = synthetic_sequence(frames=1)
    return [(images[0], {"name": "synthetic cells"}, "image"),
            (truth[0], {"name": "synthetic cells truth", "visible": False}, "labels")]


def synthetic_timelapse() -> list:
    """npe2 sample: a synthetic time-lapse (Image, uint8 (T, H, W), 8 frames) and its true cells."""
    images, truth = synthetic_sequence(frames=8)
    return [(images, {"name": "synthetic time-lapse"}, "image"),
            (truth, {"name": "synthetic time-lapse truth", "visible": False}, "labels")]
