"""The napari plugin (seg/napari/): its plain functions without napari, then the widgets, reader and
sample data in a real viewer (napari's ``make_napari_viewer``).

The viewer tests need the ``napari`` extra (``pip install -e .[napari]``) and an X display with
OpenGL (``xvfb-run -a pytest tests/test_napari.py``; ``make test`` wraps itself in xvfb-run when no
display is set): without them they are skipped, the rest still runs. The jobs run synchronously
(``seg.napari.widgets.SYNC``) except in the test of the thread worker and its Cancel button.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from seg.data.folder import check_folder, read_pair
from seg.errors import SegError
from seg.napari import pairs, reader, run, sample
from seg.napari.pairs import UNANNOTATED


@pytest.fixture(scope="session")
def tiny_package(ctc_packaged_run) -> Path:
    """The suite's tiny CTC package (a same-padding U-Net on 64 px synthetic frames, watershed)."""
    return ctc_packaged_run["package"]


@pytest.fixture(scope="module")
def frames() -> tuple[np.ndarray, np.ndarray]:
    """Three synthetic 96 px frames (uint8 (3, H, W)) and their cells (uint16)."""
    return sample.synthetic_sequence(frames=3, size=96)


def _cells() -> np.ndarray:
    """Produced labels: cells 1, 2, 3, 5 in a 32 x 32 frame."""
    p = np.zeros((32, 32), np.uint16)
    p[2:8, 2:8], p[2:8, 20:28], p[20:28, 2:8], p[20:28, 20:28] = 1, 2, 3, 5
    return p


# ----------------------------------------------------------------------------- pairs (no napari)
def test_touched_cells_are_those_painted_extended_or_cut():
    produced = _cells()
    corrected = produced.copy()
    corrected[8:10, 2:8] = 1  # cell 1 extended
    corrected[2:4, 20:28] = 0  # part of cell 2 erased
    corrected[12:16, 12:16] = 4  # a new cell
    corrected[corrected == 5] = 0  # cell 5 deleted: no longer a cell
    assert pairs.touched_labels(corrected, produced) == [1, 2, 4]
    assert pairs.touched_labels(produced, produced) == []
    with pytest.raises(SegError, match="differ in shape"):
        pairs.touched_labels(corrected, produced[1:])


def test_sparse_mask_keeps_touched_cells_and_erasures_only():
    produced = _cells()
    corrected = produced.copy()
    corrected[8:10, 2:8] = 1
    corrected[corrected == 5] = 0
    mask, ids = pairs.sparse_mask(corrected, produced)
    assert ids == [1] and mask.dtype == np.uint16
    assert (mask[corrected == 1] == 1).all()
    assert (mask[produced == 5] == 0).all()  # the deleted cell: erased pixels stay background
    assert (mask[(corrected != 1) & (produced != 5)] == UNANNOTATED).all()  # cells 2, 3 and background
    with pytest.raises(SegError, match="no cell differs"):
        pairs.sparse_mask(produced, produced)
    with pytest.raises(SegError, match="deleting a cell teaches only in a dense pair"):
        pairs.sparse_mask(np.where(produced == 5, 0, produced), produced)


