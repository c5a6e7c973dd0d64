"""``seg models`` (list the registry) and ``seg pretrain`` (in-house encoder pretraining).

Imports only the standard library at module level; torch and friends load inside ``run``.
"""

from __future__ import annotations

import argparse
import json

from seg.cli import Command
from seg.errors import SegError


def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default=None,
                   help="show only this registry name (any <decoder>-<smp encoder> also works); default: all")
    p.add_argument("--classes", type=int, default=2, help="output classes used for the parameter count")
    p.add_argument("--params", default="{}", help='model params as JSON, e.g. \'{"base_channels": 16}\'')


def _parse_params(text: str, flag: str = "--params") -> dict:
    try:
        params = json.loads(text)
    except json.JSONDecodeError as e:
        raise SegError(f"{flag}: not valid JSON ({e})") from None
    if not isinstance(params, dict):
        raise SegError(f"{flag}: must be a JSON object")
    return params


def _models_run(args: argparse.Namespace) -> int:
    import torch

    from seg.models.registry import REGISTRY, build_model, count_parameters, get_entry, size_divisor

    params = _parse_params(args.params)
    names = [args.name] if args.name else list(REGISTRY)
    entries = [get_entry(n) for n in names]  # an unknown name fails before any output
    print(f"{'name':28s} {'family':6s} {'params':>13s} {'divisor':>7s}  description")
    for name, entry in zip(names, entries):
        with torch.device("meta"):  # no memory, no init cost: shapes only
            model = build_model(name, in_channels=1, classes=args.classes, **params)
        extra = f" valid_border={model.valid_border}" if hasattr(model, "valid_border") else ""
        print(f"{name:28s} {entry.family:6s} {count_parameters(model):13,d} {size_divisor(model):7d}  "
              f"{entry.description}{extra}")
    return 0


def _pretrain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/config.yaml", help="workflow config (YAML)")
    p.add_argument("--dataset", required=True, help="dataset name from the config (its training split is used)")
    p.add_argument("--encoder", default=None,
                   help="resnet18|resnet34|resnet50|densenet121|densenet169|vgg16|unet (the encoder of a model); "
                        "required unless --variant is given")
    p.add_argument("--params", default="{}",
                   help='encoder params as JSON: vgg16 {"width": 0.25}; unet {"base_channels": 16, "depth": 4, '
                        '"batch_norm": false} (must match the segmentation variant)')
    p.add_argument("--variant", default=None,
                   help="take --encoder and --params from this config variant's model and params")
    p.add_argument("--out", required=True, help="output folder (encoder.pt, pretrain_summary.json, curve.png)")
    p.add_argument("--data-dir", default=None, help="canonical data folder; default: the config's data_dir")
    p.add_argument("--iterations", type=int, default=None,
                   help="optimiser steps; default: the config's pretrain.iterations")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (capped at the machine's cores; default: torch's choice)")
    p.add_argument("--imagefolder", default=None,
                   help="train on this torchvision ImageFolder directory instead (task imagefolder)")


def _pretrain_run(args: argparse.Namespace) -> int:
    from seg.models.pretrain import run_pretrain
    from seg.settings import load_config

    cfg = load_config(args.config)
    from seg.device import set_threads

    set_threads(args.threads)
    if args.iterations is not None and args.iterations < 1:
        raise SegError(f"--iterations: must be >= 1, got {args.iterations}")
    encoder, params = args.encoder, _parse_params(args.params)
    if args.variant is not None:
        from seg.models.classification import encoder_for

        if args.variant not in cfg["variants"]:
            raise SegError(f"--variant: unknown variant {args.variant!r} (configured: {', '.join(cfg['variants'])})")
        var = cfg["variants"][args.variant]
        v_encoder, params = encoder_for(var["model"], var.get("params", {}))
        if encoder is not None and encoder != v_encoder:
            raise SegError(f"--encoder {encoder}: variant {args.variant} uses encoder {v_encoder}")
        encoder = v_encoder
    if encoder is None:
        raise SegError("--encoder or --variant is required")
    s = run_pretrain(cfg, args.dataset, encoder, args.out, data_dir=args.data_dir, encoder_params=params,
                     iterations=args.iterations, imagefolder=args.imagefolder)
    print(f"pretrain {encoder}: held-out accuracy {s['held_out_accuracy']:.3f} "
          f"(chance {s['held_out']['chance_accuracy']:.3f}) after {s['iterations']} iterations, "
          f"{s['wall_time_s']:.0f} s -> {args.out}")
    return 0


COMMANDS = {
    "models": Command(
        help="list the model registry with parameter counts",
        add_arguments=_models_args,
        run=_models_run,
        description="List registry names (seg.models.build_model) with parameter counts at default "
        "settings, family and input size divisor.",
    ),
    "pretrain": Command(
        help="pretrain an encoder's classification version on the training split",
        add_arguments=_pretrain_args,
        run=_pretrain_run,
        description="Train the classification version of an encoder on centre-pixel patch "
        "classification of the dataset's training split (Ciresan 2012) or on an ImageFolder; writes "
        "encoder.pt, pretrain_summary.json and curve.png.",
    ),
}
