"""``seg score``: metrics of one prediction set against the canonical ground truth -> metrics.json."""

from __future__ import annotations

import argparse

from seg.cli import Command


def _add_arguments(p: argparse.ArgumentParser) -> None:
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


def _run(args: argparse.Namespace) -> int:
    from seg.config import load_config
    from seg.kinds import get_kind
    from seg.metrics.score import run_score

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
    "score": Command(
        help="score predictions: IoU/Dice/pixel error, ISBI V_rand/V_info/Rand error, CTC SEG -> metrics.json",
        add_arguments=_add_arguments,
        run=_run,
        description="Compare seg predict outputs with the canonical ground truth. IoU, Dice and pixel "
        "error for every dataset; for ISBI 2012 the challenge's foreground-restricted V_rand and V_info "
        "after border thinning (best threshold 0.0-1.0 in steps of scoring.vrand_thresholds.step) and "
        "the older Rand error; for CTC data the SEG measure and object precision/recall at IoU 0.5.",
    )
}
