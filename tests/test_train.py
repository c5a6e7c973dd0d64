"""Training: schedules, losses, patch sampling, checkpoints, and reproducible end-to-end runs."""

from __future__ import annotations

import contextlib
import csv
import math
import os
import warnings

import numpy as np
import pytest
import torch

from seg.errors import SegError
from seg.train import checkpoint as ckpt
from seg.train.losses import build_loss, center_crop, cross_entropy, soft_dice, weighted_cross_entropy
from seg.train.optim import build_optimizer, build_scheduler, lr_factor
from seg.train.sampling import IterationBatchSampler, PatchDataset, PatchGeometry, load_training_slices


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- schedules, optimisers
def test_lr_schedules():
    T = 100
    assert [lr_factor(i, T, name="constant") for i in (0, 50, 99)] == [1.0, 1.0, 1.0]
    # linear warm-up then cosine to zero
    w = [lr_factor(i, T, name="cosine", warmup=10) for i in range(T + 1)]
    assert w[0] == pytest.approx(1 / 11) and w[9] == pytest.approx(10 / 11 * 1.0)
    assert all(a < b for a, b in zip(w[:10], w[1:11]))
    assert w[10] == pytest.approx(1.0) and w[T] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(w[10:], w[11:]))
    assert [lr_factor(i, T, name="step", step_size=30, gamma=0.5) for i in (0, 29, 30, 60, 99)] == [1, 1, 0.5, 0.25, 0.125]
    oc = [lr_factor(i, T, name="onecycle", warmup=20) for i in range(T + 1)]
    assert oc[0] == pytest.approx(1 / 25) and max(oc) == pytest.approx(1.0) and int(np.argmax(oc)) == 20
    assert oc[-1] == pytest.approx(1 / 25e4)
    with pytest.raises(SegError, match="schedule.name"):
        lr_factor(0, 10, name="linear")


def test_scheduler_steps_and_resumes_exactly():
    p = [torch.nn.Parameter(torch.zeros(3))]
    opt = build_optimizer(p, {"name": "sgd", "lr": 0.1, "momentum": 0.99})
    assert opt.param_groups[0]["momentum"] == 0.99
    sch = build_scheduler(opt, {"name": "cosine", "warmup": 3}, total=20)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    assert lrs[0] == pytest.approx(0.1 / 4) and lrs[3] == pytest.approx(0.1 * lr_factor(3, 20, warmup=3))
    # state dict -> fresh scheduler continues identically (weights_only-safe round trip)
    import io

    buf = io.BytesIO()
    torch.save({"s": sch.state_dict(), "o": opt.state_dict()}, buf)
    buf.seek(0)
    st = torch.load(buf, weights_only=True)
    opt2 = build_optimizer(p, {"name": "sgd", "lr": 0.1})
    sch2 = build_scheduler(opt2, {"name": "cosine", "warmup": 3}, total=20)
    opt2.load_state_dict(st["o"])
    sch2.load_state_dict(st["s"])
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(0.1 * lr_factor(8, 20, warmup=3))
    with pytest.raises(SegError, match="optimizer.name"):
        build_optimizer(p, {"name": "lbfgs"})


# ----------------------------------------------------------------------------- losses
def test_weighted_ce_matches_definition_and_weights_matter():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, generator=g)
    target = torch.randint(0, 2, (2, 8, 8), generator=g)
    ones = torch.ones(2, 8, 8)
    assert weighted_cross_entropy(logits, target, ones).item() == pytest.approx(cross_entropy(logits, target).item(), rel=1e-6)
    w = torch.rand(2, 8, 8, generator=g) * 10
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    assert weighted_cross_entropy(logits, target, w).item() == pytest.approx(((w * ce).sum() / w.sum()).item(), rel=1e-5)
    # a pixel with a huge weight dominates the loss
    w2 = ones.clone()
    w2[0, 3, 3] = 1e6
    assert weighted_cross_entropy(logits, target, w2).item() == pytest.approx(ce[0, 3, 3].item(), rel=1e-3)


