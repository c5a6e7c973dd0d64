"""seg.models.pretrain / ``seg pretrain``: patch sampling, outputs, determinism, weight transfer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from seg.settings import validate_config
from seg.errors import SegError
from seg.models import build_model, load_encoder_weights, load_pretrained_encoder
from seg.models.pretrain import run_pretrain
from seg.models.pretrain_tasks import balanced_centres, extract_patches

TINY_UNET = {"base_channels": 4, "depth": 2}
SPLITS = ["train"] * 4 + ["val", "test"]


@pytest.fixture(scope="module")
def isbi_mini(isbi_stacks, tmp_path_factory):
    """Canonical ISBI dataset of six real 96x96 crops: slices 0-3 train, 4 val, 5 test."""
    from seg.data.canonical import canonical_writer
    from seg.kinds import get_kind

    root = tmp_path_factory.mktemp("data")
    with canonical_writer(root / "isbi", name="isbi", kind=get_kind("isbi2012"), source={}) as w:
        for i, split in enumerate(SPLITS):
            crop = (i, slice(200, 296), slice(100, 196))
            w.add(f"train_{i:02d}", isbi_stacks["train"][crop], split=split, frame=i,
                  semantic=(isbi_stacks["labels"][crop] > 0).astype(np.uint8))
    return root


def _cfg(data_dir, **pretrain):
    return validate_config({
        "datasets": {"isbi": {"kind": "isbi2012"}}, "variants": {"u": {"model": "unet"}},
        "data_dir": str(data_dir), "seed": 3,
        "pretrain": {"iterations": 3, "batch_size": 8, "patch_size": 32, **pretrain},
    })


def test_balanced_centres_and_patches():
    rng = np.random.default_rng(0)
    sem = [np.zeros((20, 30), np.uint8), np.zeros((25, 10), np.uint8)]
    sem[0][5:8, 3:9] = 1
    sem[1][20, 4] = 1
    centres, labels = balanced_centres(sem, 101, 2, rng)
    assert abs(int((labels == 1).sum()) - int((labels == 0).sum())) <= 1
    assert all(sem[i][y, x] == c for (i, y, x), c in zip(centres, labels))
    assert {tuple(c) for c, lab in zip(centres, labels) if lab == 1} <= (
        {(0, y, x) for y in range(5, 8) for x in range(3, 9)} | {(1, 20, 4)})
    img = [np.arange(20 * 30, dtype=np.float32).reshape(20, 30), np.ones((25, 10), np.float32)]
    p = 8
    padded = [np.pad(a, p // 2, mode="reflect") for a in img]
    patches = extract_patches(padded, centres, p)
    assert patches.shape == (101, 1, p, p)
    assert all(patches[k, 0, p // 2, p // 2] == img[i][y, x] for k, (i, y, x) in enumerate(centres))
    with pytest.raises(SegError, match="fewer than two classes"):
        balanced_centres([np.zeros((4, 4), np.uint8)], 4, 2, rng)


def test_pretrain_unet_writes_outputs_and_encoder_loads(isbi_mini, tmp_path):
    cfg = _cfg(isbi_mini)
    s = run_pretrain(cfg, "isbi", "unet", tmp_path / "a", encoder_params=TINY_UNET, eval_patches=32)
    for f in ("encoder.pt", "pretrain_summary.json", "curve.png"):
        assert (tmp_path / "a" / f).is_file()
    assert (tmp_path / "a" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no temp files left
    summ = json.loads((tmp_path / "a" / "pretrain_summary.json").read_text())
    assert summ == json.loads(json.dumps(s))
    assert summ["iterations"] == 3 and len(summ["loss"]) == 3 and summ["seed"] == 3
    assert 0.0 <= summ["held_out_accuracy"] <= 1.0 and summ["held_out"]["patches"] == 32
    assert summ["held_out"]["per_class"] == [16, 16]  # balanced held-out patches
    # held-out patches come from training-split slices only, disjoint from the ones trained on
    held, trained = set(summ["held_out"]["ids"]), set(summ["held_out"]["train_ids"])
    assert held and not held & trained and held | trained == {f"train_{i:02d}" for i in range(4)}
    assert summ["eval"][0]["iteration"] == 0 and summ["eval"][-1]["iteration"] == 3
    # encoder.pt is a state dict for model.encoder: strict load and the reporting loader agree
    sd = torch.load(tmp_path / "a" / "encoder.pt", map_location="cpu", weights_only=True)
    seg_model = build_model("unet", padding="valid", **TINY_UNET)
    seg_model.encoder.load_state_dict(sd)
    keys = load_pretrained_encoder(build_model("unet", **TINY_UNET), tmp_path / "a" / "encoder.pt")
    assert sorted(keys) == sorted(sd) == sorted(seg_model.encoder.state_dict())
    for k, v in seg_model.encoder.state_dict().items():
        assert torch.equal(v, sd[k])
    # the wrong architecture is refused with a message, not silently half-loaded
    with pytest.raises(SegError, match="shape|missing"):
        load_encoder_weights(build_model("unet", base_channels=8, depth=2), sd)


def test_pretrain_is_seeded(isbi_mini, tmp_path):
    cfg = _cfg(isbi_mini, iterations=2)
    a = run_pretrain(cfg, "isbi", "unet", tmp_path / "a", encoder_params=TINY_UNET, eval_patches=16)
    b = run_pretrain(cfg, "isbi", "unet", tmp_path / "b", encoder_params=TINY_UNET, eval_patches=16)
    assert a["loss"] == b["loss"] and a["eval"] == b["eval"]
    sa = torch.load(tmp_path / "a" / "encoder.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "encoder.pt", weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    cfg["seed"] = 4
    c = run_pretrain(cfg, "isbi", "unet", tmp_path / "c", encoder_params=TINY_UNET, eval_patches=16)
    assert c["loss"] != a["loss"]


def test_pretrain_runs_in_the_chosen_precision(isbi_mini, tmp_path, native_bf16):
    """pretrain.amp auto follows the native-bf16 answer (forced both ways here); none is fp32."""
    auto = run_pretrain(_cfg(isbi_mini, iterations=1), "isbi", "unet", tmp_path / "auto",
                        encoder_params=TINY_UNET, eval_patches=8, eval_points=1)
    assert auto["precision"]["amp"] == ("bf16" if native_bf16 else "fp32")
    assert auto["precision"]["source"] == f"SEG_NATIVE_BF16={int(native_bf16)}"
    plain = run_pretrain(_cfg(isbi_mini, iterations=1, amp="none"), "isbi", "unet", tmp_path / "none",
                         encoder_params=TINY_UNET, eval_patches=8, eval_points=1)
    assert plain["precision"]["amp"] == "fp32" and plain["precision"]["source"] == "config"
    assert all(np.isfinite(auto["loss"]))
    if native_bf16:  # bf16 autocast was really on: the first loss already differs from fp32's
        assert auto["loss"] != plain["loss"]


def test_pretrain_resnet18_loads_into_unet_resnet18_and_fcn(isbi_mini, tmp_path):
    cfg = _cfg(isbi_mini, iterations=2, batch_size=4)
    run_pretrain(cfg, "isbi", "resnet18", tmp_path, eval_patches=8, eval_points=1)
    sd = torch.load(tmp_path / "encoder.pt", map_location="cpu", weights_only=True)
    for name, params in (("unet-resnet18", {}), ("fcn8s", {"backbone": "resnet18"})):
        model = build_model(name, **params)
        model.encoder.load_state_dict(dict(sd))  # strict
        fresh = build_model(name, **params)
        assert len(load_encoder_weights(fresh, sd)) == len(fresh.encoder.state_dict()) == len(sd)
        assert all(torch.equal(v, sd[k]) for k, v in fresh.encoder.state_dict().items())


def test_seg_pretrain_cli(isbi_mini, tmp_path):
    import yaml

    from seg.cli import main

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "datasets": {"isbi": {"kind": "isbi2012"}},
        "variants": {"u": {"model": "unet", "params": {**TINY_UNET, "padding": "valid"}, "pretrained": "inhouse"}},
        "pretrain": {"iterations": 2, "batch_size": 4, "patch_size": 32},
    }))
    out = tmp_path / "out"
    argv = ["pretrain", "--config", str(cfg_file), "--dataset", "isbi", "--encoder", "unet",
            "--params", json.dumps(TINY_UNET), "--out", str(out), "--data-dir", str(isbi_mini)]
    assert main(argv) == 0
    assert {p.name for p in out.iterdir()} == {"encoder.pt", "pretrain_summary.json", "curve.png"}
    assert json.loads((out / "pretrain_summary.json").read_text())["iterations"] == 2
    assert main(argv[:4] + ["nope"] + argv[5:]) == 2  # unknown dataset: one-line error, status 2
    # --variant takes the encoder and its params from the config; the weights fit that variant
    argv = ["pretrain", "--config", str(cfg_file), "--dataset", "isbi", "--variant", "u", "--out", str(out / "v"),
            "--data-dir", str(isbi_mini), "--iterations", "1"]
    assert main(argv) == 0
    model = build_model("unet", **TINY_UNET, padding="valid")
    assert len(load_pretrained_encoder(model, out / "v" / "encoder.pt")) == len(model.encoder.state_dict())
    assert main(["models", "--name", "unet", "--params", json.dumps(TINY_UNET)]) == 0


def test_pretrain_refuses_too_few_training_slices(isbi_stacks, tmp_path):
    from seg.data.canonical import canonical_writer
    from seg.kinds import get_kind

    with canonical_writer(tmp_path / "isbi", name="isbi", kind=get_kind("isbi2012"), source={}) as w:
        for i, split in enumerate(["train", "val"]):
            w.add(f"train_{i:02d}", isbi_stacks["train"][i, :64, :64], split=split, frame=i,
                  semantic=(isbi_stacks["labels"][i, :64, :64] > 0).astype(np.uint8))
    with pytest.raises(SegError, match=">= 2 annotated training slices"):
        run_pretrain(_cfg(tmp_path), "isbi", "unet", tmp_path / "o", encoder_params=TINY_UNET)


def test_pretrain_imagefolder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, level in (("dark", 40), ("bright", 200)):
        (tmp_path / "folder" / cls).mkdir(parents=True)
        for k in range(4):
            rgb = np.clip(rng.normal(level, 20, (40, 50, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(rgb).save(tmp_path / "folder" / cls / f"{k}.png")
    cfg = _cfg(tmp_path, task="imagefolder", imagefolder=str(tmp_path / "folder"), held_out_fraction=0.25)
    s = run_pretrain(cfg, "isbi", "unet", tmp_path / "out", encoder_params=TINY_UNET, eval_patches=2)
    assert s["classes"] == ["bright", "dark"] and s["task_name"] == "imagefolder"
    assert len(s["held_out"]["ids"]) == 2 and all(i.endswith(".png") for i in s["held_out"]["ids"])
    sd = torch.load(tmp_path / "out" / "encoder.pt", weights_only=True)
    build_model("unet", **TINY_UNET).encoder.load_state_dict(sd)


@pytest.mark.slow
def test_pretrain_learns_membrane_vs_interior(isbi_mini, tmp_path):
    cfg = _cfg(isbi_mini, iterations=150, batch_size=16, patch_size=32, lr=3e-3)
    s = run_pretrain(cfg, "isbi", "unet", tmp_path, encoder_params={"base_channels": 8, "depth": 2},
                     eval_patches=256, eval_points=3)
    assert s["held_out_accuracy"] > 0.7, s["eval"]
    assert np.mean(s["loss"][-20:]) < np.mean(s["loss"][:20])