def test_pairs_are_numbered_never_overwritten_and_read_as_a_sparse_folder(tmp_path):
    folder = tmp_path / "teach"
    produced = _cells()
    image = np.random.default_rng(0).integers(0, 255, produced.shape, dtype=np.uint8)
    folder.mkdir()
    (folder / "cells_001.png").write_bytes(b"not ours")  # a name taken by another file is skipped
    a = pairs.save_pair(folder, image, produced, mode="dense", prefix="cells")
    b = pairs.save_pair(folder, image, produced, mode="dense", prefix="cells")
    corrected = produced.copy()
    corrected[12:16, 12:16] = 7
    c = pairs.save_pair(folder, image.astype(np.int32), corrected, mode="sparse", produced=produced,
                        prefix="cells", source={"frame": 2})
    assert [a["name"], b["name"], c["name"]] == ["cells_000", "cells_002", "cells_003"]
    assert (folder / "cells_001.png").read_bytes() == b"not ours"
    (folder / "cells_001.png").unlink()  # (an image without a mask: the folder reader would refuse it)
    assert pairs.list_pairs(folder) == ["cells_000", "cells_002", "cells_003"]
    assert c["touched"] == [7] and c["objects"] == 1 and a["objects"] == 4
    np.testing.assert_array_equal(tifffile.imread(a["mask"]), produced)
    assert tifffile.imread(c["image"]).dtype == np.uint16  # int32 grey values that fit
    # the folder is sparse from its first sparse pair on, and seg's folder reader takes it as it is
    doc = json.loads((folder / pairs.SIDECAR).read_text())
    assert doc["annotations"] == "sparse" and doc["unannotated_value"] == UNANNOTATED
    assert doc["pairs"]["cells_003"]["source"] == {"frame": 2}
    assert pairs.folder_options(folder) == {"sparse": True, "unannotated_value": UNANNOTATED}
    entry = pairs.folder_entry(folder)
    layout, found, _, o = check_folder(folder, entry)
    assert layout == "cellpose" and [p.name for p in found] == ["cells_000", "cells_002", "cells_003"]
    _, mask = read_pair(found[2], o)
    np.testing.assert_array_equal(mask, np.where(corrected == 7, 7, 0))  # 65535 read as unannotated
    _, mask = read_pair(found[0], o)
    np.testing.assert_array_equal(mask, produced)


def test_save_pair_refuses_what_it_cannot_save_right(tmp_path):
    produced = _cells()
    image = np.zeros(produced.shape, np.uint8)
    with pytest.raises(SegError, match="instance labels"):
        pairs.save_pair(tmp_path / "a", image, (produced > 0).astype(np.uint8), mode="sparse",
                        produced=np.zeros_like(produced), labels="semantic")
    with pytest.raises(SegError, match="segment the image first"):
        pairs.save_pair(tmp_path / "a", image, produced, mode="sparse")
    with pytest.raises(SegError, match="no cell differs"):
        pairs.save_pair(tmp_path / "a", image, produced, mode="sparse", produced=produced)
    with pytest.raises(SegError, match="differ in shape"):
        pairs.save_pair(tmp_path / "a", image[1:], produced)
    with pytest.raises(SegError, match="class map holds 0"):
        pairs.save_pair(tmp_path / "a", image, produced, labels="semantic")
    pairs.save_pair(tmp_path / "a", image, produced)
    with pytest.raises(SegError, match="holds instance masks"):
        pairs.save_pair(tmp_path / "a", image, (produced > 0).astype(np.uint8), labels="semantic")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["dataset.json", "frame_000.tif",
                                                                 "frame_000_masks.tif"]
    (tmp_path / "b" / "images").mkdir(parents=True)
    (tmp_path / "b" / "masks").mkdir()
    with pytest.raises(SegError, match="images-masks layout"):
        pairs.save_pair(tmp_path / "b", image, produced)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "dataset.json").write_text('{"name": "nnU-Net"}')
    with pytest.raises(SegError, match="not written by the seg napari plugin"):
        pairs.save_pair(tmp_path / "c", image, produced)
    big = produced.astype(np.int32) * 20000  # ids beyond uint16 are renumbered
    saved = pairs.save_pair(tmp_path / "a", image, big)
    assert set(np.unique(tifffile.imread(saved["mask"]))) == {0, 1, 2, 3, 4}


# ----------------------------------------------------------------------------- jobs (no napari)
def test_parse_diameter():
    assert run.parse_diameter("") is None and run.parse_diameter("  ") is None
    assert run.parse_diameter("Auto") == "auto" and run.parse_diameter("17.5") == 17.5
    for bad in ("-3", "0", "big", "nan"):
        with pytest.raises(SegError, match="diameter"):
            run.parse_diameter(bad)


def test_segment_job_yields_progress_and_resolves_the_scale_once(tiny_package, frames, monkeypatch):
    calls = []
    real = run.resolve_scale

    def spy(pkg, diameter, image, **kw):
        calls.append(diameter)
        return real(pkg, diameter, image, **kw)

    monkeypatch.setattr(run, "resolve_scale", spy)
    gen = run.segment_job(frames[0], str(tiny_package / "package.json"))
    steps = []
    try:
        while True:
            steps.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    assert [s[:2] for s in steps] == [(0, 3), (0, 3), (1, 3), (2, 3), (3, 3)]
    assert calls == [None]  # one scale for the whole stack: the package's own
    assert result.labels.shape == result.probability.shape == frames[0].shape
    assert result.labels.dtype == np.uint16 and result.probability.dtype == np.float32
    assert result.labels_kind == "instance" and result.package_path == str(tiny_package)
    assert result.scale["factor"] == 1 and result.scale["diameter"] is None
    one = list(run.segment_job(frames[0][0], result.package, diameter=20.0))
    assert calls[-1] == 20.0 and len(one) == 2


