"""``seg weights`` and ``seg augment``: training targets written beside the canonical dataset.

Only the standard library is imported at module level; numpy and friends load inside ``run``.
"""

from __future__ import annotations

import argparse

from seg.cli import Command


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/config.yaml", help="workflow config (YAML file)")
    p.add_argument("--dataset", required=True, help="dataset name (a key of the config's datasets)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding the canonical datasets; None = the config's data_dir")


def _weights_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--out", default=None, help="output folder; None = <data-dir>/<dataset>/weights")


def _augment_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--copies", type=int, default=None,
                   help="deformed copies per training slice; None = the config's augment.copies")
    p.add_argument("--variant", default=None,
                   help="take the augment settings of this variant (with its per_dataset overrides for --dataset, "
                        "as training does); None = the top-level augment section")
    p.add_argument("--seed", type=int, default=None, help="random seed (integer); None = the config's seed")
    p.add_argument("--out", default=None, help="output folder; None = <data-dir>/<dataset>/augmented")


def run_weights(args: argparse.Namespace) -> int:
    """Write weights/<id>.tif (float32) for every annotated slice, class_weights.json, preview.png."""
    from seg.settings import load_config
    from seg.train.weight_maps import write_weights

    doc = write_weights(load_config(args.config), args.dataset, data_dir=args.data_dir, out=args.out)
    print(f"seg weights: {doc['n_maps']} weight maps, w_c = {[round(x, 4) for x in doc['w_c']]} -> {doc['out']}")
    return 0


def run_augment(args: argparse.Namespace) -> int:
    """Write N seeded deformed copies of every training slice as a canonical-form dataset."""
    from pathlib import Path

    import numpy as np

    from seg.config import dataset_dir
    from seg.data import canonical
    from seg.errors import SegError
    from seg.io import atomic_path, read_json, write_json, write_tiff
    from seg.progress import progress
    from seg.settings import RunSettings, load_config
    from seg.targets import get_target
    from seg.transforms.augment import Augmenter
    from seg.train.weight_maps import read_map, sparse_band, training_class_weights
    from seg.transforms.weights import border_weight_map

    cfg = load_config(args.config)
    ds = dataset_dir(cfg, args.dataset, args.data_dir)
    settings = RunSettings(cfg, args.dataset, args.variant, ds_dir=ds)
    # the variant's target as it trains on the dataset: its map is deformed with the slice and written beside it
    target = get_target(None) if args.variant is None else settings.target
    own_map = target.channel_names is not None
    # a variant's settings as training uses them: its overrides, then its per_dataset ones
    aug_cfg = cfg["augment"] if args.variant is None else settings.augment
    copies = aug_cfg["copies"] if args.copies is None else args.copies
    if copies < 0:
        raise SegError(f"--copies: must be >= 0, got {copies}")
    seed = cfg["seed"] if args.seed is None else args.seed
    out = ds / "augmented" if args.out is None else Path(args.out)
    meta = canonical.load_meta(ds)
    train = [e for e in canonical.slices(meta, "train") if e.get("instances") and e.get("semantic")]
    if not train:
        raise SegError(f"{ds / 'meta.json'}: no annotated training slice to augment")
    wdir = ds / "weights"
    wcfg = settings.weights  # sigma, sparse_band: the config's, else the plan's
    if (wdir / "class_weights.json").is_file():  # written by `seg weights`
        wc = read_json(wdir / "class_weights.json")["w_c"]
    else:  # not written yet: compute them the same way
        wc = training_class_weights(ds, train, len(meta["classes"]), wcfg, sparse_band(meta, wcfg))
    augmenter = Augmenter(aug_cfg)
    new_meta = {k: v for k, v in meta.items() if k not in ("slices", "files")}
    new_meta.update(slices=[], files={}, source={"augmented_from": args.dataset, "seed": seed, "copies": copies,
                                                 "augment": aug_cfg})
    new_meta["conventions"] = {**meta.get("conventions", {}),
                               "images": "float32 (H, W), normalised per slice then augmented",
                               "weights": "float32 (H, W) border-weight map, linearly interpolated"}
    if own_map:
        new_meta["target"] = target.record(meta["classes"])
        new_meta["conventions"]["targets"] = (
            f"the variant's {target.name} training map, deformed with the slice: "
            + ("float32 (channels, H, W), linearly interpolated" if target.regression
               else "uint8 (H, W) class map, nearest"))
    shown = []
    with atomic_path(out) as tmp:
        for sub in ("images", "instances", "semantic", "weights") + (("targets",) if own_map else ()):
            (tmp / sub).mkdir(parents=True)
        for i, e in enumerate(progress(train, desc=f"augment {args.dataset}", unit="slice")):
            image = canonical.load_image(ds, e)
            inst = canonical.load_instances(ds, e)
            sem = canonical.load_semantic(ds, e)
            if (wdir / f"{e['id']}.tif").is_file():
                weights = read_map(wdir / f"{e['id']}.tif").astype(np.float32)
            else:
                weights = border_weight_map(inst, w0=wcfg["w0"], sigma=wcfg["sigma"], class_weights=wc,
                                            semantic=sem, band=sparse_band(meta, wcfg))
            arrays = {"semantic": sem, "instances": inst, "weights": weights}
            tmap = target.train_map(sem, inst) if own_map else None
            if tmap is not None:  # one (H, W) array per channel of a regression target
                arrays.update({f"target{c}": m for c, m in enumerate(tmap)} if tmap.ndim == 3 else {"target": tmap})
            row = [(image, _shown(sem, tmap))]
            for j in range(copies):
                rng = np.random.default_rng([seed, i, j])
                img, t = augmenter(image, arrays, rng)
                sid = f"{e['id']}_aug{j:02d}"
                entry = {"id": sid, "split": "train", "image": f"images/{sid}.tif", "instances": f"instances/{sid}.tif",
                         "semantic": f"semantic/{sid}.tif", "weights": f"weights/{sid}.tif",
                         "sequence": e.get("sequence"), "frame": e.get("frame"), "shape": list(img.shape),
                         "augmented_from": e["id"], "copy": j}
                write_tiff(tmp / entry["image"], img)
                write_tiff(tmp / entry["instances"], t["instances"])
                write_tiff(tmp / entry["semantic"], t["semantic"])
                write_tiff(tmp / entry["weights"], t["weights"])
                tm = None
                if tmap is not None:
                    tm = np.stack([t[f"target{c}"] for c in range(len(tmap))]) if tmap.ndim == 3 else t["target"]
                    entry["target"] = f"targets/{sid}.tif"
                    write_tiff(tmp / entry["target"], tm)
                new_meta["slices"].append(entry)
                row.append((img, _shown(t["semantic"], tm)))
            if len(shown) < 3:
                shown.append((e["id"], row[:5]))
        write_json(tmp / "meta.json", new_meta)
        _augment_preview(tmp / "preview.png", shown, title=f"{args.dataset}: original | deformed copies (seed {seed})")
    print(f"seg augment: {copies} copies x {len(train)} training slices -> {out}")
    return 0


