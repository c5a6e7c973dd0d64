"""amp: auto by measurement (seg.precision): the decision rule, the per-machine cache, no side
effects on the model or the random stream, one probe among concurrent processes, and where the
choice is recorded. Timings are faked where a verdict is asserted, so no assertion depends on the
CPU the suite runs on; one test times a real model and checks only what holds on every CPU."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from seg.errors import SegError

CPU = torch.device("cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty precision cache of its own, no forced native-bf16 answer, no in-process memo."""
    import seg.precision as sp

    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SEG_NATIVE_BF16", raising=False)
    monkeypatch.setattr(sp, "_MEMO", {})
    return tmp_path / "cache"


def tiny_unet():
    from seg.models import build_model

    torch.manual_seed(0)
    return build_model("unet", padding="same", base_channels=4, depth=2, batch_norm=True)


def fake_timer(monkeypatch, fp32_s: float, bf16_s: float) -> list:
    """Replace the timed call: fp32 takes ``fp32_s``, bf16 ``bf16_s``; returns the list of calls."""
    import seg.precision as sp

    calls = []

    def one_call(model, x, mode, bf16):
        calls.append((mode, bf16, tuple(x.shape)))
        return bf16_s if bf16 else fp32_s

    monkeypatch.setattr(sp, "_one_call", one_call)
    return calls


@pytest.mark.parametrize("fp32_s, bf16_s, expected", [(1.0, 0.5, "bf16"), (1.0, 1.4, "fp32"),
                                                        (1.0, 0.97, "fp32"), (1.0, 0.95, "bf16")])
def test_the_faster_precision_wins_and_a_near_tie_stays_fp32(cache, monkeypatch, fp32_s, bf16_s, expected):
    from seg.precision import MARGIN, choose_precision

    calls = fake_timer(monkeypatch, fp32_s, bf16_s)
    choice = choose_precision(tiny_unet(), (4, 1, 64, 64), mode="train")
    assert choice.dtype == expected and choice.source == "measured"
    assert choice.ratio == pytest.approx(fp32_s / bf16_s, abs=1e-4)
    assert (choice.ratio >= MARGIN) == (expected == "bf16")
    # one warm-up call of each precision, then 3 paired rounds on the run's own input shape
    assert len(calls) == 8 and sum(b for _, b, _ in calls) == 4
    assert {s for _, _, s in calls} == {(4, 1, 64, 64)} and {m for m, _, _ in calls} == {"train"}


def test_the_cache_decides_every_later_run_on_this_machine(cache, monkeypatch):
    import seg.precision as sp
    from seg.precision import choose_precision

    fake_timer(monkeypatch, 1.0, 0.6)
    first = choose_precision(tiny_unet(), (2, 1, 64, 64), mode="infer")
    doc = json.loads(sp.cache_file().read_text())
    assert sp.cache_file().parent == cache and doc["cpu"] == sp.cpu_model() and doc["torch"] == torch.__version__
    entry = doc["entries"][first.key]
    assert entry["choice"] == "bf16" and entry["mode"] == "infer" and entry["shape"] == [2, 1, 64, 64]
    # a new process (no memo) with any timings reads the cache: no call is timed
    monkeypatch.setattr(sp, "_MEMO", {})
    calls = fake_timer(monkeypatch, 1.0, 9.0)
    again = choose_precision(tiny_unet(), (2, 1, 64, 64), mode="infer")
    assert calls == [] and again.source == "cache" and again.dtype == "bf16" and again.ratio == first.ratio
    # another shape, mode or architecture is another entry, measured on its own
    assert choose_precision(tiny_unet(), (2, 1, 64, 64), mode="train").dtype == "fp32"
    assert len(calls) == 8
    # another CPU model (or torch version) is another file
    monkeypatch.setattr(sp, "cpu_model", lambda: "Another CPU")
    monkeypatch.setattr(sp, "_MEMO", {})
    assert choose_precision(tiny_unet(), (2, 1, 64, 64), mode="infer").source == "measured"
    assert len(list(cache.glob("precision-*.json"))) == 2


def test_a_corrupt_cache_is_named(cache, monkeypatch):
    import seg.precision as sp

    cache.mkdir(parents=True)
    sp.cache_file().write_text("{not json")
    fake_timer(monkeypatch, 1.0, 0.5)
    with pytest.raises(SegError, match=r"precision-[0-9a-f]{12}\.json: unreadable precision cache"):
        sp.choose_precision(tiny_unet(), (2, 1, 32, 32))


def test_the_real_probe_leaves_the_model_and_random_stream_alone(cache):
    """A real timing of a tiny U-Net (whatever this CPU's verdict): the caller's weights, batch-norm
    statistics and gradients are untouched and the global random stream continues as without it."""
    from seg.precision import measure

    model = tiny_unet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    result = measure(model, (2, 1, 32, 32), "train", rounds=1)
    assert torch.equal(torch.rand(3), expected_next)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert result["fp32_s"] > 0 and result["bf16_s"] > 0 and result["ratio"] > 0
    with pytest.raises(SegError, match="mode 'eval' is not one of"):
        measure(model, (2, 1, 32, 32), "eval")