def test_finetune_job_starts_from_the_base_on_every_pair_with_the_folders_options(tmp_path, tiny_package,
                                                                                 frames, monkeypatch):
    images, truth = frames
    folder = tmp_path / "teach"
    with pytest.raises(SegError, match="no teaching pairs"):
        list(run.finetune_job(tiny_package, folder))
    pairs.save_pair(folder, images[0], truth[0])
    corrected = truth[1].copy()
    corrected[40:44, 40:44] = 99  # a new cell
    pairs.save_pair(folder, images[1], corrected, mode="sparse", produced=truth[1])
    calls = []

    def fake_finetune(base, data, out, **kw):
        calls.append((base, data, out, kw))
        return {"package": str(tiny_package), "before": {"seg": 0.5}, "after": {"seg": 0.75},
                "held_out": ["t_001"], "pairs": 2, "seconds": 3.2}

    monkeypatch.setattr(run, "finetune", fake_finetune)
    (tmp_path / "teach_models" / "finetune-001").mkdir(parents=True)
    gen = run.finetune_job(tiny_package / "package.json", folder, steps=5, image=images[2])
    steps = []
    try:
        while True:
            steps.append(next(gen))
    except StopIteration as stop:
        summary, result = stop.value
    base, data, out, kw = calls[0]
    assert base == tiny_package and data == folder and out == tmp_path / "teach_models" / "finetune-002"
    assert kw == {"steps": 5, "minutes": None, "device": "auto", "sparse": True, "unannotated_value": UNANNOTATED}
    assert [s[2] for s in steps[:2]] == ["fine-tuning on 2 pairs (sparse)", "loading the new package"]
    assert result.labels.shape == images[2].shape and summary["out"] == str(out)
    assert run.scores_text(summary) == "2 pairs, 3 s; held out t_001: before SEG 0.500 -> after SEG 0.750"
    assert "fewer than 3 pairs" in run.scores_text({"pairs": 2, "before": None, "after": None, "held_out": []})


# ----------------------------------------------------------------------------- reader and samples (no napari)
def test_reader_reads_a_seg_segment_output_folder(tiny_package, frames, tmp_path):
    from seg.export.segment import run_segment

    images, _ = frames
    (tmp_path / "in" / "01").mkdir(parents=True)
    for t, img in enumerate(images):
        tifffile.imwrite(tmp_path / "in" / "01" / f"t{t:03d}.tif", img)
    tifffile.imwrite(tmp_path / "in" / "one.tif", images[0])
    out = tmp_path / "out"
    run_segment(tiny_package, [tmp_path / "in" / "01", tmp_path / "in" / "one.tif"], out, device="cpu")
    assert reader.napari_get_reader(str(out)) is reader.read
    layers = reader.read(out)
    got = {meta["name"]: (data.shape, data.dtype, kind) for data, meta, kind in layers}
    assert got == {"01_RES": ((3, 96, 96), np.uint16, "labels"), "01_prob": ((3, 96, 96), np.float32, "image"),
                   "one_prob": ((96, 96), np.float32, "image"), "one_mask": ((96, 96), np.uint16, "labels")}
    res = dict((m["name"], d) for d, m, _ in layers)["01_RES"]
    np.testing.assert_array_equal(res[2], tifffile.imread(out / "01_RES" / "mask002.tif"))
    # single outputs and the folders on their own
    for path, name, kind in ((out / "01_RES", "01_RES", "labels"), (out / "01_RES" / "mask001.tif", "01_RES/mask001",
                                                                     "labels"),
                             (out / "01_prob", "01_prob", "image"), (out / "one_mask.tif", "one_mask", "labels")):
        (data, meta, k), = reader.napari_get_reader(str(path))(str(path))
        assert (meta["name"], k) == (name, kind)
    # the ISBI 2012 submission stack: float32 (Z, H, W) probabilities, an Image
    tifffile.imwrite(tmp_path / "test-volume_prob.tif", np.zeros((4, 32, 32), np.float32))
    (data, meta, k), = reader.read(tmp_path / "test-volume_prob.tif")
    assert data.shape == (4, 32, 32) and k == "image" and meta["contrast_limits"] == (0.0, 1.0)
    # not ours: napari asks its other readers
    for other in (tmp_path / "in", tmp_path / "in" / "one.tif", tmp_path / "nothing.tif"):
        assert reader.napari_get_reader(str(other)) is None


