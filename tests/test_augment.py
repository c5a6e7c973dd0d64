"""Elastic-deformation augmentation: determinism, label values, smooth field, alignment, CLI."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from skimage.measure import label

from seg.errors import SegError
from seg.transforms.augment import AugmentParams, Augmenter, dense_displacement

GEOMETRY_ONLY = {"intensity": {"prob": 0.0}}


def isbi_sample(isbi_stacks, i=0):
    lab = isbi_stacks["labels"][i]
    img = isbi_stacks["train"][i].astype(np.float32)
    img = (img - img.mean()) / img.std()
    inst = label(lab == 255, connectivity=1).astype(np.int32)
    weights = np.where(lab == 255, 0.6, 2.3).astype(np.float32)
    return img, {"semantic": (lab == 255).astype(np.uint8), "instances": inst, "weights": weights}


def digest(image, targets):
    h = hashlib.sha256(image.tobytes())
    for k in sorted(targets):
        h.update(targets[k].tobytes())
    return h.hexdigest()


def test_deterministic_under_seed(isbi_stacks):
    img, t = isbi_sample(isbi_stacks)
    aug = Augmenter({"intensity": {"prob": 1.0, "gamma": 0.2, "noise": 0.05}})
    a = aug(img, t, np.random.default_rng(42))
    b = aug(img, t, np.random.default_rng(42))
    c = aug(img, t, np.random.default_rng(43))
    assert digest(*a) == digest(*b)
    assert digest(*a) != digest(*c)
    assert not np.array_equal(a[0], img)  # something happened


def test_dtypes_shapes_and_label_values_preserved(isbi_stacks):
    img, t = isbi_sample(isbi_stacks)
    aug = Augmenter({})
    for seed in range(3):
        out, ot = aug(img, t, np.random.default_rng(seed))
        assert out.dtype == np.float32 and out.shape == img.shape
        for k in t:
            assert ot[k].dtype == t[k].dtype and ot[k].shape == t[k].shape
        assert set(np.unique(ot["semantic"])) <= {0, 1}
        assert set(np.unique(ot["instances"])) <= set(np.unique(t["instances"]))
        # weights are linearly interpolated: within the input range
        assert t["weights"].min() - 1e-6 <= ot["weights"].min() and ot["weights"].max() <= t["weights"].max() + 1e-6
        # membranes survive nearest interpolation: the membrane fraction stays close
        assert abs((ot["semantic"] == 0).mean() - (t["semantic"] == 0).mean()) < 0.03


def test_field_smooth_no_folding():
    """Jacobian determinant of x -> x + u(x) > 0 for the default sigma (10 px, 3x3 grid), 512^2."""
    aug = Augmenter({})
    shape = (512, 512)
    for seed in range(15):
        p = aug.draw(np.random.default_rng(seed), shape)
        u = dense_displacement(p.displacement, shape)
        assert np.abs(u).max() > 1.0  # a real deformation
        dr_r, dr_c = np.gradient(u[0])
        dc_r, dc_c = np.gradient(u[1])
        det = (1 + dr_r) * (1 + dc_c) - dr_c * dc_r
        inner = (slice(40, -40), slice(40, -40))  # sample points inside the image (|u| < 40 px)
        assert det[inner].min() > 0.5, seed
        # smooth: neighbouring displacement differences are small
        grads = [np.abs(g[inner]).max() for g in (dr_r, dr_c, dc_r, dc_c)]
        assert max(grads) < 0.5


def grid_pattern(shape=(256, 256), step=24, width=4):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    g = ((yy % step) < width) | ((xx % step) < width)
    g[100:140, 30:60] = True  # an asymmetric blob so flips/rotations are visible
    return g


def test_image_label_weights_stay_aligned():
    g = grid_pattern()
    image = g.astype(np.float32)
    targets = {"semantic": g.astype(np.uint8), "weights": g.astype(np.float32) * 5}
    aug = Augmenter(GEOMETRY_ONLY)
    changed = 0
    for seed in range(6):
        p = aug.draw(np.random.default_rng(seed), g.shape)
        img, t = aug.apply(p, image, targets)
        lab = t["semantic"].astype(bool)
        changed += (lab != g).mean() > 0.05
        assert ((img > 0.5) == lab).mean() > 0.985
        assert ((t["weights"] > 2.5) == lab).mean() > 0.985
    assert changed >= 5  # the deformation, flips and rotations really moved the pattern


def test_flips_rot90_consistent_across_arrays():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((64, 64)).astype(np.float32)
    targets = {"semantic": (image > 0).astype(np.uint8), "weights": np.abs(image)}
    aug = Augmenter({"elastic": {"enabled": False}, "intensity": {"prob": 0.0}})
    seen = set()
    for seed in range(40):
        p = aug.draw(np.random.default_rng(seed), image.shape)
        img, t = aug.apply(p, image, targets)
        expected = image[::-1] if p.flip_rows else image
        expected = expected[:, ::-1] if p.flip_cols else expected
        np.testing.assert_array_equal(img, np.rot90(expected, p.rot90))
        np.testing.assert_array_equal(t["semantic"], (img > 0).astype(np.uint8))
        np.testing.assert_array_equal(t["weights"], np.abs(img))
        seen.add((p.flip_rows, p.flip_cols, p.rot90))
    assert len(seen) > 8
    # non-square arrays keep their shape (only 0 or 180 degree turns)
    rect = rng.standard_normal((32, 48)).astype(np.float32)
    for seed in range(10):
        assert aug(rect, {}, np.random.default_rng(seed))[0].shape == (32, 48)


def test_crop_equals_full_then_slice(isbi_stacks):
    img, t = isbi_sample(isbi_stacks)
    aug = Augmenter({"flip": False, "rot90": False, "intensity": {"prob": 0.0}})
    p = aug.draw(np.random.default_rng(5), (512, 512))
    full, ft = aug.apply(p, img, t)
    crop = (slice(100, 356), slice(40, 296))
    part, pt = aug.apply(p, img, t, crop=crop)
    assert part.shape == (256, 256)
    np.testing.assert_array_equal(part, full[crop])
    for k in t:
        np.testing.assert_array_equal(pt[k], ft[k][crop])
    with pytest.raises(SegError, match="crop"):
        aug.apply(p, img, t, crop=(slice(0, 600), slice(0, 10)))


def test_intensity_touches_image_only():
    rng = np.random.default_rng(1)
    image = rng.standard_normal((32, 32)).astype(np.float32)
    sem = (image > 0).astype(np.uint8)
    aug = Augmenter({"elastic": {"enabled": False}, "flip": False, "rot90": False,
                     "intensity": {"prob": 1.0, "scale": 0.2, "shift": 0.3}})
    p = aug.draw(np.random.default_rng(3), image.shape)
    assert 0.8 <= p.scale <= 1.2 and -0.3 <= p.shift <= 0.3 and (p.scale, p.shift) != (1.0, 0.0)
    img, t = aug.apply(p, image, {"semantic": sem})
    np.testing.assert_allclose(img, image * p.scale + p.shift, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(t["semantic"], sem)


def test_bad_config_and_inputs():
    with pytest.raises(SegError, match="augment.elastic"):
        Augmenter({"elastic": {"sigmaa": 3}})
    with pytest.raises(SegError, match="prob"):
        Augmenter({"intensity": {"prob": 2}})
    aug = Augmenter({})
    with pytest.raises(SegError, match="targets"):
        aug(np.zeros((8, 8), np.float32), {"x": np.zeros((4, 4))}, np.random.default_rng(0))
    with pytest.raises(SegError, match="rng"):
        aug(np.zeros((8, 8), np.float32), {})


def test_cli_augment_reproducible_train_only(tiny_isbi, tmp_path):
    from seg.cli import main
    from seg.data.canonical import load_meta

    cfg, ds = tiny_isbi
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert main(["augment", "--config", str(cfg), "--dataset", "isbi2012", "--copies", "2",
                     "--out", str(out)]) == 0
    meta = load_meta(outs[0])
    ids = [s["id"] for s in meta["slices"]]
    assert ids == ["train_00_aug00", "train_00_aug01", "train_01_aug00", "train_01_aug01"]  # no val/test
    assert all(s["split"] == "train" for s in meta["slices"])
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*.tif"))
    assert len(files) == 16
    for f in files:  # same seed, same bytes
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes()
    assert (outs[0] / "preview.png").is_file()
    images = outs[0] / "images"
    assert (images / "train_00_aug00.tif").read_bytes() != (images / "train_00_aug01.tif").read_bytes()


def test_cli_augment_variant_takes_its_per_dataset_overrides(tiny_isbi, tmp_path):
    """`seg augment --variant V --dataset D` deforms as training does: the top-level section, V's
    overrides, then V's per_dataset overrides for D (here: geometry off for isbi2012 only)."""
    from seg.cli import main

    cfg, _ = tiny_isbi
    plain = "{elastic: {enabled: false}, flip: false, rot90: false, intensity: {prob: 0.0}}"
    cfg.write_text(cfg.read_text().replace(
        "variants:\n  unet: {model: unet}\n",
        "variants:\n  unet: {model: unet}\n"
        f"  per-dataset: {{model: unet, per_dataset: {{isbi2012: {{augment: {plain}}}}}}}\n"
        f"  overall: {{model: unet, augment: {plain}}}\n"))

    def image(variant):
        out = tmp_path / variant
        args = ["augment", "--config", str(cfg), "--dataset", "isbi2012", "--copies", "1", "--out", str(out)]
        assert main(args + ([] if variant == "top-level" else ["--variant", variant])) == 0
        return (out / "images" / "train_00_aug00.tif").read_bytes()

    assert image("per-dataset") == image("overall")  # the per_dataset override was applied
    assert image("per-dataset") != image("top-level")  # and it is not the default deformation