def test_concurrent_processes_probe_once(cache, tmp_path):
    """Two processes asking at once (Snakemake's parallel jobs): the file lock makes one measure and
    the other read its answer."""
    script = textwrap.dedent("""
        import time, torch, seg.precision as sp
        from seg.models import build_model
        def slow(model, x, mode, bf16):
            time.sleep(0.05)
            return 0.5 if bf16 else 1.0
        sp._one_call = slow
        m = build_model("unet", padding="same", base_channels=4, depth=2)
        print(sp.choose_precision(m, (2, 1, 32, 32)).source)
    """)
    env = {**__import__("os").environ, "SEG_CACHE_DIR": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    sources = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert sources == ["cache", "measured"]


def test_auto_asks_the_probe_only_where_bf16_is_native(cache, monkeypatch):
    import seg.device as dev

    model, shape = tiny_unet(), (2, 1, 32, 32)
    monkeypatch.setattr(dev, "_probe_native_bf16", lambda: False)
    calls = fake_timer(monkeypatch, 1.0, 0.5)
    assert dev.resolve_amp(CPU, "auto", model=model, shape=shape) == (None, "no native bf16", None)
    assert calls == []  # emulated bf16 is never timed
    monkeypatch.setattr(dev, "_probe_native_bf16", lambda: True)
    prec = dev.precision_for({"amp": "auto"}, CPU, model=model, shape=shape)
    assert prec.dtype == torch.bfloat16 and prec.source == "measured" and prec.ratio == pytest.approx(2.0)
    assert prec.record() == {"amp": "bf16", "source": "measured", "bf16_vs_fp32_speed": 2.0,
                             "channels_last": True}
    with pytest.raises(SegError, match="train.amp: 'auto' on this CPU times the model"):
        dev.precision_for({"amp": "auto"}, CPU)
    # SEG_NATIVE_BF16 and explicit values decide without timing
    calls.clear()
    monkeypatch.setenv("SEG_NATIVE_BF16", "0")
    assert dev.resolve_amp(CPU, "auto", model=model, shape=shape) == (None, "SEG_NATIVE_BF16=0", None)
    monkeypatch.setenv("SEG_NATIVE_BF16", "1")
    assert dev.resolve_amp(CPU, "auto") == (torch.bfloat16, "SEG_NATIVE_BF16=1", None)
    assert dev.resolve_amp(CPU, "none", model=model, shape=shape) == (None, "config", None)
    assert calls == []


@pytest.fixture(scope="module")
def toy_ds(tmp_path_factory):
    from toydata import write_blob_dataset

    return write_blob_dataset(tmp_path_factory.mktemp("data") / "toy", seed=3)


def test_training_records_the_choice_and_the_leaderboard_shows_it(cache, monkeypatch, tmp_path, toy_ds, one_thread):
    """A training run with amp auto on a (pretended) native-bf16 CPU where bf16 is slower: the probe
    times the run's own batch shape before the first step, the run trains in fp32 bit for bit like
    ``amp: none`` (the probe consumed no random numbers and touched no weight), and
    train_summary.json and the leaderboard's device say what was chosen and why. A rerun reads the
    cache."""
    import seg.device as dev
    import seg.precision as sp
    from seg.report.leaderboard import device_label
    from seg.train.loop import train
    from toydata import tiny_config

    monkeypatch.setattr(dev, "_probe_native_bf16", lambda: True)
    calls = fake_timer(monkeypatch, 1.0, 1.3)  # bf16 slower here: auto must train in fp32

    def run(name: str, amp: str) -> dict:
        cfg = tiny_config(train={"iterations": 2, "val_every": 2, "amp": amp})
        return train(cfg, "toy", "tiny", tmp_path / name, data_dir=toy_ds.parent)

    auto = run("auto", "auto")
    size = auto["patch_input_size"]
    assert {(m, s) for m, _, s in calls} == {("train", (2, 1, size, size))}
    assert auto["amp"] == "fp32" and auto["precision"]["source"] == "measured"
    assert auto["precision"]["bf16_vs_fp32_speed"] == pytest.approx(1 / 1.3, abs=1e-3)
    plain = run("none", "none")
    assert plain["precision"] == {"amp": "fp32", "source": "config", "bf16_vs_fp32_speed": None,
                                  "channels_last": True}
    assert auto["rank_param_sha256"] == plain["rank_param_sha256"]
    monkeypatch.setattr(sp, "_MEMO", {})
    assert run("again", "auto")["precision"]["source"] == "cache"
    label = device_label(auto)
    assert label.startswith("cpu (") and label.endswith(", fp32 (measured, bf16/fp32 speed 0.77)")
    assert device_label(plain).endswith(", fp32 (config)")
