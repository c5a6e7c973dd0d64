"""``seg ingest``: one configured dataset's raw files -> its canonical folder (imports only the standard library at module level)."""

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

    from seg.kinds.ingest import default_out, ingest_dataset, summary
    from seg.settings import load_config

    # Unreadable TIFFs become one SegError line; tifffile's own warnings would only add noise.
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    cfg = load_config(args.config)
    out = getattr(args, "out", None) or default_out(cfg, args.dataset)
    meta = ingest_dataset(cfg, args.dataset, out)
    print(f"ingested {summary(meta)} -> {out} ({len(meta['files'])} raw files, sha256 in meta.json)")
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
}
