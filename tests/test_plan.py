"""The dataset fingerprint (seg.data.fingerprint) and the plan from it (seg.settings.plan): known object
sizes, a min_size grid that keeps small objects, the config always wins, the built-in configs resolve
to the values they always had, real GOWT1 numbers, lazily computed fingerprints, ``seg plan``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from seg.cli import main
from seg.config import variant_datasets
from seg.settings import RunSettings, load_config, validate_config
from seg.data.canonical import canonical_writer, load_meta
from seg.data.fingerprint import compute_fingerprint, ensure_fingerprint, object_areas, touching_objects
from seg.settings.plan import FALLBACK, PLANNED_KEYS, data_plan, planned_values
from seg.infer.postprocess import instances_from_probability
from seg.kinds import get_kind
from seg.targets import get_target

ROOT = Path(__file__).resolve().parents[1]


def _rect_slice(size: int, rects: list[tuple[int, int, int, int]]) -> np.ndarray:
    """int32 (size, size) labels 1..N of the rectangles (y, x, h, w)."""
    lab = np.zeros((size, size), np.int32)
    for i, (y, x, h, w) in enumerate(rects, 1):
        lab[y:y + h, x:x + w] = i
    return lab


def _write_dataset(ds_dir: Path, train: list[np.ndarray], *, held_out: np.ndarray | None = None,
                   annotations: str = "full") -> Path:
    """A CTC-kind canonical dataset whose training slices have the instance images ``train``
    (images = 50 + 100 * foreground, uint8) and one val slice ``held_out``."""
    with canonical_writer(ds_dir, name=ds_dir.name, kind=get_kind("ctc"), source={"test": "plan"}) as w:
        w.meta["annotations"] = annotations
        for i, inst in enumerate(train):
            w.add(f"01_t{i:03d}", (50 + 100 * (inst > 0)).astype(np.uint8), split="train", frame=i, sequence="01",
                  instances=inst, semantic=(inst > 0).astype(np.uint8))
        if held_out is not None:
            w.add("01_t099", (50 + 100 * (held_out > 0)).astype(np.uint8), split="val", frame=99, sequence="01",
                  instances=held_out, semantic=(held_out > 0).astype(np.uint8))
    return ds_dir


def _cfg(dataset: str = "ds", **sections) -> dict:
    cfg = {"datasets": {dataset: {"kind": "ctc"}}, "variants": {"v": {"model": "unet"}}, **sections}
    return validate_config(cfg)


def test_fingerprint_of_known_objects(tmp_path):
    """Squares of 8 x 8 px (area 64): 5 per slice, one touching pair per slice; a held-out slice of
    large squares does not count (training split only)."""
    rects = [(4, 4, 8, 8), (4, 12, 8, 8), (30, 30, 8, 8), (50, 8, 8, 8), (8, 50, 8, 8)]  # first two touch
    slices = [_rect_slice(64, rects), _rect_slice(64, [(y + 2, x, h, w) for y, x, h, w in rects])]
    ds = _write_dataset(tmp_path / "ds", slices, held_out=_rect_slice(64, [(0, 0, 40, 40)]))
    fp = load_meta(ds)["fingerprint"]  # written at ingest (canonical_writer)
    assert fp["split"] == "train" and fp["n_slices"] == 2 and fp["n_annotated_slices"] == 2
    assert fp["image_size"]["height"] == {"min": 64, "median": 64.0, "max": 64}
    obj = fp["objects"]
    assert obj["count"] == 10 and obj["touching_fraction"] == pytest.approx(0.4)
    assert obj["area"]["units"] == "px"
    assert all(obj["area"][k] == 64 for k in ("min", "p5", "median", "p95", "max"))
    assert obj["diameter"]["median"] == pytest.approx(math.sqrt(4 * 64 / math.pi), abs=0.01)
    assert fp["intensity"]["dtype"] == "uint8"
    assert fp["intensity"]["percentiles"]["0.5"] == 50 and fp["intensity"]["percentiles"]["99.5"] == 150
    # the helpers: diagonal contact counts as touching; non-consecutive ids are fine
    lab = np.zeros((6, 6), np.int32)
    lab[0:2, 0:2], lab[2:4, 2:4], lab[5, 5] = 7, 9, 3
    assert touching_objects(lab) == (3, 2)
    assert sorted(object_areas(lab).tolist()) == [1, 4, 4]


def test_fingerprint_counts_only_annotated_objects_of_sparse_data(tmp_path):
    """Sparse annotations: instances hold only the annotated cells (0 elsewhere), so only they count."""
    lab = _rect_slice(64, [(4, 4, 10, 10), (4, 14, 10, 10), (40, 40, 10, 10)])
    lab[lab == 2] = 0  # the touching neighbour is not annotated
    fp = load_meta(_write_dataset(tmp_path / "ds", [lab], annotations="sparse"))["fingerprint"]
    assert fp["annotations"] == "sparse" and fp["objects"]["count"] == 2
    assert fp["objects"]["touching_fraction"] == 0.0 and "annotated objects only" in fp["objects"]["touching"]


def _discs(size: int, radius: float, spacing: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    lab = np.zeros((size, size), np.int32)
    k = 0
    for cy in range(spacing // 2, size - spacing // 2 + 1, spacing):
        for cx in range(spacing // 2, size - spacing // 2 + 1, spacing):
            k += 1
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = k
    return lab


def test_planned_min_size_grid_keeps_50_px_objects(tmp_path):
    """Objects of ~50 px area: post-processing a perfect probability map with every min_size (and
    h) of the planned grid keeps every object whole (the old fixed min_size 200 deleted them all)."""
    lab = _discs(96, 3.9, 16)  # discs of 45-53 px
    areas = object_areas(lab)
    assert 40 <= areas.min() and areas.max() <= 60
    ds = _write_dataset(tmp_path / "ds", [lab, lab])
    pp = data_plan(_cfg(postprocess={"method": "watershed"}), "ds", ds_dir=ds).postprocess()
    assert max(pp["search"]["min_size"]) < areas.min() and pp["min_size"] < areas.min()
    prob = (lab > 0).astype(np.float32)
    for method in ("watershed", "connected_components"):
        for m in sorted({pp["min_size"], *pp["search"]["min_size"]}):
            for h in sorted({pp["h"], *pp["search"]["h"]}):
                out = instances_from_probability(prob, method=method, threshold=0.5, min_size=m, h=h)
                assert out.max() == lab.max() and np.array_equal(out > 0, lab > 0), (method, m, h)
    deleted = instances_from_probability(prob, method="watershed", threshold=0.5, min_size=200, h=2.0)
    assert deleted.max() == 0  # what a global constant did


def test_plan_rules_scale_with_the_objects(tmp_path):
    small_fp = compute_fingerprint(*_meta(_write_dataset(tmp_path / "s", [_discs(128, 6, 32)])))
    large_fp = compute_fingerprint(*_meta(_write_dataset(tmp_path / "l", [_discs(512, 40, 128)])))
    small, large = planned_values(small_fp), planned_values(large_fp)
    for key in PLANNED_KEYS:
        s, g = small[key][0], large[key][0]
        assert (max(s) < max(g)) if isinstance(s, list) else (s <= g), key
    assert large["train.patch_size"][0] % 32 == 0 and 64 <= small["train.patch_size"][0] <= 128
    # D = 80 px: 4 D = 320 px; sigma 0.04 D = 3.2, band 0.1 D = 8 (within their bounds)
    assert large["train.patch_size"][0] == 320
    assert large["weights.sigma"][0] == pytest.approx(3.2, abs=0.1)
    assert large["weights.sparse_band"][0] == pytest.approx(8.0, abs=0.2)
    # three_class boundary (the target's own plan rule): D / 15 = 5.3 -> 5 px; objects of D < 22.5 px get 1 px
    def width(fp):
        return get_target("three_class").plan_rules(fp["objects"]["diameter"]["median"])["target.boundary_width"][0]

    assert width(large_fp) == 5 and width(small_fp) == 1 and small_fp["objects"]["diameter"]["median"] < 22.5
    # the patch never exceeds the smallest image side
    tiny = planned_values(compute_fingerprint(*_meta(_write_dataset(tmp_path / "t", [_discs(48, 10, 24)]))))
    assert tiny["train.patch_size"][0] == 48


def _meta(ds: Path) -> tuple[Path, dict]:
    return ds, load_meta(ds)


CONFIG_VALUES = {
    "postprocess.min_size": 7, "postprocess.search.min_size": [0, 3], "postprocess.h": 0.7,
    "postprocess.search.h": [0.7, 9.0], "weights.sigma": 1.5, "weights.sparse_band": 33.0, "train.patch_size": 48,
}


@pytest.mark.parametrize("key", [k for k in PLANNED_KEYS if k != "target.boundary_width"])
def test_the_config_always_wins(tmp_path, key):
    ds = _write_dataset(tmp_path / "ds", [_discs(128, 12, 32)])
    section, rest = key.split(".", 1)
    value = CONFIG_VALUES[key]
    nested = {rest.split(".")[0]: {rest.split(".")[1]: value}} if "." in rest else {rest: value}
    plan = data_plan(_cfg(**{section: nested}), "ds", ds_dir=ds)
    s = plan.setting(key)
    assert (s.value, s.source) == (value, "config")
    others = [plan.setting(k) for k in PLANNED_KEYS if k != key and not k.startswith(key + ".")]
    assert all(o.source == "data" for o in others if not key.startswith(o.key))
    resolved = {"postprocess": plan.postprocess(), "weights": plan.weights(), "train": plan.train("v")}[section]
    for part in rest.split("."):
        resolved = resolved[part]
    assert resolved == value


def test_boundary_width_from_the_variant_else_the_plan(tmp_path):
    """The three-class boundary width: a variant's ``boundary_width`` wins, else D / 30 from the
    data (D / 15: 7 px for D ~ 110 px); shown by the plan only with a three_class variant."""
    ds = _write_dataset(tmp_path / "ds", [_discs(512, 55, 160)])
    cfg = validate_config({"datasets": {"ds": {"kind": "ctc"}},
                           "variants": {"own": {"model": "unet", "target": "three_class", "boundary_width": 7},
                                        "planned": {"model": "unet", "target": "three_class"},
                                        "paper": {"model": "unet"}}})
    plan = data_plan(cfg, "ds", ds_dir=ds)
    d = plan.fingerprint["objects"]["diameter"]["median"]
    assert 100 < d < 130
    tc = get_target("three_class")
    own_s, planned_s = (plan.target_setting(tc, "target.boundary_width", v) for v in ("own", "planned"))
    assert (own_s.value, own_s.source) == (7, "config")
    assert (planned_s.value, planned_s.source) == (round(d / 15), "data")
    assert planned_s.value == 7
    # the targets as training, seg augment and the package take them
    own, planned = (RunSettings(cfg, "ds", v, ds_dir=ds).target for v in ("own", "planned"))
    assert (own.boundary_width, own.boundary_weight, planned.boundary_width, planned.boundary_weight) == (7, 2.0, 7, 2.0)
    paper = RunSettings(cfg, "ds", "paper", ds_dir=ds).target
    assert paper.name == "fg_border" and paper.settings() == {}
    cfg["variants"]["own"]["boundary_weight"] = 1.5
    assert RunSettings(cfg, "ds", "own", ds_dir=ds).target.boundary_weight == 1.5
    assert "target.boundary_width" in {s.key for s in plan.settings()}
    del cfg["variants"]["own"], cfg["variants"]["planned"]
    assert "target.boundary_width" not in {s.key for s in data_plan(cfg, "ds", ds_dir=ds).settings()}


def test_dataset_and_variant_overrides_win(tmp_path):
    ds = _write_dataset(tmp_path / "ds", [_discs(128, 12, 32)])
    cfg = validate_config({"datasets": {"ds": {"kind": "ctc", "postprocess": {"min_size": 11, "search": {"h": [4.0]}}}},
                           "variants": {"v": {"model": "unet", "per_dataset": {"ds": {"train": {"patch_size": 80}}}},
                                        "w": {"model": "unet"}}})
    plan = data_plan(cfg, "ds", ds_dir=ds)
    assert plan.postprocess()["min_size"] == 11 and plan.postprocess()["search"]["h"] == [4.0]
    assert plan.setting("postprocess.search.min_size").source == "data"
    assert 11 in plan.postprocess()["search"]["min_size"]  # the grid holds the min_size in use
    assert plan.train("v")["patch_size"] == 80 and plan.setting("train.patch_size", "v").source == "config"
    assert plan.setting("train.patch_size", "w").source == "data"


def test_no_annotated_object_gives_the_fixed_defaults(tmp_path):
    ds = _write_dataset(tmp_path / "ds", [np.zeros((300, 300), np.int32)])
    plan = data_plan(_cfg(variants={"v": {"model": "unet", "target": "three_class"}}), "ds", ds_dir=ds)
    fallback = {**FALLBACK, **get_target("three_class").plan_fallback}  # the target's own: boundary width 2 px
    assert fallback["target.boundary_width"] == 2
    assert {s.key: (s.value, s.source) for s in plan.settings()} == {k: (v, "default") for k, v in fallback.items()}


# The values the built-in configs had before the plan existed (schema defaults included): they pin them.
BEFORE = {
    "config.yaml": {"postprocess.min_size": 200, "postprocess.h": 2.0, "postprocess.search.h": [1.0, 2.0, 3.0, 5.0, 8.0],
                    "postprocess.search.min_size": [0, 50, 100, 200, 500, 1000, 2000], "weights.sigma": 5.0,
                    "weights.sparse_band": 10.0, "train.patch_size": 256},
    "quick.yaml": {"postprocess.min_size": 50, "postprocess.h": 2.0, "postprocess.search.h": [1.0, 2.0, 3.0, 5.0, 8.0],
                   "postprocess.search.min_size": [0, 50, 100, 200, 500, 1000, 2000], "weights.sigma": 5.0,
                   "weights.sparse_band": 10.0, "train.patch_size": 64},
    "paper.yaml": {"postprocess.min_size": 50, "postprocess.h": 2.0, "postprocess.search.h": [1.0, 2.0, 3.0, 5.0, 8.0],
                   "postprocess.search.min_size": [0, 50, 100, 200, 500, 1000, 2000], "weights.sigma": 5.0,
                   "weights.sparse_band": 10.0, "train.patch_size": 256},
}
OWN = {("config.yaml", "DIC-C2DH-HeLa"): {"postprocess.h": 5.0, "postprocess.search.h": [2.0, 3.0, 5.0, 8.0, 12.0]}}
OWN_PATCH = {("config.yaml", "unet-valid"): 196, ("paper.yaml", "unet-paper"): 388}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_builtin_configs_resolve_to_the_values_they_always_had(tmp_path, name):
    """Every planned setting of every dataset of a built-in config comes from the config (no data is
    read: the folder does not exist), with the value it had when the schema fixed it."""
    cfg = load_config(ROOT / "configs" / name)
    for ds in cfg["datasets"]:
        plan = data_plan(cfg, ds, ds_dir=tmp_path / "absent")
        want = {**BEFORE[name], **OWN.get((name, ds), {})}
        assert {s.key: (s.value, s.source) for s in plan.settings()} == {k: (v, "config") for k, v in want.items()}
        for v in cfg["variants"]:
            if ds in variant_datasets(cfg, v):
                assert plan.train(v)["patch_size"] == OWN_PATCH.get((name, v), want["train.patch_size"])


def test_gowt1_real_fingerprint_and_plan(tmp_path, shared_data, monkeypatch):
    """Real GOWT1 nuclei (ingested from ../shared/data): diameters of tens of px; the plan keeps them."""
    monkeypatch.setenv("SEG_RAW_ROOT", str(shared_data))
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"),
                                        "datasets": {"Fluo-N2DH-GOWT1": {"kind": "ctc"}},
                                        "variants": {"v": {"model": "unet"}}}))
    assert main(["ingest", "--config", str(cfg_path), "--dataset", "Fluo-N2DH-GOWT1"]) == 0
    fp = load_meta(tmp_path / "data" / "Fluo-N2DH-GOWT1")["fingerprint"]
    obj = fp["objects"]
    assert fp["n_slices"] == 3 and fp["image_size"]["height"]["median"] == 1024 and fp["intensity"]["dtype"] == "uint8"
    assert 40 <= obj["count"] <= 100
    assert 30 <= obj["diameter"]["median"] <= 100 and 1000 <= obj["area"]["median"] <= 8000
    assert obj["touching_fraction"] < 0.3  # nuclei barely touch
    plan = data_plan(load_config(cfg_path), "Fluo-N2DH-GOWT1")
    pp = plan.postprocess()
    assert max(pp["search"]["min_size"]) < obj["area"]["p5"] and 1.0 <= pp["h"] <= 5.0
    assert plan.value("train.patch_size") == 256 and 2.0 <= plan.value("weights.sigma") <= 5.0
    out = tmp_path / "plan.json"
    assert main(["plan", "--config", str(cfg_path), "--dataset", "Fluo-N2DH-GOWT1", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert {s["key"]: s["source"] for s in doc["settings"]} == {k: "data" for k in PLANNED_KEYS
                                                                if k != "target.boundary_width"}


def test_fingerprint_computed_lazily_for_an_old_dataset(tmp_path, capsys):
    ds = _write_dataset(tmp_path / "ds", [_discs(128, 8, 32)])
    meta_path = ds / "meta.json"
    meta = json.loads(meta_path.read_text())
    stored = meta.pop("fingerprint")
    meta_path.write_text(json.dumps(meta))  # as ingested before fingerprints existed
    before = meta_path.read_text()
    capsys.readouterr()
    plan = data_plan(_cfg(), "ds", ds_dir=ds)
    assert plan.setting("postprocess.min_size").source == "data"
    assert plan.fingerprint == stored
    assert "has no fingerprint" in capsys.readouterr().err
    assert meta_path.read_text() == before  # meta.json is left as it was (no rerun of what depends on it)
    assert ensure_fingerprint(ds, meta) == stored  # once per process: no second message
    assert capsys.readouterr().err == ""


def test_seg_plan_prints_values_and_sources(tmp_path, capsys):
    ds = _write_dataset(tmp_path / "data" / "ds", [_discs(128, 8, 32)])
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({"data_dir": str(ds.parent), "datasets": {"ds": {"kind": "ctc"}},
                                        "variants": {"v": {"model": "unet"}}, "weights": {"sigma": 3.0}}))
    assert main(["plan", "--config", str(cfg_path), "--dataset", "ds"]) == 0
    out = capsys.readouterr().out
    assert "weights.sigma" in out and "config" in out and "data" in out and "median" in out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ") and "." in ln.split()[0]}
    assert set(lines) == set(PLANNED_KEYS) - {"target.boundary_width"}  # no three_class variant
    assert lines["weights.sigma"].split()[1:3] == ["3.0", "config"]


def test_checkpoint_selection_uses_the_planned_postprocessing(tmp_path):
    """CTC training picks its best checkpoint by val SEG after post-processing: with min_size and h
    unset that is the plan's (which keeps the ~50 px objects), never a fixed constant."""
    from seg.train.loop import train
    from toydata import tiny_config

    lab = _discs(64, 3.9, 16)
    ds = _write_dataset(tmp_path / "data" / "ds", [lab, lab], held_out=lab)
    cfg = tiny_config("ds", train={"iterations": 2, "val_every": 2, "loss": {"name": "ce"}})
    cfg["datasets"]["ds"]["kind"] = "ctc"
    cfg["postprocess"]["method"] = "watershed"
    summary = train(cfg, "ds", "tiny", tmp_path / "run", data_dir=ds.parent)
    plan = data_plan(cfg, "ds", ds_dir=ds)
    assert summary["val_criterion"] == "seg"
    assert summary["val_postprocess"]["min_size"] == plan.value("postprocess.min_size") < object_areas(lab).min()
    assert summary["val_postprocess"]["h"] == plan.value("postprocess.h")
    cfg["postprocess"]["min_size"] = 3  # the config wins
    summary = train(cfg, "ds", "tiny", tmp_path / "run2", data_dir=ds.parent)
    assert summary["val_postprocess"]["min_size"] == 3


def test_report_plans_say_when_a_dataset_is_not_ingested(tmp_path):
    from seg.report.outputs import dataset_plans, plans_markdown

    _write_dataset(tmp_path / "ds", [_discs(64, 6, 32)])
    cfg = validate_config({"datasets": {"ds": {"kind": "ctc"}, "gone": {"kind": "ctc"}},
                           "variants": {"v": {"model": "unet"}}})
    plans = dataset_plans(cfg, ["ds", "gone", "unconfigured"], tmp_path)
    assert set(plans) == {"ds", "gone"} and plans["gone"] is None
    assert {s["source"] for s in plans["ds"]["settings"]} == {"data"}
    md = plans_markdown(plans)
    assert "**gone**: not ingested here" in md and "train.patch_size 64 (data)" in md
