"""``seg weights``: the U-Net border-weight maps of a canonical dataset's annotated slices, written
beside it (``<data_dir>/<dataset>/weights/``), with the class weights of the training split.

The maps themselves are :func:`seg.transforms.weights.border_weight_map`; this module applies them
to a dataset with the run's resolved settings (``sigma`` and ``sparse_band``: the config's, else
the plan's) and draws the preview.
"""

from __future__ import annotations

import os
from pathlib import Path

from seg.config import dataset_dir
from seg.data import canonical
from seg.errors import SegError
from seg.io import atomic_path, read_tiff, write_json, write_tiff
from seg.progress import progress
from seg.settings import RunSettings
from seg.transforms.weights import annotated_region, border_weight_map, class_weights


def write_weights(cfg: dict, dataset: str, *, data_dir: str | os.PathLike | None = None,
                  out: str | os.PathLike | None = None, preview: bool = True) -> dict:
    """Write ``weights/<id>.tif`` (float32 (H, W)) for every annotated slice of ``dataset``,
    ``class_weights.json`` and (``preview``) ``preview.png`` into ``out`` (default ``<data_dir>/<dataset>/weights``),
    atomically; returns the ``class_weights.json`` document (plus ``n_maps`` and ``out``).

    Raises:
        SegError: no annotated training slice.
    """
    ds = dataset_dir(cfg, dataset, data_dir)
    out = ds / "weights" if out is None else Path(out)
    meta = canonical.load_meta(ds)
    plan = RunSettings(cfg, dataset, ds_dir=ds, meta=meta).plan
    wcfg = plan.weights()  # sigma, sparse_band: the config's, else the plan's
    n_classes = len(meta["classes"])
    train = [e for e in canonical.slices(meta, "train") if e.get("semantic")]
    if not train:
        raise SegError(f"{ds / 'meta.json'}: no annotated training slice to compute class weights from")
    band = sparse_band(meta, wcfg)
    sparse = band is not None
    wc = training_class_weights(ds, train, n_classes, wcfg, band) or [1.0] * n_classes
    annotated = [e for e in meta["slices"] if e.get("instances") and e.get("semantic")]
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for e in progress(annotated, desc=f"weights {dataset}", unit="slice"):
            w = border_weight_map(canonical.load_instances(ds, e), w0=wcfg["w0"], sigma=wcfg["sigma"],
                                  class_weights=wc, semantic=canonical.load_semantic(ds, e), band=band)
            write_tiff(tmp / f"{e['id']}.tif", w)
        doc = {
            "w_c": wc, "classes": meta["classes"], "w0": wcfg["w0"], "sigma": wcfg["sigma"],
            "class_balance": wcfg["class_balance"], "from_split": "train", "train_slices": [e["id"] for e in train],
            "formula": "w = w_c[class] + w0*exp(-(d1+d2)^2/(2 sigma^2)) on class-0 pixels; "
                       "w_c[k] = N / (K * N_k) over training pixels",
            "annotations": "sparse" if sparse else "full",
            "sources": {k: plan.setting(f"weights.{k}").source for k in ("sigma", "sparse_band")}}
        if sparse:
            doc.update(sparse_band=band, ignored="w = 0 on every pixel farther than sparse_band px from "
                       "an annotated object (it may be an unannotated object); w_c counted over the other pixels")
        write_json(tmp / "class_weights.json", doc)
        if preview:
            first = train[0]
            weights_preview(tmp / "preview.png", canonical.load_raw_image(ds, first),
                             canonical.load_semantic(ds, first), read_map(tmp / f"{first['id']}.tif"),
                             title=f"{dataset} {first['id']}: image | label | weight map",
                             band=band)
    return {**doc, "n_maps": len(annotated), "out": str(out)}


def sparse_band(meta: dict, wcfg: dict) -> float | None:
    """The background band (px) the loss counts around annotated objects for a sparsely annotated
    dataset (``weights.sparse_band``), None for a fully annotated one (every pixel counts)."""
    return float(wcfg["sparse_band"]) if meta.get("annotations", "full") == "sparse" else None


def training_class_weights(ds, train: list[dict], n_classes: int, wcfg: dict, band: float | None) -> list[float] | None:
    """w_c from the training slices' class maps, over the pixels the loss counts (all of them, or with
    ``band`` only the annotated region); None without ``class_balance``."""
    if not wcfg["class_balance"]:
        return None

    def counted(e):
        sem = canonical.load_semantic(ds, e)
        return sem if band is None else sem[annotated_region(canonical.load_instances(ds, e), band)]

    return class_weights((counted(e) for e in train), n_classes).tolist()


def read_map(path):
    """A 2D map TIFF (a weight map) as stored."""
    return read_tiff(path, ndim=2)


IGNORED_COLOR = (0.0, 0.75, 0.75)  # teal: pixels with weight 0 (sparse annotations)


def weights_preview(path, image, label, weights, *, title: str, band: float | None = None) -> None:
    """image | class map | weight map; with ``band`` (sparse annotations) the ignored pixels
    (weight 0) are drawn in :data:`IGNORED_COLOR` over the weight map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4), constrained_layout=True)
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title("image")
    axes[1].imshow(label, cmap="gray", interpolation="nearest")
    axes[1].set_title("label (class map)")
    w = np.asarray(weights)
    ignored = w == 0
    cmap = plt.get_cmap("magma").with_extremes(bad=IGNORED_COLOR)
    im = axes[2].imshow(np.ma.masked_where(ignored, w), cmap=cmap, interpolation="nearest")
    if band is not None:
        axes[2].set_title(f"weight map w(x); teal = ignored (w = 0): {100 * ignored.mean():.0f} % of "
                          f"pixels,\nfarther than {band:g} px from an annotated object", fontsize=9)
    else:
        axes[2].set_title("weight map w(x)")
    fig.colorbar(im, ax=axes[2], shrink=0.85, label="weight")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title)
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)