def test_loss_on_valid_output_window_center_crops_targets():
    target = torch.zeros(1, 12, 12, dtype=torch.long)
    target[:, 4:8, 4:8] = 1  # the central 4x4 window is all class 1
    logits = torch.zeros(1, 2, 4, 4)
    logits[:, 1] = 10.0  # confident class 1 everywhere
    assert cross_entropy(logits, target).item() < 1e-3
    assert weighted_cross_entropy(logits, target, torch.ones(1, 12, 12)).item() < 1e-3
    assert center_crop(torch.arange(36).reshape(6, 6), (2, 2)).tolist() == [[14, 15], [20, 21]]
    with pytest.raises(SegError):
        center_crop(torch.zeros(5, 5), (2, 2))


def test_dice_and_build_loss():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, :4] = 1
    perfect = torch.stack([(target == 0).float(), (target == 1).float()], 1) * 20
    assert soft_dice(perfect, target).item() < 1e-3
    assert soft_dice(-perfect, target).item() > 0.9
    f = build_loss({"name": "wce_dice", "dice_weight": 0.5})
    w = torch.ones(1, 8, 8)
    assert f(perfect, target, w).item() == pytest.approx(
        weighted_cross_entropy(perfect, target, w).item() + 0.5 * soft_dice(perfect, target).item(), rel=1e-5)
    with pytest.raises(SegError, match="weight"):
        build_loss({"name": "wce"})(perfect, target, None)
    with pytest.raises(SegError, match="loss.name"):
        build_loss({"name": "focal"})


# ----------------------------------------------------------------------------- sampling
@pytest.fixture(scope="module")
def toy_ds(tmp_path_factory):
    from toydata import write_blob_dataset

    return write_blob_dataset(tmp_path_factory.mktemp("data") / "toy", seed=3)


def test_patch_windows_match_slice_geometry_without_augmentation(toy_ds):
    slices = load_training_slices(toy_ds, "train")
    geo = PatchGeometry(input_size=48, output_size=24)  # a valid-padding model with border 12
    ds = PatchDataset(slices, geo, augment_cfg=None, seed=0)
    for index in range(20):
        k, (top, left), _ = ds.window(index)
        s = ds[index]
        assert s["image"].shape == (1, 48, 48) and s["image"].dtype == torch.float32
        assert s["target"].shape == (24, 24) and s["target"].dtype == torch.int64
        assert s["weights"].shape == (24, 24)
        src = slices[k]
        np.testing.assert_array_equal(s["target"].numpy(), src["target"][top : top + 24, left : left + 24])
        np.testing.assert_array_equal(s["weights"].numpy(), src["weights"][top : top + 24, left : left + 24])
        # the image's central output window is the same pixels; the border is mirrored context
        np.testing.assert_array_equal(s["image"][0, 12:36, 12:36].numpy(), src["image"][top : top + 24, left : left + 24])
    # a window at the slice's top-left corner sees the mirror image of the slice beyond the edge
    img = slices[0]["image"]
    padded = ds.slices[0].image
    p = ds.pad
    np.testing.assert_array_equal(padded[p - 5, p : p + 10], img[5, :10])
    np.testing.assert_array_equal(padded[p : p + 10, p - 3], img[:10, 3])


def test_patches_are_deterministic_per_index_and_augmented(toy_ds):
    slices = load_training_slices(toy_ds, "train")
    geo = PatchGeometry(32, 32)
    a = PatchDataset(slices, geo, augment_cfg={"elastic": {"sigma": 4.0}}, seed=7)
    b = PatchDataset(slices, geo, augment_cfg={"elastic": {"sigma": 4.0}}, seed=7)
    c = PatchDataset(slices, geo, augment_cfg={"elastic": {"sigma": 4.0}}, seed=8)
    for i in (0, 5, 123):
        for key in ("image", "target", "weights"):
            assert torch.equal(a[i][key], b[i][key])
    assert not torch.equal(a[0]["image"], a[1]["image"])
    assert not torch.equal(a[0]["image"], c[0]["image"])
    # augmentation changes the patch relative to the plain crop at the same window
    plain = PatchDataset(slices, geo, augment_cfg=None, seed=7)
    assert sum(not torch.equal(a[i]["image"], plain[i]["image"]) for i in range(8)) >= 6
    assert set(np.unique(a[0]["target"].numpy())) <= {0, 1}


