"""``seg predict``: whole-slice predictions of a trained checkpoint for one dataset split."""

from __future__ import annotations

import argparse

from seg.cli import Command


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/config.yaml", help="workflow config (YAML)")
    p.add_argument("--dataset", required=True, help="dataset name (a key of config datasets)")
    p.add_argument("--variant", required=True, help="model variant (a key of config variants)")
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


def _run(args: argparse.Namespace) -> int:
    from seg.config import load_config
    from seg.infer.predict import run_predict

    from seg.device import set_threads

    cfg = load_config(args.config)
    set_threads(args.threads)
    s = run_predict(cfg, dataset=args.dataset, variant=args.variant, checkpoint=args.checkpoint,
                    split=args.split, out=args.out, data_dir=args.data_dir, device=args.device)
    print(f"seg predict: {s['n_slices']} slices of {args.dataset}/{args.split} -> {args.out} "
          f"({s['seconds_per_slice']:.2f} s/slice, tile {s['tile']}, tta {s['tta']}, {s['device']})")
    return 0


COMMANDS = {
    "predict": Command(
        help="predict probabilities and segmentations of a dataset split with a trained checkpoint",
        add_arguments=_add_arguments,
        run=_run,
        description="Tiled whole-slice inference (overlap in inference.overlap, blending, optional 8-fold "
        "TTA), then ISBI interior maps (1 = interior) or CTC instance masks (mask000.tif).",
    )
}