def _shown(semantic, target_map):
    """The map a preview outlines: the class map, a three-class map, or a distance target's cell
    distance (channel 1)."""
    if target_map is None:
        return semantic
    return target_map[1] if target_map.ndim == 3 else target_map


def _augment_preview(path, rows, *, title: str) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = max(len(r) for _, r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(3 * ncols, 3 * len(rows)), squeeze=False,
                             constrained_layout=True)
    for r, (sid, row) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_axis_off()
            if c >= len(row):
                continue
            img, sem = row[c]
            ax.imshow(img, cmap="gray")
            # class maps: the outline (and a three-class map's interior); a cell distance: outline and core
            floats = np.issubdtype(np.asarray(sem).dtype, np.floating) and np.asarray(sem).max() <= 1
            levels = [0.1, 0.6] if floats else [0.5, 1.5] if np.asarray(sem).max() > 1 else [0.5]
            ax.contour(sem, levels=levels, colors=["tab:red", "tab:orange"][:len(levels)], linewidths=0.4)
            ax.set_title(sid if c == 0 else f"copy {c - 1}", fontsize=9)
    fig.suptitle(title)
    fig.savefig(path, format="png", dpi=80)
    plt.close(fig)


COMMANDS = {
    "weights": Command(
        help="U-Net border-weight maps of every annotated slice (class weights from the training split)",
        add_arguments=_weights_args,
        run=run_weights,
        description="Writes <data-dir>/<dataset>/weights/<id>.tif (float32 (H, W)), class_weights.json and "
        "preview.png. w = w_c + w0*exp(-(d1+d2)^2/(2 sigma^2)) on background pixels; w0, sigma (pixels) "
        "and class_balance come from the config's weights section.",
    ),
    "augment": Command(
        help="write N seeded elastically deformed copies of every training slice (val/test never)",
        add_arguments=_augment_args,
        run=run_augment,
        description="Writes <data-dir>/<dataset>/augmented/ in canonical form (meta.json, images/ float32 "
        "normalised, instances/, semantic/, weights/) plus preview.png. Same seed, same bytes. Settings "
        "from the config's augment section (with --variant: the variant's, and for a variant whose target "
        "is not fg_border also targets/<id>.tif, its training map deformed with the slice, outlined in "
        "the preview).",
    ),
}