def test_border_sampling_centres_on_high_weights(toy_ds):
    slices = load_training_slices(toy_ds, "train")
    geo = PatchGeometry(16, 16)
    uni = PatchDataset(slices, geo, augment_cfg=None, seed=0, border_sampling=0.0)
    bor = PatchDataset(slices, geo, augment_cfg=None, seed=0, border_sampling=1.0)

    def centre_weight(ds):
        return np.mean([ds[i]["weights"][6:10, 6:10].max().item() for i in range(60)])

    assert centre_weight(bor) > 1.5 * centre_weight(uni)


def test_iteration_sampler_splits_the_global_batch_across_ranks():
    single = list(IterationBatchSampler(3, 6, 4))
    r0 = list(IterationBatchSampler(3, 6, 2, rank=0, world_size=2))
    r1 = list(IterationBatchSampler(3, 6, 2, rank=1, world_size=2))
    assert single[0] == [12, 13, 14, 15] and len(single) == 3
    for s, a, b in zip(single, r0, r1):
        assert s == a + b and not set(a) & set(b)


def test_missing_weight_maps_is_a_clear_error(tmp_path):
    from toydata import write_blob_dataset

    ds = write_blob_dataset(tmp_path / "d", seed=0, splits=(1, 0, 0))
    (ds / "weights" / "train_00.tif").unlink()
    with pytest.raises(SegError, match="weights/train_00.tif"):
        load_training_slices(ds, "train", with_weights=True)
    assert load_training_slices(ds, "train", with_weights=False)[0]["weights"] is None


# ----------------------------------------------------------------------------- checkpoints
def test_rng_state_roundtrip_weights_only(tmp_path):
    import random

    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leave a cached gaussian state in numpy's legacy generator
    state = ckpt.rng_state()
    ckpt.save_checkpoint(tmp_path / "c.pt", {"model": {}, "rng": state})
    expect = (random.random(), np.random.normal(), torch.rand(3))
    loaded = ckpt.read_training_checkpoint(tmp_path / "c.pt")  # weights_only=True inside
    ckpt.set_rng_state(loaded["rng"])
    got = (random.random(), np.random.normal(), torch.rand(3))
    assert got[0] == expect[0] and got[1] == expect[1] and torch.equal(got[2], expect[2])


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ck" / "last.pt"
    ckpt.save_checkpoint(path, {"model": {"w": torch.ones(2)}, "iteration": 1})

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(path, {"model": {"w": torch.zeros(2)}, "iteration": 2})
    assert ckpt.read_training_checkpoint(path)["iteration"] == 1
    assert os.listdir(path.parent) == ["last.pt"]
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SegError, match="bad.pt"):
        ckpt.read_training_checkpoint(tmp_path / "bad.pt")


def test_device_and_amp_selection(native_bf16):
    from seg.device import precision_for, resolve_device

    cpu = torch.device("cpu")

    def amp_dtype(amp: str) -> torch.dtype | None:  # the train side's autocast dtype for train.amp
        return precision_for({"amp": amp}, cpu).dtype

    assert resolve_device("cpu") == cpu
    assert amp_dtype("none") is None  # fp32 whatever the CPU
    # auto: bf16 only where the CPU does it natively (emulated bf16 is slower than fp32).
    assert amp_dtype("auto") == (torch.bfloat16 if native_bf16 else None)
    if native_bf16:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert amp_dtype("bf16") == torch.bfloat16
    else:
        with pytest.warns(RuntimeWarning, match="emulated") as record:
            assert precision_for({"amp": "bf16"}, cpu).dtype == torch.bfloat16
        # The warning points at the line that asked for the settings, not at seg/device.py.
        assert record[0].filename == __file__
    with pytest.raises(SegError, match="fp16"):
        amp_dtype("fp16")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(SegError, match="cuda"):
            resolve_device("cuda")


