"""Applying a trained run to its dataset: ``seg predict`` (whole-slice predictions of a split),
``seg calibrate`` (post-processing chosen on the val split), ``seg score`` (metrics.json) and
``seg pseudolabel`` (self-training labels). Imports only the standard library at module level."""

from __future__ import annotations

import argparse

from seg.cli import Command


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """--config, --dataset, --variant: which configured run the command is about."""
    p.add_argument("--config", default="configs/config.yaml", help="workflow config (YAML)")
    p.add_argument("--dataset", required=True, help="dataset name (a key of config datasets)")
    p.add_argument("--variant", required=True, help="model variant (a key of config variants)")


def _add_arguments(p: argparse.ArgumentParser) -> None:
    _add_run_arguments(p)
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint .pt (e.g. results/<dataset>/<variant>/checkpoints/best.pt)")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "unlabeled"],
                   help="which slices to predict")
    p.add_argument("--out", required=True,
                   help="output folder (e.g. results/<dataset>/<variant>/pred/test/); replaced atomically")
    p.add_argument("--data-dir", default=None, help="canonical data folder; unset = the config's data_dir")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                   help="override inference.device of the config; unset = the config's value")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (capped at the machine's cores; default: torch's choice)")
    p.add_argument("--threshold-file", default=None,
                   help="JSON of seg calibrate whose threshold replaces postprocess.threshold "
                        "(unset = the config's threshold)")


def _run(args: argparse.Namespace) -> int:
    from seg.device import set_threads
    from seg.evaluate.predict import run_predict
    from seg.settings import load_config

    cfg = load_config(args.config)
    set_threads(args.threads)
    s = run_predict(cfg, dataset=args.dataset, variant=args.variant, checkpoint=args.checkpoint,
                    split=args.split, out=args.out, data_dir=args.data_dir, device=args.device,
                    threshold_file=args.threshold_file)
    print(f"seg predict: {s['n_slices']} slices of {args.dataset}/{args.split} -> {args.out} "
          f"({s['seconds_per_slice']:.2f} s/slice, tile {s['tile']}, tta {s['tta']}, "
          f"threshold {s['threshold']:g}, {s['device']})")
    return 0


def _add_calibrate_arguments(p: argparse.ArgumentParser) -> None:
    _add_run_arguments(p)
    p.add_argument("--pred", required=True, help="folder of `seg predict --split val`")
    p.add_argument("--out", required=True, help="output JSON (e.g. results/<dataset>/<variant>/calibration.json)")
    p.add_argument("--data-dir", default=None, help="canonical data folder; unset = the config's data_dir")


def _run_calibrate(args: argparse.Namespace) -> int:
    from seg.evaluate.calibrate import run_calibrate
    from seg.settings import load_config

    doc = run_calibrate(load_config(args.config), dataset=args.dataset, variant=args.variant,
                        pred=args.pred, out=args.out, data_dir=args.data_dir)
    if doc["criterion"] == "seg":
        c, f = doc["at_chosen"], doc["at_fixed"]
        second = "seed_threshold" if "seed_threshold" in c else "h"  # three_class: seeds, not h
        print(f"seg calibrate: {args.dataset}/{args.variant}: threshold {doc['threshold']:g}, "
              f"{second} {c[second]:g}, min_size {doc['min_size']} (val SEG {c['seg']:.4f}, recall@0.5 "
              f"{c['recall_iou50']:.4f}; {f['seg']:.4f} at the configured threshold {f['threshold']:g}, "
              f"{second} {f[second]:g}, min_size {f['min_size']}) -> {args.out}")
        return 0
    print(f"seg calibrate: {args.dataset}/{args.variant}: threshold {doc['threshold']:g} "
          f"(val mean IoU {doc['at_chosen']['iou_mean']:.4f}; "
          f"{doc['at_fixed']['iou_mean']:.4f} at {doc['at_fixed']['threshold']:g}) -> {args.out}")
    return 0


def _add_pseudolabel_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/config.yaml", help="workflow config (YAML)")
    p.add_argument("--dataset", required=True, help="dataset name (a key of the config's datasets)")
    p.add_argument("--variant", required=True, help="the variant with self_training (the student)")
    p.add_argument("--teacher-run", default=None,
                   help="the teacher's run folder (default <results_dir>/<dataset>/<teacher>)")
    p.add_argument("--out", required=True, help="output folder (e.g. results/<dataset>/<variant>/pseudo)")
    p.add_argument("--data-dir", default=None, help="canonical data folder; unset = the config's data_dir")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="override inference.device")


