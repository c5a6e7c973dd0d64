"""``seg package`` (a trained run -> a self-contained model package) and ``seg export`` (a package
-> bioimage.io / TorchScript / ONNX). Standard library only at import time; torch loads in ``run``."""

from __future__ import annotations

import argparse
from pathlib import Path

from seg.cli import Command
from seg.errors import SegError


def _package_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", help="trained run folder results/<dataset>/<variant>/ (train_summary.json, "
                                       "checkpoints/best.pt, calibration.json, metrics.json)")
    src.add_argument("--best-of", metavar="RESULTS",
                     help="results folder: package the run of --dataset with the best test iou_mean "
                          "(the leaderboard's top row)")
    p.add_argument("--dataset", default=None, help="dataset name (with --best-of)")
    p.add_argument("--config", default="configs/config.yaml",
                   help="the config the run was trained with (the workflow's results/config.resolved.yaml)")
    p.add_argument("--data-dir", default=None,
                   help="canonical data folder (meta.json: kind, image shift, test image); unset = the config's")
    p.add_argument("--threshold-file", default=None,
                   help="calibration JSON overriding the run's calibration.json / the config's threshold")
    p.add_argument("--allow-config-mismatch", action="store_true",
                   help="package even if the config's hash differs from the run's (recorded in the package)")
    p.add_argument("--out", required=True, help="package folder (e.g. results/models/<dataset>/package), or a "
                                                "path ending in .zip for a zip archive; replaced atomically")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")


def _package_run(args: argparse.Namespace) -> int:
    from seg.device import set_threads
    from seg.packaging.build import best_run, build_package
    from seg.package.format import write_package
    from seg.settings import load_config

    set_threads(args.threads)
    cfg = load_config(args.config)
    if args.best_of is not None:
        if not args.dataset:
            raise SegError("--best-of needs --dataset")
        run = best_run(args.best_of, args.dataset)
    else:
        run = args.run_dir
    pkg = build_package(cfg, run, data_dir=args.data_dir, threshold_file=args.threshold_file,
                        allow_config_mismatch=args.allow_config_mismatch)
    write_package(pkg, args.out)
    m = pkg.meta
    print(f"seg package: {run} -> {args.out} ({m['model']['name']}, {m['dataset']['kind']}, threshold "
          f"{m['threshold']['value']:g}, tta {m['inference']['tta']}, format version {m['format_version']})")
    return 0


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model package (folder or .zip) or run folder")
    p.add_argument("--format", required=True, choices=["bioimageio", "torchscript", "onnx"],
                   help="bioimageio: a bioimage.io model package (spec 0.5; TorchScript + ONNX weights); "
                        "torchscript / onnx: the graph file with export.json and test tensors")
    p.add_argument("--out", required=True,
                   help="bioimageio: a .zip (or a folder); torchscript/onnx: a folder (model.pt / model.onnx, "
                        "export.json, test_input.npy, test_output.npy, README.md); replaced atomically")
    p.add_argument("--no-tta", action="store_true",
                   help="leave the 8-fold test-time augmentation out of the graph even if the package uses it")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="largest tolerated |export - PyTorch| on the test image and a crop of it")
    p.add_argument("--author", action="append", default=None,
                   help="bioimageio: an author name (repeatable; default 'seg pipeline')")
    p.add_argument("--no-test", action="store_true",
                   help="bioimageio: skip bioimageio.core's test of the written package (validation still runs)")
    p.add_argument("--from-exports", nargs="+", default=None, metavar="EXPORT_DIR",
                   help="bioimageio: take the TorchScript / ONNX graphs from these folders written by "
                        "`seg export --format torchscript|onnx` of the same package (checked: same package, "
                        "checkpoint, TTA and tolerance) instead of exporting and checking them again")
    p.add_argument("--allow-refusal", action="store_true",
                   help="torchscript/onnx: if the model's family cannot be exported to the format, write --out "
                        "with export.json saying why (exported: false) and exit 0 instead of failing")
    p.add_argument("--config", default=None, help="config of a run folder given as --model")
    p.add_argument("--data-dir", default=None, help="canonical data folder of a run folder given as --model")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")


def _reused_exports(folders: list[str] | None) -> dict | None:
    """{format: folder} of ``--from-exports`` (the format read from each folder's export.json)."""
    if not folders:
        return None
    from seg.io import read_json

    reuse = {}
    for folder in map(Path, folders):
        doc = folder / "export.json"
        if not doc.is_file():
            raise SegError(f"{folder}: not an export folder (no export.json)")
        fmt = read_json(doc).get("format")
        if fmt not in ("torchscript", "onnx") or fmt in reuse:
            raise SegError(f"{doc}: format {fmt!r} is not torchscript or onnx, or given twice in --from-exports")
        reuse[fmt] = folder
    return reuse


def _export_run(args: argparse.Namespace) -> int:
    from seg.device import set_threads
    from seg.packaging.load import load_package

    set_threads(args.threads)
    pkg = load_package(args.model, config=args.config, data_dir=args.data_dir, with_test=True)
    tta = False if args.no_tta else None
    if args.format == "bioimageio":
        from seg.export.bioimageio import write_bioimageio

        r = write_bioimageio(pkg, args.out, tta=tta, atol=args.atol, authors=args.author, run_test=not args.no_test,
                             reuse=_reused_exports(args.from_exports))
        test = "not run" if r["test"] is None else r["test"]["status"]
        skipped = "".join(f"; no {k}: {v}" for k, v in r["not_exported"].items())
        print(f"seg export: {pkg.name} -> {args.out} (bioimage.io, weights {', '.join(r['weights'])}; "
              f"bioimageio.core test {test}{skipped})")
        return 0
    from seg.export.exporters import unsupported_reason, write_export, write_refusal

    reason = unsupported_reason(pkg.model, args.format)
    if reason and args.allow_refusal:
        write_refusal(pkg, args.format, args.out, reason)
        print(f"seg export: {pkg.name}: not exported to {args.format} ({reason}); the reason is in "
              f"{args.out}/export.json")
        return 0
    d = write_export(pkg, args.format, args.out, tta=tta, atol=args.atol)
    c = d["checks"]
    print(f"seg export: {pkg.name} -> {args.out} ({d['exporter']}; max |export - PyTorch| "
          f"{c['max_abs_diff_vs_pytorch_test_input']:.1e} on the test image)")
    return 0


COMMANDS = {
    "package": Command(
        help="package a trained run: weights, preprocessing, inference and post-processing settings, metrics",
        add_arguments=_package_arguments,
        run=_package_run,
        description="Write a self-contained model package (package.json, weights.pt, test image and its "
        "probabilities, README.md) that seg segment and seg export load without the run, its config or "
        "the data folder.",
    ),
    "export": Command(
        help="export a model package to bioimage.io, TorchScript or ONNX (preprocessing inside, checked)",
        add_arguments=_export_arguments,
        run=_export_run,
        description="The exported graph takes the raw image (float32 (N, 1, H, W)) and returns softmax "
        "probabilities (N, classes, H, W): shift/normalisation, padding to the network's size contract "
        "and TTA are inside. Every export is compared with PyTorch on the package's test image and an "
        "odd-sized crop of it (--atol); networks that cannot be exported are refused with the reason.",
    ),
}
