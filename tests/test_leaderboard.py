"""Leaderboard: collecting metrics.json from several result folders, merging, sorting, tables."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from seg.settings import validate_config
from seg.errors import SegError
from seg.report import tables
from seg.report.leaderboard import build_leaderboard, sort_rows, merge_group, load_run

CONFIG = {
    "datasets": {"isbi2012": {"kind": "isbi2012"}},
    "variants": {
        "unet": {"model": "unet", "label": "U-Net (paper)"},
        "fcn8s": {"model": "fcn8s"},
        "unet-resnet34": {"model": "unet-resnet34", "label": "U-Net ResNet-34"},
    },
}


def write_metrics(root: Path, dataset: str, variant: str, *, iou: float, seed: int | None = 0,
                  config_hash: str = "h", date: str = "2026-01-01T00:00:00", **extra) -> Path:
    """A metrics.json as `seg score` writes it, at root/<dataset>/<variant>/metrics.json."""
    agg = {"iou_mean": iou, "dice_mean": iou + 0.05, "pixel_error": (1 - iou) / 2}
    if dataset == "isbi2012":
        agg.update(vrand=iou + 0.03, rand_error=(1 - iou) / 3, pixel_error_isbi=(1 - iou) / 4,
                   iou={"membrane": iou - 0.1, "interior": iou + 0.1})
    else:
        agg.update(seg=iou - 0.1, iou={"background": iou + 0.1, "cell": iou - 0.1})
    agg.update(extra.pop("aggregate", {}))
    m = {"dataset": dataset, "variant": variant, "label": None, "split": "test",
         "config_hash": config_hash, "seed": seed, "date": date, "primary": "iou_mean",
         "aggregate": agg, "per_slice": [],
         "train": {"wall_time_s": 600.0, "device": "cpu", "params": 1_000_000, "iterations": 100},
         "inference": {"seconds_per_slice": 0.5}, **extra}
    path = root / dataset / variant / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(m))
    return path


@pytest.fixture
def cfg() -> dict:
    return validate_config(json.loads(json.dumps(CONFIG)))


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    """results/ (local) and cluster/ (copied back): unet run twice with seeds 0 and 1 (same
    config hash), plus a run of a dataset that is neither configured nor ingested."""
    a, b = tmp_path / "results", tmp_path / "cluster"
    write_metrics(a, "isbi2012", "unet", iou=0.80, seed=0, config_hash="aaa")
    write_metrics(a, "isbi2012", "fcn8s", iou=0.70, seed=0, config_hash="bbb")
    write_metrics(a, "isbi2012", "unet-resnet34", iou=0.85, seed=0, config_hash="ccc")
    write_metrics(b, "isbi2012", "unet", iou=0.84, seed=1, config_hash="aaa",
                  date="2026-01-02T00:00:00")
    write_metrics(b, "DIC-C2DH-HeLa", "unet", iou=0.71, seed=0, config_hash="ddd")
    return a, b


def test_order_merge_and_spread(two_runs, cfg, tmp_path):
    board = build_leaderboard(two_runs, cfg, tmp_path / "data")
    assert list(board.datasets) == ["isbi2012", "DIC-C2DH-HeLa"]  # config order, then others
    rows = board.datasets["isbi2012"]
    assert [r.variant for r in rows] == ["unet-resnet34", "unet", "fcn8s"]
    assert [r.rank for r in rows] == [1, 2, 3]
    unet = rows[1]
    assert unet.label == "U-Net (paper)" and unet.model == "unet"
    assert unet.n == 2 and unet.seeds == [0, 1] and not unet.dropped
    assert unet.mean["iou_mean"] == pytest.approx(0.82)
    assert unet.std["iou_mean"] == pytest.approx(np.std([0.80, 0.84], ddof=1))
    assert unet.std["iou_mean"] == pytest.approx(0.0282843, abs=1e-6)
    assert unet.date == "2026-01-02T00:00:00"  # newest run
    assert math.isnan(rows[0].std["iou_mean"])  # single run: no spread


def test_missing_dataset_is_kept_and_kind_inferred(two_runs, cfg, tmp_path):
    board = build_leaderboard(two_runs, cfg, tmp_path / "no-data-here")
    (hela,) = board.datasets["DIC-C2DH-HeLa"]
    assert board.kinds["DIC-C2DH-HeLa"] == "ctc"  # from the SEG metric
    assert hela.secondary == "seg" and hela.mean["seg"] == pytest.approx(0.61)
    assert hela.label == "U-Net (paper)"  # label from the config's variant of that name


def test_same_seed_is_a_duplicate_keep_newest(tmp_path, cfg):
    a, b = tmp_path / "a", tmp_path / "b"
    old = write_metrics(a, "isbi2012", "unet", iou=0.60, seed=3, config_hash="x",
                        date="2026-01-01T00:00:00")
    new = write_metrics(b, "isbi2012", "unet", iou=0.90, seed=3, config_hash="x",
                        date="2026-03-01T00:00:00")
    board = build_leaderboard([a, b, a], cfg)  # the same folder twice counts once
    (row,) = board.rows
    assert row.n == 1 and row.mean["iou_mean"] == pytest.approx(0.90)
    assert [r.path for r in row.runs] == [new.resolve()]
    assert [r.path for r in row.dropped] == [old.resolve()]
    assert any("duplicates seed 3" in n and "kept the newer" in n for n in board.notes)
    assert "duplicate seed, dropped" in tables.markdown(board)


def test_different_config_hash_is_not_merged(tmp_path, cfg):
    write_metrics(tmp_path / "a", "isbi2012", "unet", iou=0.7, seed=0, config_hash="one")
    write_metrics(tmp_path / "b", "isbi2012", "unet", iou=0.8, seed=1, config_hash="two")
    board = build_leaderboard([tmp_path / "a", tmp_path / "b"], cfg)
    assert [(r.config_hash, r.n) for r in board.rows] == [("two", 1), ("one", 1)]


def test_csv_columns_and_values(two_runs, cfg, tmp_path):
    board = build_leaderboard(two_runs, cfg)
    path = tmp_path / "out" / "leaderboard.csv"
    tables.write_csv(path, board)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        recs = list(reader)
    assert tuple(reader.fieldnames) == tables.CSV_COLUMNS
    for col in ("dataset", "variant", "label", "iou_mean", "iou_mean_std", "vrand", "seg",
                "n_runs", "seeds", "params", "train_time_s", "device", "seconds_per_slice",
                "config_hash", "date"):
        assert col in tables.CSV_COLUMNS
    assert len(recs) == 4  # one row per dataset x variant
    assert [(r["dataset"], r["variant"], r["rank"]) for r in recs] == [
        ("isbi2012", "unet-resnet34", "1"), ("isbi2012", "unet", "2"), ("isbi2012", "fcn8s", "3"),
        ("DIC-C2DH-HeLa", "unet", "1")]
    unet = recs[1]
    assert float(unet["iou_mean"]) == pytest.approx(0.82)
    assert float(unet["iou_mean_std"]) == pytest.approx(0.0282843, abs=1e-5)
    assert unet["n_runs"] == "2" and unet["seeds"] == "0;1" and unet["config_hash"] == "aaa"
    assert float(unet["train_time_s"]) == 600 and unet["device"] == "cpu"
    assert recs[0]["iou_mean_std"] == ""  # single run: empty spread
    assert recs[3]["vrand"] == "" and float(recs[3]["seg"]) == pytest.approx(0.61)
    # class 0 = membrane (ISBI) / background (CTC), class 1 = interior / cell (foreground IoU)
    assert float(unet["iou_class0"]) == pytest.approx(0.72) and float(unet["iou_class1"]) == pytest.approx(0.92)
    assert float(recs[3]["iou_class1"]) == pytest.approx(0.61) and float(recs[3]["iou_class0"]) == pytest.approx(0.81)


def _meta(data: Path, name: str, kind: str, **source) -> None:
    """A canonical meta.json claiming what the dataset is (kind, source)."""
    (data / name).mkdir(parents=True, exist_ok=True)
    (data / name / "meta.json").write_text(json.dumps({"name": name, "kind": kind, "source": source}))


def test_markdown_and_terminal_tables(two_runs, cfg, tmp_path):
    from seg.report.references import ISBI2012_TRAIN_PIXELS_SHA256

    _meta(tmp_path / "data", "isbi2012", "isbi2012", pixels_sha256={"train": ISBI2012_TRAIN_PIXELS_SHA256})
    board = build_leaderboard(two_runs, cfg, data_dir=tmp_path / "data")
    md = tables.markdown(board)
    assert md.index("U-Net ResNet-34") < md.index("U-Net (paper)") < md.index("| fcn8s |")
    assert "0.8200 ± 0.0283" in md
    assert "0.0382" in md and "0.0611" in md  # published ISBI errors in the reference table
    assert "| ours: U-Net (paper) | our held-out test split | not computed | 0.0600 ± 0.0094 | 0.0450 ± 0.0071 |" in md
    term = tables.terminal(board)
    assert "0.8200 +- 0.0283" in term and term.isascii()
    header = next(line for line in term.splitlines() if line.startswith("#"))
    assert "V_rand" in header and "IoU" in header and "membrane IoU" in header and "1-F1 interior" in header
    assert "foreground IoU" in md and "0.7200 ± 0.0283" in md  # unet's membrane IoU over 2 seeds


def test_bad_inputs(tmp_path, cfg):
    with pytest.raises(SegError, match="no metrics.json"):
        build_leaderboard([tmp_path], cfg)
    with pytest.raises(SegError, match="result folder not found"):
        build_leaderboard([tmp_path / "nope"], cfg)
    write_metrics(tmp_path, "isbi2012", "unet", iou=0.8)
    broken = tmp_path / "isbi2012" / "fcn8s" / "metrics.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    board = build_leaderboard([tmp_path], cfg)  # the broken copy is skipped with a note
    assert [r.variant for r in board.rows] == ["unet"]
    # the note names the file relative to the result folder, as the tables do
    assert any(n.startswith("skipped isbi2012/fcn8s/metrics.json: not valid JSON") for n in board.notes), board.notes
    assert not any(str(tmp_path) in n for n in board.notes)


def test_lower_is_better_primary_and_missing_values(tmp_path):
    paths = [write_metrics(tmp_path, "d", v, iou=i, seed=0) for v, i in
             (("a", 0.9), ("b", 0.8), ("c", float("nan")))]
    runs = [load_run(p) for p in paths]
    for r in runs:
        r.primary = "pixel_error"
    rows = sort_rows([merge_group([r], "ctc") for r in runs])
    assert [r.variant for r in rows] == ["a", "b", "c"]  # smallest error first, missing last


def test_published_references_only_beside_the_dataset_they_were_measured_on(tmp_path, cfg):
    """ISBI 2012's errors only for the ISBI 2012 pixels, DIC-HeLa's figure only for DIC-C2DH-HeLa
    (not Fluo-N2DL-HeLa), and a CTC figure (the challenge's SEG) beside our SEG, not our pixel IoU."""
    from seg.report.references import ISBI2012_TRAIN_PIXELS_SHA256

    res, data = tmp_path / "results", tmp_path / "data"
    for ds in ("isbi2012", "other-em", "DIC-C2DH-HeLa", "Fluo-N2DL-HeLa", "no-meta"):
        write_metrics(res, ds if ds != "no-meta" else "no-meta", "unet", iou=0.8, seed=0)
    _meta(data, "isbi2012", "isbi2012", pixels_sha256={"train": ISBI2012_TRAIN_PIXELS_SHA256})
    _meta(data, "other-em", "isbi2012", pixels_sha256={"train": "0" * 64})  # another EM membrane stack
    _meta(data, "DIC-C2DH-HeLa", "ctc")
    _meta(data, "Fluo-N2DL-HeLa", "ctc")
    board = build_leaderboard([res], cfg, data_dir=data)
    assert board.identities == {"isbi2012": "isbi2012", "other-em": None, "DIC-C2DH-HeLa": "DIC-C2DH-HeLa",
                                "Fluo-N2DL-HeLa": "Fluo-N2DL-HeLa", "no-meta": None}  # a CTC dataset of its own
    md = tables.markdown(board)
    sections = {block.split(" (", 1)[0]: block for block in md.split("\n## ")[1:]}
    assert "0.0382" in sections["isbi2012"]
    for ds in ("other-em", "Fluo-N2DL-HeLa", "no-meta"):
        assert "Published" not in sections[ds] and "0.0382" not in sections[ds] and "0.7756" not in sections[ds]
    hela = sections["DIC-C2DH-HeLa"]
    ref_lines = [ln for ln in hela.splitlines() if ln.startswith("| U-Net, published") or ln.startswith("| ours:")
                 or ln.startswith("|  | test set")]
    assert ref_lines[0] == "|  | test set | SEG |"  # the published CTC "IoU" is compared with SEG
    assert ref_lines[1].endswith("| 0.7756 |")
    assert ref_lines[2].endswith("| 0.7000 |")  # our SEG (0.8 - 0.1), not our pixel mean IoU 0.8


def test_paths_are_relative_to_the_result_folder(two_runs, cfg, tmp_path):
    """The Runs table, the CSV's sources and the notes print each metrics.json relative to the result
    folder the leaderboard was built from (with several, the folder holding them), never the
    machine's absolute path: the same folder moved elsewhere gives the same tables."""
    import shutil

    results, cluster = two_runs
    board = build_leaderboard([results], cfg)
    md, recs = tables.markdown(board), tables.csv_records(board)
    assert board.root == results.resolve() and board.folders == ["results"]
    assert "Paths are relative to the result folder results." in md
    assert "| `isbi2012/unet/metrics.json` |" in md and "| `isbi2012/fcn8s/metrics.json` |" in md
    assert [r["sources"] for r in recs] == [f"isbi2012/{v}/metrics.json" for v in ("unet-resnet34", "unet", "fcn8s")]
    for text in (md, tables.terminal(board), json.dumps(recs)):
        assert str(tmp_path) not in text and str(tmp_path.resolve()) not in text
    moved = tmp_path / "elsewhere" / "deeper" / "results"
    shutil.copytree(results, moved)
    again = build_leaderboard([moved], cfg)
    assert tables.markdown(again) == md and tables.csv_records(again) == recs

    # several folders: relative to the folder holding them, so each path starts with its folder
    board = build_leaderboard(two_runs, cfg)
    unet = next(r for r in tables.csv_records(board) if r["variant"] == "unet" and r["dataset"] == "isbi2012")
    assert unet["sources"] == "cluster/isbi2012/unet/metrics.json;results/isbi2012/unet/metrics.json"
    md = tables.markdown(board)
    assert "Paths are relative to the folder holding the result folders results, cluster." in md
    assert "| `cluster/DIC-C2DH-HeLa/unet/metrics.json` |" in md and str(tmp_path) not in md
    # seeds side by side (results/targets/seed0, seed1): seed0/..., seed1/...; a duplicate's note too
    seeds = tmp_path / "results" / "targets"
    for s in (0, 1):
        write_metrics(seeds / f"seed{s}", "isbi2012", "unet", iou=0.8, seed=s, config_hash="aaa")
    write_metrics(seeds / "copy", "isbi2012", "unet", iou=0.8, seed=1, config_hash="aaa", date="2025-01-01T00:00:00")
    board = build_leaderboard([seeds / "seed0", seeds / "seed1", seeds / "copy"], cfg)
    assert sorted(board.shown(r.path) for r in board.rows[0].runs) == ["seed0/isbi2012/unet/metrics.json",
                                                                       "seed1/isbi2012/unet/metrics.json"]
    assert any(n.startswith("isbi2012 / U-Net (paper): copy/isbi2012/unet/metrics.json duplicates seed 1 of "
                            "seed1/isbi2012/unet/metrics.json") for n in board.notes), board.notes


def test_the_report_says_which_row_the_val_split_hands_on_and_warns_when_it_is_small(tmp_path, cfg):
    """The row handed on is the val winner even where the test split ranks another first; the margin
    is its val lead; a val split of fewer than 20 annotated objects gets the warning."""
    from toydata import write_blob_dataset

    from seg.report.selection import MIN_VAL_OBJECTS, val_choice, val_objects

    root = tmp_path / "results"
    for variant, test, val in (("unet", 0.90, 0.70), ("fcn8s", 0.80, 0.78), ("unet-resnet34", 0.85, None)):
        write_metrics(root, "isbi2012", variant, iou=test, train={"best_val_iou": val, "iterations": 100})
    data = tmp_path / "data"
    write_blob_dataset(data / "isbi2012", splits=(2, 1, 1))
    board = build_leaderboard([root], cfg, data)
    assert board.datasets["isbi2012"][0].variant == "unet"  # the test split's order
    choice = val_choice(board, "isbi2012", data)
    assert choice.winner.variant == "fcn8s" and choice.runner_up.variant == "unet"
    assert choice.margin == pytest.approx(0.08) and choice.measure == "val mean IoU"
    n = val_objects(data, "isbi2012")
    assert choice.val_objects == n and 0 < n < MIN_VAL_OBJECTS
    text = choice.text()
    assert "Handed on (packaged and exported): fcn8s (fg_border), val mean IoU 0.780" in text
    assert "ahead of U-Net (paper) (fg_border) by +0.080 (0.700)" in text and "WARNING: fewer than 20" in text
    big = val_choice(board, "isbi2012", tmp_path / "elsewhere")  # dataset not here: no count, no warning
    assert big.val_objects is None and "WARNING" not in big.text()
    md = tables.markdown(board, {"isbi2012": text})
    assert text in md.split("## Runs")[0]
