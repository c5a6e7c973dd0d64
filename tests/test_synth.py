"""The synthetic datasets of ``seg synth``: seeded, in the raw formats, with the properties tests need."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from seg.cli import main
from seg.data.ctc import ctc_semantic
from seg.data.synth import write_synth
from seg.errors import SegError


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind", ["ctc", "isbi"])
def test_same_seed_same_bytes(tmp_path, kind):
    a, b, c = (tmp_path / n for n in "abc")
    for out, seed in ((a, 7), (b, 7), (c, 8)):
        assert main(["synth", "--out", str(out), "--kind", kind, "--seed", str(seed), "--size", "64"]) == 0
    assert digest(a) == digest(b)
    da, dc = digest(a), digest(c)
    assert da.keys() == dc.keys() and all(da[k] != dc[k] for k in da if k.endswith(".tif"))


def test_ctc_layout_and_content(tmp_path):
    out = write_synth(tmp_path / "ctc", kind="ctc", seed=0)
    for seq in ("01", "02"):
        images = sorted((out / seq).glob("t*.tif"))
        masks = sorted((out / f"{seq}_GT" / "SEG").glob("man_seg*.tif"))
        assert [p.name for p in images] == [f"t{t:03d}.tif" for t in range(12)]
        assert [p.name for p in masks] == [f"man_seg{t:03d}.tif" for t in (0, 3, 6, 9)]
        for m in masks:
            inst = tifffile.imread(m)
            img = tifffile.imread(out / seq / m.name.replace("man_seg", "t"))
            assert inst.dtype == np.uint16 and img.dtype == np.uint8 and inst.shape == img.shape == (256, 256)
            ids = np.unique(inst)[1:]
            assert len(ids) >= 8
            # touching: some pairs of different cells share a border
            assert (ctc_semantic(inst) < (inst > 0)).sum() > 100
            # irregular: cells are not discs (area / convex-ish bbox fill varies)
            fills = [(inst == i).sum() / np.prod(np.ptp(np.argwhere(inst == i), axis=0) + 1) for i in ids]
            assert np.std(fills) > 0.01
            # DIC-like relief: strong shear-direction gradients inside cells, weak outside; noise outside
            g = np.abs(ndi.sobel(img.astype(float), 0) + ndi.sobel(img.astype(float), 1))
            cells = ndi.binary_erosion(inst > 0, iterations=2)
            bg = ndi.binary_erosion(inst == 0, iterations=6)
            assert g[cells].mean() > 1.3 * g[bg].mean()
            assert img[bg].std() > 2.0


def test_isbi_stacks(tmp_path):
    out = write_synth(tmp_path / "isbi", kind="isbi", seed=0, size=128, slices=6)
    train, labels, test = (tifffile.imread(out / f) for f in ("train-volume.tif", "train-labels.tif", "test-volume.tif"))
    assert train.shape == labels.shape == test.shape == (6, 128, 128)
    assert train.dtype == labels.dtype == np.uint8
    assert set(np.unique(labels)) == {0, 255}
    membrane = labels == 0
    assert 0.1 < membrane.mean() < 0.4
    # membranes about 4 px thick: membrane area / centre-line length (junctions add a little)
    from skimage.morphology import skeletonize

    thickness = [membrane[z].sum() / skeletonize(membrane[z]).sum() for z in range(len(membrane))]
    assert all(3.0 <= t <= 5.5 for t in thickness), thickness
    assert train[membrane].mean() + 50 < train[~membrane].mean()  # dark membranes
    assert not np.array_equal(train, test)


def test_refuses_to_replace_foreign_folder(tmp_path):
    d = tmp_path / "precious"
    d.mkdir()
    (d / "keep.txt").write_text("mine")
    with pytest.raises(SegError, match="not an earlier seg synth output"):
        write_synth(d, kind="ctc", seed=0, size=64)
    assert (d / "keep.txt").read_text() == "mine"
    write_synth(tmp_path / "s", kind="ctc", seed=0, size=64, frames=2)
    write_synth(tmp_path / "s", kind="ctc", seed=1, size=64, frames=2)  # an earlier synth output is replaced
