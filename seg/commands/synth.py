"""``seg synth``: a small seeded synthetic dataset (imports only the standard library at module level)."""

from __future__ import annotations

import argparse

from seg.cli import Command


def _add_synth(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, default=argparse.SUPPRESS, help="output raw folder (created; only an earlier synth output is replaced)")
    p.add_argument("--kind", choices=["ctc", "isbi"], default="ctc",
                   help="ctc: CTC layout, 2 sequences with sparse annotation; isbi: ISBI-like TIFF stacks")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--size", type=int, default=256, help="image height and width in pixels")
    p.add_argument("--frames", type=int, default=12, help="ctc: frames per sequence")
    p.add_argument("--every", type=int, default=3, help="ctc: annotate every N-th frame (0, N, 2N, ...)")
    p.add_argument("--slices", type=int, default=30, help="isbi: slices per stack")
    p.add_argument("--annotated", type=float, default=1.0,
                   help="ctc: fraction of the cells in the masks (a fixed random subset per sequence; "
                        "< 1 = sparse annotation: unannotated cells are not background)")
    p.add_argument("--silver", action="store_true",
                   help="ctc: also write silver truth <seq>_ST/SEG/man_segNNN.tif for every frame")


def _run_synth(args: argparse.Namespace) -> int:
    from seg.data.synth import write_synth

    out = write_synth(args.out, kind=args.kind, seed=args.seed, size=args.size, frames=args.frames,
                      every=args.every, slices=args.slices, annotated=args.annotated, silver=args.silver)
    print(f"wrote synthetic {args.kind} data (seed {args.seed}) to {out}")
    return 0



COMMANDS = {
    "synth": Command(
        help="write a small seeded synthetic dataset (CTC layout or ISBI-like stacks) for tests",
        add_arguments=_add_synth,
        run=_run_synth,
    ),
}
