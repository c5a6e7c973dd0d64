"""``seg zoo``: the catalogue of classic classification architectures (stdlib-only imports here)."""

from __future__ import annotations

import argparse

from seg.cli import Command


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--name",
        action="append",
        default=None,
        help="show this architecture (key or title, e.g. resnet50 or ResNet-50) with the output "
        "shape of each stage at its native input size, instead of the table of all; repeatable",
    )
    p.add_argument(
        "--json",
        metavar="FILE",
        default=None,
        help="also write the measured catalogue (with per-stage shapes) to FILE as JSON; "
        "not written if omitted",
    )
    p.add_argument(
        "--table1",
        action="store_true",
        help="also compare the paper-faithful GoogLeNet blocks with Szegedy et al. 2015 Table 1 "
        "(params in K = 1024 weights, ops in 10^6 mult-adds)",
    )


def _fmt_table(rows: list[dict]) -> str:
    head = ("name", "params (M)", "mult-adds (G)", "input", "year", "paper")
    lines = []
    for r in rows:
        params = f"{r['params'] / 1e6:.3f}" if r["params"] < 1e6 else f"{r['params'] / 1e6:.1f}"
        if r["params_with_aux"] != r["params"]:
            params += f" ({r['params_with_aux'] / 1e6:.1f} with aux)"
        madds = r["mult_adds"] / 1e9
        lines.append((
            r["title"], params, f"{madds:.4f}" if madds < 0.01 else f"{madds:.2f}",
            "x".join(map(str, r["input"])), str(r["year"]), r["paper"],
        ))  # fmt: skip
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head) - 1)]
    out = []
    for row in [head, *lines]:
        cells = [
            c.ljust(w) if i in (0, 3) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
        ]
        out.append("  ".join(cells + [row[-1]]))
    out.insert(1, "-" * len(out[0]))
    out.append(
        "mult-adds = FLOPs / 2 from torch.utils.flop_counter (convolutions and matrix products; "
        "bias, norm, activation, pooling not counted), one image at the input size shown."
    )
    return "\n".join(out)


def _fmt_stages(r: dict) -> str:
    aux = r["params_with_aux"]
    aux_note = f" ({aux:,} with auxiliary heads)" if aux != r["params"] else ""
    pp, pm = r["published_params_m"], r["published_madds_g"]
    pub = (f"{pp} M params" if pp is not None else "no parameter count") + ", " + (
        f"{pm} G mult-adds" if pm is not None else "no mult-adds"
    )
    out = [
        f"{r['title']} ({r['year']}; {r['paper']}); built from {r['source']}",
        f"input {'x'.join(map(str, r['input']))}: {r['params']:,} parameters{aux_note}, "
        f"{r['mult_adds'] / 1e9:.4f} G mult-adds",
        f"published: {pub} ({r['reference']})",
        f"trunk: {r['trunk']['channels']} channels, stride {r['trunk']['stride']}",
    ]
    if r["notes"]:
        out.append(f"notes: {r['notes']}")
    w = max(len(s["stage"]) for s in r["stages"])
    mw = max(len(s["module"]) for s in r["stages"])
    for s in r["stages"]:
        shape = "x".join(map(str, s["shape"])) if s["shape"] else "(not run)"
        out.append(f"  {s['stage'].ljust(w)}  {s['module'].ljust(mw)}  {shape}")
    return "\n".join(out)


def _fmt_table1(rows: list[dict]) -> str:
    out = [
        "GoogLeNet paper blocks vs Szegedy et al. 2015 Table 1 "
        "(params: weights / 1024; ops: mult-adds / 1e6)",
        f"{'block':12s} {'params K':>9s} {'paper':>6s} {'err':>7s}  "
        f"{'ops M':>7s} {'paper':>6s} {'err':>7s}",
    ]
    for r in rows:
        flag = "" if r["reproducible"] else "  (table inconsistent with its own columns)"
        out.append(
            f"{r['name']:12s} {r['params_k']:9.1f} {r['published_params_k']:6.0f} "
            f"{r['params_rel_err']:+7.1%}  {r['ops_m']:7.1f} {r['published_ops_m']:6.0f} "
            f"{r['ops_rel_err']:+7.1%}{flag}"
        )
    return "\n".join(out)


def _run(args: argparse.Namespace) -> int:
    from seg.io import write_json
    from seg.models import zoo

    if args.name:
        rows = zoo.catalogue(args.name, shapes=True)
        print("\n\n".join(_fmt_stages(r) for r in rows))
    else:
        rows = zoo.catalogue(shapes=args.json is not None)
        print(_fmt_table(rows))
    table1 = None
    if args.table1:
        from seg.models.zoo.googlenet_paper import TABLE1, paper_block_counts

        table1 = [paper_block_counts(row) for row in TABLE1]
        print()
        print(_fmt_table1(table1))
    if args.json:
        doc = {"architectures": rows}
        if table1 is not None:
            doc["googlenet_table1"] = table1
        write_json(args.json, doc)
        print(f"wrote {args.json}")
    return 0


COMMANDS = {
    "zoo": Command(
        help="catalogue of classic classification architectures: params, mult-adds, stage shapes",
        add_arguments=_add_arguments,
        run=_run,
        description="List LeNet-5, AlexNet, ZFNet, VGG, GoogLeNet, ResNet, ResNeXt, SE-ResNet and "
        "DenseNet with parameter counts, multiply-adds at the native input size and (with --name) "
        "the output shape of each stage. Nothing is downloaded; weights are random.",
    )
}
