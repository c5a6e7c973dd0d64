"""``seg ingest``, ``seg init``, ``seg plan`` and ``seg synth`` (imports only the standard library at module level)."""

from __future__ import annotations

import argparse

from seg.cli import Command


def _add_ingest(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/config.yaml", help="workflow config (YAML)")
    p.add_argument("--dataset", required=True, default=argparse.SUPPRESS,
                   help="dataset name, a key of the config's datasets")
    p.add_argument("--out", default=argparse.SUPPRESS,
                   help="output folder of the canonical dataset (default: <data_dir>/<dataset>); "
                   "written atomically, an existing one is replaced")


def _run_ingest(args: argparse.Namespace) -> int:
    import logging

    from seg.config import load_config
    from seg.data.ingest import default_out, ingest_dataset, summary

    # Unreadable TIFFs become one SegError line; tifffile's own warnings would only add noise.
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    cfg = load_config(args.config)
    out = getattr(args, "out", None) or default_out(cfg, args.dataset)
    meta = ingest_dataset(cfg, args.dataset, out)
    print(f"ingested {summary(meta)} -> {out} ({len(meta['files'])} raw files, sha256 in meta.json)")
    return 0


def _add_init(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="DATA_FOLDER", help="folder of 2D images and masks (cellpose, images/ + "
                   "masks/, or nnU-Net imagesTr/ + labelsTr/ layout)")
    p.add_argument("--out", required=True, default=argparse.SUPPRESS, help="config file to write (YAML)")
    p.add_argument("--name", default=None, help="dataset name (default: the folder's name)")
    p.add_argument("--layout", default="auto", choices=["auto", "cellpose", "images-masks", "nnunet"],
                   help="layout of the folder; auto detects it")
    p.add_argument("--mask-suffix", default="_masks", help="cellpose layout: <name><suffix>.tif is the mask")
    p.add_argument("--labels", default=None, choices=["instance", "semantic"],
                   help="what the masks are (default: guessed from the masks)")
    p.add_argument("--unlabelled", default=None, help="subfolder of images without masks (segmented, not trained on)")
    p.add_argument("--sparse", action="store_true", help="not every object is annotated (annotations: sparse)")
    p.add_argument("--budget", default="cpu", choices=["cpu", "tiny"],
                   help="training budget: cpu = minutes on a CPU; tiny = a seconds-long smoke test")


def _run_init(args: argparse.Namespace) -> int:
    import logging

    from seg.data.init import dataset_name, init_config, inspect_folder, summary_lines, write_config

    logging.getLogger("tifffile").setLevel(logging.ERROR)
    info = inspect_folder(args.folder, layout=args.layout, mask_suffix=args.mask_suffix, unlabelled=args.unlabelled,
                          labels=args.labels, annotations="sparse" if args.sparse else "full")
    name = args.name or dataset_name(info["folder"])
    lines = summary_lines(info)
    out = write_config(init_config(info, name=name, budget=args.budget), args.out,
                       header=[f"seg init {info['folder']} (budget {args.budget})", *lines])
    print("\n".join(lines))
    print(f"wrote {out}: dataset {name} (kind folder); run: snakemake --cores 8 --configfile {out}")
    return 0


def _add_plan(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/config.yaml", help="workflow config (YAML)")
    p.add_argument("--dataset", required=True, default=argparse.SUPPRESS,
                   help="dataset name, a key of the config's datasets (ingested: <data_dir>/<dataset>/meta.json)")
    p.add_argument("--data-dir", default=None, help="folder of canonical datasets (default: the config's data_dir)")
    p.add_argument("--out", default=None, help="also write the plan as JSON to this file (e.g. results/<dataset>/plan.json)")


def _run_plan(args: argparse.Namespace) -> int:
    from seg.config import load_config
    from seg.data.plan import data_plan, format_plan
    from seg.io import write_json

    cfg = load_config(args.config)
    plan = data_plan(cfg, args.dataset, data_dir=args.data_dir)
    print(format_plan(plan))
    if args.out:
        write_json(args.out, plan.to_dict())
    return 0


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
    "ingest": Command(
        help="raw files of one dataset -> canonical form data/<dataset>/ (images, instances, semantic, meta.json)",
        add_arguments=_add_ingest,
        run=_run_ingest,
        description="Ingest one configured dataset: local raw files are used first (raw folder "
        "<raw_root>/<dataset>, SEG_RAW_ROOT overrides raw_root, datasets.<name>.raw_dir overrides both), "
        "else the configured URL is downloaded and kept only if its sha256 matches. Validates the "
        "input, applies the configured split and records the sha256 of every raw file in meta.json.",
    ),
    "init": Command(
        help="check a folder of images and masks and write a workflow config for it (kind folder)",
        add_arguments=_add_init,
        run=_run_init,
        description="Detect the folder's layout (cellpose <name>_masks, images/ + masks/, nnU-Net), read "
        "every pair with the checks of seg ingest, print what was found (pairs, sizes, dtype, instance or "
        "semantic masks, the proposed split) and write a config that trains, scores, packages and exports it.",
    ),
    "plan": Command(
        help="the dataset's fingerprint and the scale-dependent settings: each value and its source (config/data/default)",
        add_arguments=_add_plan,
        run=_run_plan,
        description="Print the plan of one ingested dataset: the fingerprint of its training split (image "
        "and object sizes) and, for weights.sigma, weights.sparse_band, train.patch_size, postprocess.min_size, "
        "postprocess.h and postprocess.search, the value used and where it comes from: config (set there; "
        "always wins), data (derived from the fingerprint) or default (no annotated object).",
    ),
    "synth": Command(
        help="write a small seeded synthetic dataset (CTC layout or ISBI-like stacks) for tests",
        add_arguments=_add_synth,
        run=_run_synth,
    ),
}