def test_sample_data_is_seg_synth_seeded():
    (img, meta, kind), (truth, tmeta, tkind) = sample.synthetic_frame()
    assert (kind, tkind) == ("image", "labels") and img.dtype == np.uint8 and img.shape == truth.shape == (192, 192)
    assert truth.max() >= 5 and not tmeta["visible"]
    np.testing.assert_array_equal(img, sample.synthetic_frame()[0][0])


# ----------------------------------------------------------------------------- the plugin in napari
def _need_qt() -> None:
    """Skip without napari, or without a display (Qt aborts the process when it finds none)."""
    pytest.importorskip("napari")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        pytest.skip("no display for Qt and napari's OpenGL canvas: run under xvfb-run")


@pytest.fixture
def viewer(request, monkeypatch):
    """A napari viewer (skips without napari or without a display), jobs synchronous."""
    _need_qt()
    from seg.napari import widgets

    monkeypatch.setattr(widgets, "SYNC", True)
    return request.getfixturevalue("make_napari_viewer")()


def test_npe2_validate():
    pytest.importorskip("npe2")
    npe2 = Path(sys.executable).with_name("npe2")
    proc = subprocess.run([str(npe2), "validate", "seg"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout


def test_manifest_imports_and_contributions():
    _need_qt()
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("seg")
    pm.validate_imports()  # every python_name imports (napari, Qt and magicgui included)
    assert {w.display_name for w in pm.contributions.widgets} == {"Segment", "Teach", "Fine-tune"}
    assert {s.key for s in pm.contributions.sample_data} == {"synthetic-frame", "synthetic-timelapse"}


def test_segment_widget_adds_labels_and_probability(viewer, tiny_package, frames):
    from seg.napari.widgets import SegmentWidget

    images, _ = frames
    layer = viewer.add_image(images[0], name="cells")
    stack = viewer.add_image(images, name="movie", scale=(1, 2, 2))
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.package.value = tiny_package / "package.json"
    w.image.value = layer
    w.start()
    assert w.status.startswith("done"), w.status
    lab, prob = viewer.layers["cells labels"], viewer.layers["cells probability"]
    assert type(lab).__name__ == "Labels" and lab.data.shape == (96, 96) and lab.data.dtype == np.uint16
    assert type(prob).__name__ == "Image" and prob.data.dtype == np.float32 and 0 <= prob.data.min() <= prob.data.max() <= 1
    np.testing.assert_array_equal(lab.metadata["seg"]["produced"], lab.data)
    assert lab.metadata["seg"]["produced"] is not lab.data  # painting never changes what was produced
    w.image.value = stack
    w.diameter.value = "-1"
    w._start()  # what the button does: the error is shown, nothing added
    assert w.status.startswith("error: diameter") and "movie labels" not in viewer.layers
    w.diameter.value = ""
    w.start()
    movie = viewer.layers["movie labels"]
    assert movie.data.shape == (3, 96, 96) and tuple(movie.scale) == (1, 2, 2)
    assert viewer.layers["movie probability"].data.shape == (3, 96, 96)
    n = len(viewer.layers)
    w.start()  # again: the layers are updated, not added
    assert len(viewer.layers) == n


def test_segment_widget_runs_in_a_thread_and_cancels(viewer, tiny_package, frames, request, monkeypatch):
    from seg.napari import widgets

    qtbot = request.getfixturevalue("qtbot")  # not a parameter: its session QApplication would come first
    monkeypatch.setattr(widgets, "SYNC", False)
    images, _ = frames
    w = widgets.SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.package.value = tiny_package
    w.image.value = viewer.add_image(images, name="movie")
    w.start()
    assert w._worker is not None and not w._run.enabled
    w.cancel()
    qtbot.waitUntil(lambda: w._worker is None, timeout=30000)
    assert w.status == "cancelled" and "movie labels" not in viewer.layers and w._run.enabled
    w.start()
    qtbot.waitUntil(lambda: w._worker is None, timeout=30000)
    assert w.status.startswith("done") and viewer.layers["movie labels"].data.shape == (3, 96, 96)
    assert w._progress.value == w._progress.max == 3


def test_teach_saves_numbered_sparse_and_dense_pairs(viewer, tiny_package, frames, tmp_path):
    from seg.napari.widgets import SegmentWidget, TeachWidget

    images, _ = frames
    seg_w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg_w)
    seg_w.package.value = tiny_package
    seg_w.image.value = image = viewer.add_image(images, name="movie")
    seg_w.start()
    labels = viewer.layers["movie labels"]
    teach = TeachWidget(viewer)
    viewer.window.add_dock_widget(teach)
    teach.image.value, teach.labels.value = image, labels
    teach.folder.value = tmp_path / "teach"
    viewer.dims.set_current_step(0, 1)
    teach.mode.value = "sparse"
    teach._clicked()  # nothing corrected yet: refused, nothing written
    assert teach.status.startswith("error: no cell differs") and not (tmp_path / "teach").exists()
    new_id = int(labels.data.max()) + 1
    labels.data[1, 10:20, 10:20] = new_id  # the user paints a cell on frame 1
    labels.refresh()
    sparse = teach.save()
    teach.mode.value = "dense"
    dense = [teach.save(), teach.save()]
    assert [sparse["name"], dense[0]["name"], dense[1]["name"]] == ["movie_000", "movie_001", "movie_002"]
    assert "saved movie_002 (dense" in teach.status and "3 pairs" in teach.status
    np.testing.assert_array_equal(tifffile.imread(sparse["image"]), images[1])
    mask = tifffile.imread(sparse["mask"])
    assert sparse["touched"][-1] == new_id and (mask[10:20, 10:20] == new_id).all()
    assert set(np.unique(mask)) <= {0, UNANNOTATED, *sparse["touched"]}
    np.testing.assert_array_equal(tifffile.imread(dense[0]["mask"]), labels.data[1])
    doc = json.loads((tmp_path / "teach" / "dataset.json").read_text())
    assert doc["annotations"] == "sparse" and doc["pairs"]["movie_000"]["source"]["frame"] == 1
    assert doc["pairs"]["movie_000"]["source"]["package"] == str(tiny_package)


def test_reader_and_sample_through_napari(viewer, tiny_package, frames, tmp_path):
    from seg.export.segment import run_segment

    images, _ = frames
    (tmp_path / "01").mkdir()
    for t, img in enumerate(images):
        tifffile.imwrite(tmp_path / "01" / f"t{t:03d}.tif", img)
    run_segment(tiny_package, [tmp_path / "01"], tmp_path / "out", device="cpu")
    layers = viewer.open(str(tmp_path / "out"), plugin="seg")
    assert {(ly.name, type(ly).__name__, ly.data.shape) for ly in layers} == {
        ("01_RES", "Labels", (3, 96, 96)), ("01_prob", "Image", (3, 96, 96))}
    viewer.open_sample("seg", "synthetic-frame")
    assert viewer.layers["synthetic cells"].data.shape == (192, 192)


def test_finetune_widget_trains_from_the_base_and_segments_again(viewer, tiny_package, frames, tmp_path):
    from seg.napari.widgets import FinetuneWidget

    images, truth = frames
    for i in range(3):
        pairs.save_pair(tmp_path / "teach", images[i], truth[i])
    layer = viewer.add_image(images[0], name="cells")
    w = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.base.value, w.folder.value = tiny_package / "package.json", tmp_path / "teach"
    w.steps.value, w.device.value, w.image.value = 2, "cpu", layer
    w.start()
    assert w.status == f"new package: {tmp_path / 'teach_models' / 'finetune-001'}", w.status
    assert w.scores.startswith("3 pairs") and "before SEG" in w.scores and "after SEG" in w.scores
    lab = viewer.layers["cells labels"]
    assert lab.data.shape == (96, 96) and lab.metadata["seg"]["package"].endswith("finetune-001")