def test_zoom_scales_objects_keeps_labels_and_leaves_the_other_draws(isbi_stacks):
    """augment.zoom: the factor is drawn from the range after every other draw (enabling it
    changes nothing else), objects grow by its square in area, labels stay labels, and a
    zoomed crop equals the zoomed whole slice's centre (context from the slice)."""
    img, t = isbi_sample(isbi_stacks)
    plain = Augmenter({**GEOMETRY_ONLY, "elastic": {"enabled": False}, "flip": False, "rot90": False})
    zoomed = Augmenter({**GEOMETRY_ONLY, "elastic": {"enabled": False}, "flip": False, "rot90": False,
                        "zoom": {"range": [0.7, 1.4]}})
    elastic = Augmenter({**GEOMETRY_ONLY})
    elastic_zoom = Augmenter({**GEOMETRY_ONLY, "zoom": {"range": [0.7, 1.4], "prob": 0.5}})
    factors = []
    for seed in range(20):
        p0 = elastic.draw(np.random.default_rng(seed), img.shape)
        p1 = elastic_zoom.draw(np.random.default_rng(seed), img.shape)
        np.testing.assert_array_equal(p0.displacement, p1.displacement)
        assert (p0.flip_rows, p0.flip_cols, p0.rot90, p0.scale, p0.shift, p0.noise_seed, p0.zoom) == (
            p1.flip_rows, p1.flip_cols, p1.rot90, p1.scale, p1.shift, p1.noise_seed, 1.0)
        factors.append(p1.zoom)
        pz = zoomed.draw(np.random.default_rng(seed), img.shape)
        assert 0.7 <= pz.zoom <= 1.4
    assert 0 < sum(f == 1.0 for f in factors) < 20  # prob 0.5: some zoomed, some not
    rng = np.random.default_rng(3)
    p = zoomed.draw(rng, img.shape)
    p = AugmentParams(**{**p.__dict__, "zoom": 1.25})
    out, ot = zoomed.apply(p, img, t)
    base, bt = plain.apply(plain.draw(np.random.default_rng(3), img.shape), img, t)
    assert ot["semantic"].dtype == np.uint8 and set(np.unique(ot["semantic"])) <= {0, 1}
    assert set(np.unique(ot["instances"])) <= set(np.unique(t["instances"]))
    # the objects in the (centred) middle quarter: area ratio ~ 1.25^2
    c = slice(128, 384)
    ratio = (ot["instances"][c, c] > 0).sum() / max(1, len(np.unique(ot["instances"][c, c])) - 1)
    ratio /= (bt["instances"][c, c] > 0).sum() / max(1, len(np.unique(bt["instances"][c, c])) - 1)
    assert 1.25 < ratio < 1.9
    # a crop is zoomed about its own centre with the slice around it as context
    crop = (slice(100, 356), slice(150, 406))
    cz, ctz = zoomed.apply(p, img, t, crop=crop)
    assert cz.shape == (256, 256) and ctz["semantic"].shape == (256, 256)
    with pytest.raises(SegError, match="augment.zoom.range"):
        Augmenter({"zoom": {"range": [1.4, 0.7]}})
    with pytest.raises(SegError, match="zoom"):
        Augmenter({"zoom": {"range": [0.0, 1.2]}})
