"""Images resampled onto the annotation grid (``align_images``): the real ISBI 2012 offset, its
estimate's sign and precision, CTC data without an offset, and a misregistered stack refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from seg.data import canonical
from seg.data.align import shift_image, slice_shift
from test_ingest import no_env_raw_root, write_config  # noqa: F401 (autouse fixture: SEG_RAW_ROOT unset)
from test_ingest import ingest as run_ingest


def ingest(tmp_path: Path, name: str, entry: dict, out: Path) -> int:
    return run_ingest(write_config(tmp_path, {name: entry}), name, out)


def membrane_contrast(images, semantics, move=(0.0, 0.0)) -> float:
    """Mean over slices of (mean image on class 0 - mean elsewhere), the images moved by ``move`` px
    first (a 3 px margin is cut); more negative = class 0 darker = labels better on the membranes."""
    out = []
    for image, semantic in zip(images, semantics):
        x = shift_image(image, move)[3:-3, 3:-3]
        g = (semantic == 0)[3:-3, 3:-3]
        out.append(x[g].mean() - x[~g].mean())
    return float(np.mean(out))


def test_isbi_labels_offset_measured_on_train_and_removed(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("SEG_RAW_ROOT", str(shared_data))
    plain, aligned = tmp_path / "plain", tmp_path / "aligned"
    assert ingest(tmp_path, "isbi2012", {"kind": "isbi2012"}, plain) == 0
    assert ingest(tmp_path, "isbi2012", {"kind": "isbi2012", "align_images": True}, aligned) == 0

    m0, m1 = canonical.load_meta(plain), canonical.load_meta(aligned)
    assert "alignment" not in m0 and all("image_shift" not in e for e in m0["slices"])
    al = m1["alignment"]
    # the membranes of the images lie ~0.56 px below and ~0.13 px right of the labelled ones
    dy, dx = al["image_shift"]
    assert -0.7 <= dy <= -0.4 and -0.3 <= dx <= 0.0, al
    assert al["estimated_on"] == [f"train_{i:02d}" for i in range(20)]  # never val or test
    assert len(al["per_slice"]) == 20
    assert all(e["image_shift"] == [dy, dx] for e in m1["slices"])  # all splits, unlabeled too

    # raw bytes untouched; the shift is applied when reading
    e0 = canonical.slices(m1, "test")[0]
    np.testing.assert_array_equal(canonical.load_raw_image(aligned, e0), canonical.load_raw_image(plain, e0))
    # On the held-out slices: before alignment the labels fit the image much better moved half a
    # pixel up than half a pixel down; after it, both moves fit about equally (the labels sit
    # between them). Equal moves compared, so the interpolation's smoothing cancels.
    test = canonical.slices(m1, "test")
    sem = [canonical.load_semantic(aligned, e) for e in test]
    before = [canonical.load_image(plain, e) for e in canonical.slices(m0, "test")]
    after = [canonical.load_image(aligned, e) for e in test]
    gap_before = membrane_contrast(before, sem, (0.5, 0)) - membrane_contrast(before, sem, (-0.5, 0))
    gap_after = membrane_contrast(after, sem, (0.5, 0)) - membrane_contrast(after, sem, (-0.5, 0))
    assert gap_before > 0.03 and abs(gap_after) < gap_before / 4, (gap_before, gap_after)
    assert all(a.dtype == np.float32 and abs(a.mean()) < 1e-4 and abs(a.std() - 1) < 1e-3 for a in after)


def test_slice_shift_sign_and_precision(isbi_stacks):
    """Moving the image content by a known sub-pixel vector moves the estimate by minus that vector."""
    img = isbi_stacks["train"][3].astype(np.float32)
    sem = (isbi_stacks["labels"][3] == 255).astype(np.uint8)
    base = slice_shift(img, sem)
    for move in ((0.75, -0.5), (-1.25, 0.25)):
        est = slice_shift(shift_image(img, move), sem)
        np.testing.assert_allclose(est, base - np.array(move), atol=1 / 8)
    # zero shift is the identity (as float32)
    np.testing.assert_array_equal(shift_image(isbi_stacks["train"][0], (0.0, 0.0)),
                                  isbi_stacks["train"][0].astype(np.float32))


def test_gowt1_has_no_offset(tmp_path, shared_data, monkeypatch):
    """The CTC path aligns too; the GOWT1 annotations sit on their nuclei (estimate ~0)."""
    monkeypatch.setenv("SEG_RAW_ROOT", str(shared_data))
    out = tmp_path / "gowt1"
    entry = {"kind": "ctc", "sequences": ["01"], "align_images": True}
    assert ingest(tmp_path, "Fluo-N2DH-GOWT1", entry, out) == 0
    al = canonical.load_meta(out)["alignment"]
    assert max(abs(v) for v in al["image_shift"]) <= 0.2, al
    assert al["estimated_on"] and all(i.startswith("01_") for i in al["estimated_on"])


def test_misregistered_labels_are_refused(tmp_path, isbi_stacks, capsys):
    """Labels rolled 6 px against their images: a clear error naming the dataset, no output folder."""
    raw = tmp_path / "raw"
    raw.mkdir()
    tifffile.imwrite(raw / "train-volume.tif", isbi_stacks["train"][:6])
    tifffile.imwrite(raw / "train-labels.tif", np.roll(isbi_stacks["labels"][:6], 6, axis=1))
    tifffile.imwrite(raw / "test-volume.tif", isbi_stacks["test"][:2])
    entry = {"kind": "isbi2012", "raw_dir": str(raw), "align_images": True,
             "split": {"by": "slices", "train": "0-3", "val": "4", "test": "5"}}
    out = tmp_path / "data" / "isbi2012"
    assert ingest(tmp_path, "isbi2012", entry, out) != 0
    err = capsys.readouterr().err
    assert "dataset isbi2012" in err and "misregistration" in err and "align_images: false" in err
    assert not out.exists() and list((tmp_path / "data").iterdir()) == []