def _run_pseudolabel(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seg.errors import SegError
    from seg.evaluate.pseudolabel import run_pseudolabel
    from seg.settings import load_config

    cfg = load_config(args.config)
    st = (cfg["variants"].get(args.variant) or {}).get("self_training")
    if not st:
        raise SegError(f"config: variants.{args.variant} has no self_training section")
    teacher_run = args.teacher_run or Path(cfg["results_dir"]) / args.dataset / st["teacher"]
    doc = run_pseudolabel(cfg, dataset=args.dataset, variant=args.variant, teacher_run=teacher_run, out=args.out,
                          data_dir=args.data_dir, device=args.device)
    c = doc["confidence"]
    print(f"seg pseudolabel: {args.dataset}/{args.variant} from {st['teacher']}: confidence "
          f"{'none reaches the precision' if c is None else f'{c:g}'} (val precision >= {doc['precision_target']:g}, "
          f"{doc['val_objects']} val objects); {len(doc['slices'])} of {doc['candidates']} candidate frames, "
          f"{sum(s['kept'] for s in doc['slices'])} objects -> {args.out}")
    return 0



def _add_score_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/config.yaml", help="workflow config (YAML)")
    p.add_argument("--dataset", required=True, help="dataset name (a key of config datasets)")
    p.add_argument("--variant", required=True, help="model variant (a key of config variants)")
    p.add_argument("--pred", required=True,
                   help="prediction folder written by seg predict (e.g. results/<dataset>/<variant>/pred/test/)")
    p.add_argument("--out", required=True,
                   help="metrics file to write (e.g. results/<dataset>/<variant>/metrics.json); atomic")
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="which annotated slices the predictions are for")
    p.add_argument("--data-dir", default=None, help="canonical data folder; unset = the config's data_dir")
    p.add_argument("--train-summary", default=None,
                   help="train_summary.json to copy into metrics.json under 'train'; unset = none")


def _run_score(args: argparse.Namespace) -> int:
    from seg.evaluate.score import run_score
    from seg.kinds import get_kind
    from seg.settings import load_config

    cfg = load_config(args.config)
    doc = run_score(cfg, dataset=args.dataset, variant=args.variant, pred=args.pred, out=args.out,
                    data_dir=args.data_dir, train_summary=args.train_summary, split=args.split)
    agg = doc["aggregate"]
    keys = list(get_kind(doc["kind"]).summary_measures)
    if doc.get("annotations") == "sparse":  # precision over predicted objects lying mainly on annotated cells
        keys = ["seg", "recall_iou50", "precision_iou50"]
    shown = ", ".join(f"{k} {agg[k]:.4f}" if isinstance(agg.get(k), float) else f"{k} n/a" for k in keys)
    if doc.get("annotations") == "sparse":
        shown += f", foreground IoU {agg['iou']['cell']:.4f} (sparse annotations: precision and IoU over " \
                 "the predicted objects lying mainly on annotated cells)"
    print(f"seg score: {args.dataset}/{args.variant}/{args.split}: {shown} -> {args.out}")
    return 0


COMMANDS = {
    "pseudolabel": Command(
        help="self-training labels: a teacher's confident objects on the unlabelled frames",
        add_arguments=_add_pseudolabel_arguments,
        run=_run_pseudolabel,
        description="For a variant with self_training: the teacher predicts the val frames and the unlabelled "
        "frames farther than st_exclusion from every val and test frame; the smallest confidence (mean cell "
        "probability of an object) whose val objects match annotated cells with precision >= "
        "self_training.precision is chosen; each frame keeps its objects above it as sparse labels "
        "(instances, class map, band-limited weight map). seg train --pseudo trains on them.",
    ),
    "predict": Command(
        help="predict probabilities and segmentations of a dataset split with a trained checkpoint",
        add_arguments=_add_arguments,
        run=_run,
        description="Tiled whole-slice inference (overlap in inference.overlap, blending, optional 8-fold "
        "TTA), then ISBI interior maps (1 = interior) or CTC instance masks (mask000.tif).",
    ),
    "calibrate": Command(
        help="choose the post-processing (threshold; CTC: also h, min_size) on the val split's predictions",
        add_arguments=_add_calibrate_arguments,
        run=_run_calibrate,
        description="Reads the probability maps of `seg predict --split val` and writes the best "
        "post-processing (JSON) for `seg predict --threshold-file`. ISBI: the threshold 0.05-0.95 (step "
        "0.05) with the best mean IoU of the two classes pooled over the val slices. CTC: the threshold, "
        "watershed seed depth h and minimum object size (postprocess.search) with the best SEG over the "
        "val frames' annotated cells (ties: the configured values). The test split is never used.",
    ),
    "score": Command(
        help="score predictions: IoU/Dice/pixel error, ISBI V_rand/V_info/Rand error, CTC SEG -> metrics.json",
        add_arguments=_add_score_arguments,
        run=_run_score,
        description="Compare seg predict outputs with the canonical ground truth. IoU, Dice and pixel "
        "error for every dataset; for ISBI 2012 the challenge's foreground-restricted V_rand and V_info "
        "after border thinning (best threshold 0.0-1.0 in steps of scoring.vrand_thresholds.step) and "
        "the older Rand error; for CTC data the SEG measure and object precision/recall at IoU 0.5.",
    ),
}
