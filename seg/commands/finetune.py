"""``seg finetune``: continue training a model package on a folder of images and masks."""

from __future__ import annotations

import argparse

from seg.cli import Command

DESCRIPTION = """Continue training a package's network on a folder of images and masks (cellpose,
images-masks or nnU-Net layout; dense, or sparse: only some objects annotated). The package fixes
the model, its target, tiling and TTA; the folder's images are resized to the package's object scale
(median equivalent diameter of its training objects) for training and back for every prediction.
With >= 3 pairs a quarter of them (--holdout) is held out: the best checkpoint and the
post-processing are chosen on them and their score is printed before (the base package at the
data's diameter) and after. The new package records its lineage (parent package, the pairs it
learned from with their SHA-256, steps, scores). Rerunning an interrupted command resumes; rerunning
a finished one does nothing."""


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", metavar="DATA", help="folder of images and masks (any layout kind: folder reads)")
    p.add_argument("--from", dest="base", required=True, metavar="PACKAGE",
                   help="the base model package (folder or .zip from seg package or seg finetune)")
    p.add_argument("--out", required=True, help="the new package (folder, or a path ending in .zip)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None, help="optimiser steps (default 200)")
    budget.add_argument("--minutes", type=float, default=None, help="wall-clock budget in minutes")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, sampling and augmentation (default 0)")
    p.add_argument("--sparse", action="store_true",
                   help="not every object is annotated: unannotated pixels (0 in the masks) are ignored beyond "
                        "a band around the annotated objects")
    p.add_argument("--unannotated-value", type=int, default=None,
                   help="the mask value marking unannotated pixels (e.g. 65535); implies --sparse")
    p.add_argument("--holdout", type=int, default=None,
                   help="pairs held out for choosing and scoring (default: a quarter, at least 1, from 3 pairs on)")
    p.add_argument("--layout", default="auto", choices=["auto", "cellpose", "images-masks", "nnunet"],
                   help="the folder's layout (default: detected)")
    p.add_argument("--mask-suffix", default=None, help="cellpose layout: the masks' suffix (default _masks)")
    p.add_argument("--scratch", action="store_true",
                   help="baseline: the package's model and target from random weights on the data as they are")
    p.add_argument("--work", default=None, help="work folder (default <out>.finetune beside --out)")
    p.add_argument("--keep-work", action="store_true", help="keep the work folder after success")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where training runs")
    p.add_argument("--amp", default="auto", choices=["auto", "none", "bf16", "fp16"],
                   help="training precision (auto: the faster on this machine; none: fp32)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")


def _score(doc) -> str:
    if not doc:
        return "-"
    return f"SEG {doc['seg']:.3f}" if "seg" in doc else f"IoU {doc['iou']:.3f}"


def _run(args: argparse.Namespace) -> int:
    from seg.device import set_threads
    from seg.finetune import finetune

    set_threads(args.threads)
    s = finetune(args.base, args.data, args.out, steps=args.steps, minutes=args.minutes, seed=args.seed,
                 sparse=args.sparse, unannotated_value=args.unannotated_value, holdout=args.holdout,
                 device=args.device, work=args.work, scratch=args.scratch, layout=args.layout,
                 mask_suffix=args.mask_suffix, keep_work=args.keep_work, amp=args.amp)
    print(f"seg finetune: {s['base']['name']} on {s['pairs']} pairs, {s['steps']} steps ({s['seconds']:.0f} s) "
          f"-> {s['package']}")
    if s.get("scale"):
        print(f"  scale: {s['scale']['how']}")
    if s["held_out"]:
        print(f"  held out {', '.join(s['held_out'])}: before {_score(s['before'])}, after {_score(s['after'])}")
    print(f"  post-processing: {s['postprocess']['note']}")
    return 0


COMMANDS = {
    "finetune": Command(
        help="continue training a model package on a folder of images and masks",
        add_arguments=_arguments,
        run=_run,
        description=DESCRIPTION,
    ),
}
