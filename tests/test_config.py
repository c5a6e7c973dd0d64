"""Config validation: defaults are filled, unknown keys and bad values are named, variants resolve."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from seg.cli import main
from seg.config import config_hash, variant_section
from seg.settings import load_config, run_config_hash, validate_config
from seg.errors import SegError

ROOT = Path(__file__).resolve().parents[1]


def _minimal() -> dict:
    return {"datasets": {"isbi2012": {"kind": "isbi2012"}}, "variants": {"u": {"model": "unet"}}}


@pytest.mark.parametrize("name", ["config.yaml", "quick.yaml", "paper.yaml"])
def test_shipped_configs_validate(name):
    cfg = load_config(ROOT / "configs" / name)
    assert cfg["variants"] and cfg["datasets"]
    assert cfg["train"]["iterations"] >= 1


def test_defaults_are_filled_from_schema():
    cfg = validate_config(_minimal())
    # sigma and sparse_band: null = from the plan of each dataset (seg.settings.plan)
    assert cfg["weights"] == {"w0": 10.0, "sigma": None, "class_balance": True, "sparse_band": None}
    assert cfg["augment"]["elastic"] == {"enabled": True, "grid": 3, "sigma": 10.0, "prob": 1.0}
    assert cfg["train"]["optimizer"]["momentum"] == 0.99
    assert cfg["datasets"]["isbi2012"]["on_missing"] == "skip"
    assert cfg["variants"]["u"]["pretrained"] == "none"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c.update(trian={}), "trian: unknown key (allowed: augment,"),
        (lambda c: c.update(train={"optimiser": {}}), "train.optimiser: unknown key (allowed:"),
        (lambda c: c.update(train={"iterations": 0}), "train.iterations: 0 is less than the minimum of 1"),
        (lambda c: c.update(inference={"blend": "cubic"}), "inference.blend: 'cubic' is not one of ['gaussian', 'constant']"),
        (lambda c: c["datasets"]["isbi2012"].update(kind="hdf5"), "datasets.isbi2012.kind: 'hdf5' is not one of"),
        (lambda c: c["variants"]["u"].update(train={"lr": 0.1}), "variants.u.train.lr: unknown key"),
        (lambda c: c["variants"]["u"].update(train={"optimizer": {"name": "lbfgs"}}), "variants.u.train.optimizer.name: 'lbfgs' is not one of"),
        (lambda c: c["variants"]["u"].update(datasets=["hela"]), "variants.u.datasets: unknown dataset 'hela'"),
        (lambda c: c.pop("variants"), "'variants' is a required property"),
        (lambda c: c["variants"]["u"].update(per_dataset={"hela": {}}), "variants.u.per_dataset: unknown dataset 'hela'"),
        (lambda c: c["variants"]["u"].update(per_dataset={"isbi2012": {"train": {"iterations": -1}}}),
         "variants.u.per_dataset.isbi2012.train.iterations: -1 is less than the minimum of 1"),
        (lambda c: c["variants"]["u"].update(per_dataset={"isbi2012": {"predict": {}}}),
         "variants.u.per_dataset.isbi2012.predict: unknown key (allowed: augment, inference, train)"),
    ],
)
def test_bad_config_names_the_key(mutate, expected):
    cfg = _minimal()
    mutate(cfg)
    with pytest.raises(SegError) as e:
        validate_config(cfg)
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_variant_overrides_merge_deeply():
    cfg = _minimal()
    cfg["train"] = {"optimizer": {"name": "sgd", "lr": 0.01}}
    cfg["variants"]["u"]["train"] = {"optimizer": {"lr": 0.05}, "iterations": 7}
    validate_config(cfg)
    t = variant_section(cfg, "u", "train")
    assert t["optimizer"]["name"] == "sgd" and t["optimizer"]["lr"] == 0.05 and t["iterations"] == 7
    assert cfg["train"]["optimizer"]["lr"] == 0.01  # the top level is untouched


def test_per_dataset_overrides_apply_to_their_dataset_only():
    cfg = _minimal()
    cfg["datasets"]["gowt1"] = {"kind": "ctc"}
    cfg["variants"]["u"]["train"] = {"iterations": 70, "patch_size": 128}
    cfg["variants"]["u"]["per_dataset"] = {"gowt1": {"train": {"iterations": 30}}}
    validate_config(cfg)
    assert variant_section(cfg, "u", "train", "gowt1")["iterations"] == 30
    assert variant_section(cfg, "u", "train", "gowt1")["patch_size"] == 128  # variant override kept
    assert variant_section(cfg, "u", "train", "isbi2012")["iterations"] == 70
    assert variant_section(cfg, "u", "train")["iterations"] == 70
    from seg.train.state import effective_config

    cli = effective_config(cfg, "u", iterations=5)  # `seg train --iterations 5` wins over per_dataset
    assert variant_section(cli, "u", "train", "gowt1")["iterations"] == 5
    assert variant_section(cfg, "u", "train", "gowt1")["iterations"] == 30  # the config is not changed
    h = run_config_hash(cfg, "isbi2012", "u")
    cfg["variants"]["u"]["per_dataset"]["gowt1"]["train"]["iterations"] = 31
    assert run_config_hash(cfg, "isbi2012", "u") == h  # another dataset's budget is not this result's
    assert run_config_hash(cfg, "gowt1", "u") != h


def test_run_hash_ignores_seed_and_label_but_not_settings():
    a = validate_config(_minimal())
    b = validate_config({**_minimal(), "seed": 5})
    b["variants"]["u"]["label"] = "Nice name"
    assert run_config_hash(a, "isbi2012", "u") == run_config_hash(b, "isbi2012", "u")
    c = validate_config({**_minimal(), "train": {"iterations": 5}})
    assert run_config_hash(a, "isbi2012", "u") != run_config_hash(c, "isbi2012", "u")
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})


def test_config_errors_through_the_cli(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**_minimal(), "augment": {"elastik": {}}}))
    assert main(["ingest", "--config", str(bad), "--dataset", "isbi2012", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seg ingest: error: ") and "augment.elastik: unknown key" in err
    assert not (tmp_path / "o").exists()


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(SegError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "x.yaml"
    p.write_text("datasets: [unclosed\n")
    with pytest.raises(SegError, match="not valid YAML"):
        load_config(p)