def test_native_bf16_probe_override(monkeypatch):
    from seg.device import _probe_native_bf16, cpu_has_native_bf16

    monkeypatch.delenv("SEG_NATIVE_BF16", raising=False)
    assert cpu_has_native_bf16() == _probe_native_bf16()  # unset: the CPU's own answer
    for value, expected in (("1", True), ("0", False)):
        monkeypatch.setenv("SEG_NATIVE_BF16", value)
        assert cpu_has_native_bf16() is expected
    monkeypatch.setenv("SEG_NATIVE_BF16", "yes")
    with pytest.raises(SegError, match="SEG_NATIVE_BF16='yes': must be 1 or 0"):
        cpu_has_native_bf16()


# ----------------------------------------------------------------------------- end to end
def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_training_is_bit_reproducible_and_writes_outputs(tmp_path, toy_ds):
    from seg.io import read_json
    from seg.train.loop import train
    from seg.train.records import LOG_COLUMNS
    from toydata import tiny_config

    cfg = tiny_config(train={"num_workers": 1, "iterations": 6, "border_sampling": 0.5})
    s1 = train(cfg, "toy", "tiny", tmp_path / "a", data_dir=toy_ds.parent)
    # the patches do not depend on the number of loader workers either (each index has its own generator)
    s2 = train(tiny_config(train={"num_workers": 0, "iterations": 6, "border_sampling": 0.5}),
               "toy", "tiny", tmp_path / "b", data_dir=toy_ds.parent)
    w1, w2 = _weights(tmp_path / "a/checkpoints/last.pt"), _weights(tmp_path / "b/checkpoints/last.pt")
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert s1["rank_param_sha256"] == s2["rank_param_sha256"]
    # a different seed gives different weights (the comparison above is not vacuous)
    s3 = train(tiny_config(seed=1, train={"num_workers": 1, "iterations": 6, "border_sampling": 0.5}),
               "toy", "tiny", tmp_path / "c", data_dir=toy_ds.parent)
    assert s3["rank_param_sha256"] != s1["rank_param_sha256"]

    summary = read_json(tmp_path / "a/train_summary.json")
    for key in ("iterations", "wall_time_s", "best_val_iou", "best_iteration", "samples_per_s", "peak_memory_mb",
                "device", "amp", "params", "versions", "seed", "config_hash", "model", "variant", "dataset",
                "effective_batch_size"):
        assert key in summary, key
    assert summary["iterations"] == 6 and summary["effective_batch_size"] == 2 and summary["amp"] == "fp32"
    assert 0.0 <= summary["best_val_iou"] <= 1.0 and summary["best_iteration"] in (3, 6)
    assert set(summary["versions"]) == {"torch", "monai", "smp", "seg"}
    with open(tmp_path / "a/train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == LOG_COLUMNS
    steps = [r for r in rows if r["val_iou"] == ""]
    vals = [r for r in rows if r["val_iou"] != ""]
    assert [int(r["iteration"]) for r in steps] == [1, 2, 3, 4, 5, 6]
    assert [int(r["iteration"]) for r in vals] == [3, 6]
    assert all(math.isfinite(float(r["loss"])) and 0 <= float(r["data_wait"]) <= 1 for r in steps)
    lrs = [float(r["lr"]) for r in steps]
    assert lrs[0] == pytest.approx(0.01 / 3, rel=1e-5) and lrs[2] == pytest.approx(0.01, rel=1e-5)  # warm-up 2, then cosine
    best = torch.load(tmp_path / "a/checkpoints/best.pt", weights_only=True)
    assert best["best_val_iou"] == summary["best_val_iou"]

    # the budget is complete: a rerun is a no-op (checkpoint untouched)
    mtime = os.stat(tmp_path / "a/checkpoints/last.pt").st_mtime_ns
    again = train(cfg, "toy", "tiny", tmp_path / "a", data_dir=toy_ds.parent)
    assert again["wall_time_s"] == summary["wall_time_s"]
    assert os.stat(tmp_path / "a/checkpoints/last.pt").st_mtime_ns == mtime


def test_real_isbi_valid_unet_wce_learns(tmp_path, isbi_stacks):
    """Real ISBI slices, the paper's valid-padding U-Net (tiny width) and weighted CE: the loss drops,
    the output window is smaller than the input, and the checkpoint loads with weights_only."""
    from seg.models import build_model
    from seg.train.loop import train
    from toydata import tiny_config, write_isbi_subset

    write_isbi_subset(tmp_path / "data/isbi", isbi_stacks["train"], isbi_stacks["labels"], splits=(3, 1, 0), crop=160)
    params = {"base_channels": 8, "depth": 2, "padding": "valid"}
    cfg = tiny_config("isbi", params=params, train={
        "iterations": 30, "batch_size": 4, "patch_size": 36, "val_every": 30, "checkpoint_every": 30, "log_every": 5,
        "optimizer": {"name": "adam", "lr": 3e-3}, "schedule": {"name": "constant"}, "loss": {"name": "wce"}})
    s = train(cfg, "isbi", "tiny", tmp_path / "out", data_dir=tmp_path / "data")
    assert s["patch_input_size"] > s["patch_output_size"] >= 36
    with open(tmp_path / "out/train_log.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f) if r["val_iou"] == ""]
    assert losses[-1] < 0.9 * losses[0], losses
    assert s["best_val_iou"] > 0.3
    model = build_model("unet", in_channels=1, classes=2, **params)
    model.load_state_dict(_weights(tmp_path / "out/checkpoints/best.pt"))


def test_budget_in_epochs_and_wall_clock_stop(tmp_path, toy_ds):
    from seg.io import read_json
    from seg.train.loop import train
    from toydata import tiny_config

    # epochs: 4 slices of 64^2 = 16 output patches of 32^2 = 8 steps of batch 2 per epoch
    s = train(tiny_config(train={"epochs": 2, "val_every": 100}), "toy", "tiny", tmp_path / "e", data_dir=toy_ds.parent)
    assert s["iterations_per_epoch"] == 8 and s["iterations"] == s["budget_iterations"] == 16
    # wall-clock budget: stops cleanly after the first step, with a final checkpoint and a summary
    cfg = tiny_config(train={"iterations": 1000, "max_minutes": 1e-6})
    s = train(cfg, "toy", "tiny", tmp_path / "m", data_dir=toy_ds.parent)
    assert s["stopped"] == "max_minutes" and s["iterations"] == 1 and s["amp"] == "fp32"
    assert torch.load(tmp_path / "m/checkpoints/last.pt", weights_only=True)["iteration"] == 1
    assert read_json(tmp_path / "m/train_summary.json")["stopped"] == "max_minutes"
    assert (tmp_path / "m/checkpoints/best.pt").is_file()
    # the (wall-clock) budget is complete: a rerun does nothing
    assert train(cfg, "toy", "tiny", tmp_path / "m", data_dir=toy_ds.parent)["iterations"] == 1


def test_training_precision_follows_the_native_bf16_probe(tmp_path, toy_ds, native_bf16):
    """amp auto trains in bf16 exactly where the CPU has native bf16; bf16 asked for on a CPU that
    only emulates it still runs but warns; amp none stays fp32 whatever the CPU."""
    from seg.train.loop import train
    from toydata import tiny_config

    def run(name: str, amp: str) -> dict:
        cfg = tiny_config(train={"iterations": 2, "val_every": 2, "amp": amp})
        return train(cfg, "toy", "tiny", tmp_path / name, data_dir=toy_ds.parent)

    assert run("auto", "auto")["amp"] == ("bf16" if native_bf16 else "fp32")
    assert run("none", "none")["amp"] == "fp32"
    with contextlib.nullcontext() if native_bf16 else pytest.warns(RuntimeWarning, match="emulated"):
        s = run("bf16", "bf16")
    assert s["amp"] == "bf16" and s["iterations"] == 2
    with open(tmp_path / "bf16" / "train_log.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f) if r["loss"]]
    assert losses and all(math.isfinite(v) for v in losses)
    # bf16 weights stay close to the fp32 run's (2 Adam steps of lr 0.01 move a weight by <= ~0.02)
    a, b = _weights(tmp_path / "bf16/checkpoints/last.pt"), _weights(tmp_path / "none/checkpoints/last.pt")
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 0.03


def test_pretrained_encoder_weights_are_loaded(tmp_path):
    from seg.models import build_model
    from seg.train.loop import build_training_model
    from toydata import tiny_config

    cfg = tiny_config()
    params = cfg["variants"]["tiny"]["params"]
    donor = build_model("unet", in_channels=1, classes=2, **params)
    torch.nn.init.constant_(donor.encoder.state_dict()[next(iter(donor.encoder.state_dict()))], 0.5)
    torch.save(donor.encoder.state_dict(), tmp_path / "encoder.pt")
    m = build_training_model(cfg, "toy", "tiny", 2, pretrained=tmp_path / "encoder.pt")
    for k, v in donor.encoder.state_dict().items():
        assert torch.equal(m.encoder.state_dict()[k], v), k
    # inhouse reads <results_dir>/<dataset>/pretrain/<encoder>/encoder.pt; a classic U-Net has no named encoder
    cfg["variants"]["tiny"]["pretrained"] = "inhouse"
    with pytest.raises(SegError, match="inhouse"):
        build_training_model(cfg, "toy", "tiny", 2)
    cfg["variants"]["tiny"]["pretrained"] = str(tmp_path / "missing.pt")
    with pytest.raises(SegError, match="missing.pt"):
        build_training_model(cfg, "toy", "tiny", 2)


def test_slices_smaller_than_the_patch_are_mirror_padded(tmp_path):
    from toydata import write_blob_dataset

    ds = write_blob_dataset(tmp_path / "small", seed=2, size=24, splits=(2, 0, 0))
    slices = load_training_slices(ds, "train")
    data = PatchDataset(slices, PatchGeometry(48, 32), augment_cfg=None, seed=0)
    for i in range(10):
        k, (top, left), _ = data.window(i)
        assert -8 <= top <= 0 and -8 <= left <= 0  # the 32 px window covers the whole 24 px slice
        s = data[i]
        assert s["image"].shape == (1, 48, 48) and s["target"].shape == (32, 32)
        np.testing.assert_array_equal(s["target"][-top : -top + 24, -left : -left + 24].numpy(), slices[k]["target"])


# ----------------------------------------------------------------------------- train.compile
def test_compile_falls_back_to_eager_when_compiling_fails(tmp_path, toy_ds, monkeypatch):
    """train.compile: a compiler that fails on the first step is reported once and the run trains
    eager from that very step: weights bit for bit those of a run without compile."""
    from seg.train.loop import train
    from toydata import tiny_config

    class Broken(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.inner = model

        def forward(self, x):
            raise RuntimeError("backend compiler failed: no C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda model, **kw: Broken(model))
    cfg = tiny_config(train={"iterations": 3, "val_every": 3, "compile": True})
    with pytest.warns(RuntimeWarning, match="train.compile: compiling tiny failed .*no C\\+\\+ compiler found"):
        s = train(cfg, "toy", "tiny", tmp_path / "c", data_dir=toy_ds.parent)
    assert s["compile"]["enabled"] and "RuntimeError: backend compiler failed" in s["compile"]["fallback"]
    plain = train(tiny_config(train={"iterations": 3, "val_every": 3}), "toy", "tiny", tmp_path / "e",
                  data_dir=toy_ds.parent)
    assert plain["compile"] == {"enabled": False}
    assert s["rank_param_sha256"] == plain["rank_param_sha256"]


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, toy_ds):
    """train.compile with the real compiler (inductor, tens of seconds on 2 cores): the run trains
    the same model as eager up to float rounding, and reruns are bit for bit the same."""
    from seg.train.loop import train
    from toydata import tiny_config

    runs = {}
    for name, comp in (("eager", False), ("compiled", True), ("again", True)):
        runs[name] = train(tiny_config(train={"iterations": 3, "val_every": 3, "compile": comp}), "toy", "tiny",
                           tmp_path / name, data_dir=toy_ds.parent)
    assert runs["compiled"]["compile"]["fallback"] is None and runs["compiled"]["compile"]["first_step_s"] > 0
    assert runs["compiled"]["rank_param_sha256"] == runs["again"]["rank_param_sha256"]
    a, b = _weights(tmp_path / "eager/checkpoints/last.pt"), _weights(tmp_path / "compiled/checkpoints/last.pt")
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-4
