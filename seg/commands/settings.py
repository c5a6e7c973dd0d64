"""``seg init`` (a config for a folder of images and masks) and ``seg plan`` (a dataset's planned settings); imports only the standard library at module level."""

from __future__ import annotations

import argparse

from seg.cli import Command


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

    from seg.settings.init_writer import dataset_name, init_config, inspect_folder, summary_lines, write_config

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
    from seg.io import write_json
    from seg.settings import load_config
    from seg.settings.plan import data_plan, format_plan

    cfg = load_config(args.config)
    plan = data_plan(cfg, args.dataset, data_dir=args.data_dir)
    print(format_plan(plan))
    if args.out:
        write_json(args.out, plan.to_dict())
    return 0



COMMANDS = {
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
}
