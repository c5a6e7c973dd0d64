"""``seg segment``: a packaged (or trained) model on new images, stacks and CTC sequences."""

from __future__ import annotations

import argparse

from seg.cli import Command


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files (.tif, .tiff, .png), multi-page TIFF stacks, folders of images, CTC "
                        "sequence folders (01/t000.tif ...) or a CTC dataset folder holding them")
    p.add_argument("--model", required=True, help="model package (folder or .zip from seg package) or a "
                                                  "run folder results/<dataset>/<variant>/")
    p.add_argument("--out", required=True, help="output folder; built under a temporary name and renamed "
                                                "into place when complete (replaces an older one)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the model runs")
    p.add_argument("--amp", default=None, choices=["auto", "none", "bf16", "fp16"],
                   help="override the package's inference.amp (none = fp32: exact on every CPU)")
    p.add_argument("--config", default=None,
                   help="config of a run folder given as --model (default: <results>/config.resolved.yaml)")
    p.add_argument("--data-dir", default=None, help="canonical data folder of a run folder given as --model")
    p.add_argument("--diameter", default=None,
                   help="the objects' diameter in pixels (median equivalent diameter): each image is resized so "
                        "that its objects have the size the package's network learned, and the results come back "
                        "at the image's size; 'auto' measures it on a first pass at the package's own scale "
                        "(default: the package's own scale)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")


def _run(args: argparse.Namespace) -> int:
    from seg.device import set_threads
    from seg.export.segment import run_segment

    set_threads(args.threads)
    s = run_segment(args.model, args.inputs, args.out, device=args.device, amp=args.amp, config=args.config,
                    data_dir=args.data_dir, diameter=args.diameter)
    print(f"seg segment: {s['n_images']} images with {s['model']} ({s['kind']}) -> {args.out} "
          f"({s['images_per_second']:.2f} images/s, {s['device']}, amp {s['inference']['amp']})")
    for rec in s["inputs"]:
        sc = rec.get("scale") or {}
        if sc.get("diameter") is not None or abs(float(sc.get("factor", 1)) - 1) > 1e-6:
            print(f"  {rec['input']}: resized by {sc['factor']:.3f} ({sc['how']})")
    return 0


COMMANDS = {
    "segment": Command(
        help="segment new images, stacks or CTC sequences with a model package",
        add_arguments=_arguments,
        run=_run,
        description="Per image: the package's preprocessing, tiled inference (its tile/overlap/blend/TTA), "
        "its threshold and post-processing. Outputs: <name>_prob.tif (float32 probability of class 1) and "
        "<name>_seg.tif (ISBI, uint8 1 = interior) or <name>_mask.tif / <seq>_RES/maskNNN.tif (CTC, uint16 "
        "instances); an ISBI-kind model turns a stack into the challenge's 32-bit submission stack. "
        "segment_summary.json lists every output and convention.",
    ),
}
