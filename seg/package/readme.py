"""The README.md written into every model package and bioimage.io export (Markdown, from package.json).

It says what the model is, what its inputs and outputs mean, the preprocessing it applies, how it
was trained and how well it did on held-out data (the ``Validation`` section bioimage.io asks for),
and how to run it with ``seg segment``, from Python, or from the exported graphs.
"""

from __future__ import annotations

import json

from seg.kinds import get_kind

CITATIONS = {
    "unet": "Ronneberger O., Fischer P., Brox T. (2015) U-Net: Convolutional Networks for Biomedical "
            "Image Segmentation. MICCAI 2015, LNCS 9351:234-241. doi:10.1007/978-3-319-24574-4_28",
    "fcn": "Long J., Shelhamer E., Darrell T. (2015) Fully Convolutional Networks for Semantic "
           "Segmentation. CVPR 2015. doi:10.1109/CVPR.2015.7298965",
    "smp": "Iakubovskii P. (2019) Segmentation Models Pytorch. "
           "https://github.com/qubvel-org/segmentation_models.pytorch",
}
def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _model_lines(meta: dict) -> list[str]:
    """Title, what the network is, its inputs and outputs, and the preprocessing steps."""
    m, ds, th, pp = meta["model"], meta["dataset"], meta["threshold"], meta["postprocess"]
    out = meta["outputs"]
    lines = [
        f"# {meta['name']}: {m.get('label', m['name'])} for {ds['name']} ({ds['kind']})",
        "",
        f"A `{m['name']}` network ({m['family']} family, {m['parameters']:,} parameters, params "
        f"`{json.dumps(m['params'], sort_keys=True)}`) trained by the `seg` pipeline (seg "
        f"{meta['seg_version']}) on the {ds['name']} dataset. Classes: {', '.join(ds['classes'])}"
        + (f"; the network predicts {', '.join(out['classes'])} (target {meta['target']['name']})"
           if meta.get("target") and list(out.get("classes", ds["classes"])) != list(ds["classes"]) else "") + ".",
        "",
        "## Inputs and outputs",
        "",
        f"- Input: {meta['preprocessing']['input']}.",
        f"- Probability map: {out['probability']}.",
        f"- Segmentation: {out['segmentation']}.",
        f"- Decision threshold on the class-1 probability: {_fmt(th['value'])} ({th['source']}).",
        f"- Post-processing: {', '.join(f'{k} {_fmt(v)}' for k, v in pp.items())}.",
        *_scale_lines(meta),
        "",
        "## Preprocessing (applied by `seg segment` and inside every exported graph)",
        "",
    ]
    for i, step in enumerate(meta["preprocessing"]["steps"], 1):
        if step["op"] == "shift":
            lines.append(f"{i}. Shift by {step['shift']} {step['units']}: {step['method']}. Why: {step['why']}.")
        else:
            lines.append(f"{i}. Normalise {step['over']}: {step['formula']}.")
    return lines


def _scale_lines(meta: dict) -> list[str]:
    """What object size the model expects (``scale``) and where it came from (``lineage``)."""
    sc, lin = meta.get("scale"), meta.get("lineage") or {}
    lines = []
    if sc:
        lines.append(
            f"- Object scale: trained on objects of median equivalent diameter {_fmt(sc['diameter'])} px "
            f"(p25-p75 {_fmt(sc['spread']['p25'])}-{_fmt(sc['spread']['p75'])} px)"
            + (f", resized by {_fmt(sc['factor'])} for the network (it learned {_fmt(sc['network_diameter'])} px)"
               if sc.get("factor", 1) != 1 else "")
            + ". For images whose objects are another size, `seg segment --diameter D` (or `auto`) resizes "
              "them to this scale and maps the results back. The exported graphs (TorchScript, ONNX, "
              f"bioimage.io) run at the network's own scale: objects of {_fmt(sc['network_diameter'])} px; "
              "resize other images before them.")
    parent = lin.get("parent")
    if parent:
        lines.append(f"- Started from the package {parent['name']} (weights SHA-256 {parent['weights_sha256'][:12]}...)"
                     + (f", {lin['steps']} steps" if lin.get("steps") else "") + ".")
    return lines


def _inference_lines(meta: dict) -> list[str]:
    """The tiling, blending, TTA and precision settings and the size contract."""
    m, inf = meta["model"], meta["inference"]
    return [
        "",
        "## Inference settings",
        "",
        f"Tiles of {inf['tile']} px (output), overlap {inf['overlap']}, {inf['blend']} blending, batch "
        f"{inf['batch_size']}, test-time augmentation (8 flips/rotations) {'on' if inf['tta'] else 'off'}, "
        f"mixed precision `{inf['amp']}`. Size contract: valid border {m['valid_border']} px, size divisor "
        f"{m['size_divisor']}, smallest whole-image input {m['min_size']} px.",
    ]


def _validation_lines(meta: dict) -> list[str]:
    """The ``Validation`` section: the held-out scores (if the run was scored) and the training run."""
    ds, tr = meta["dataset"], meta.get("training") or {}
    lines = ["", "## Validation", ""]
    metrics = meta.get("metrics")
    if metrics and metrics.get("aggregate"):
        agg = metrics["aggregate"]
        shown = {k: v for k, v in agg.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        lines.append(f"Held-out `{metrics.get('split')}` split of {ds['name']} (never used for training or "
                     f"for choosing the threshold), primary metric `{metrics.get('primary')}`:")
        lines.append("")
        lines += [f"- {k}: {_fmt(v)}" for k, v in sorted(shown.items())]
    else:
        lines.append("This run was not scored on a held-out split when it was packaged.")
    lines += [
        "",
        f"Training: variant `{tr.get('variant')}`, config hash `{tr.get('config_hash')}`, seed {tr.get('seed')}, "
        f"{tr.get('iterations')} iterations, best checkpoint at iteration {tr.get('best_iteration')} "
        f"(val IoU {_fmt(tr.get('best_val_iou'))}).",
        "",
        "To validate on your own annotated images, segment them (below) and compare the segmentation with "
        "your labels (IoU per class; for cells also the Cell Tracking Challenge SEG measure).",
    ]
    return lines


def _usage_lines(meta: dict) -> list[str]:
    """How to run the package (``seg segment``, Python, the exports) and what to cite."""
    return [
        "",
        "## Usage",
        "",
        "```bash",
        f"seg segment --model path/to/{meta['name']} my_images/ --out my_results/",
        "```",
        "",
        "```python",
        "import seg, tifffile",
        f"probabilities, labels = seg.segment(tifffile.imread('image.tif'), 'path/to/{meta['name']}')",
        "```",
        "",
        "Exports (`seg export --format bioimageio|torchscript|onnx`) take the raw image (float32 of its "
        "values, shape (N, 1, H, W)) and return softmax probabilities (N, classes, H, W); they contain the "
        "preprocessing above and the tiling, blending and test-time augmentation of `seg segment`, so "
        "they reproduce its probabilities (checked to 1e-4 when exported).",
        "",
        "## Citations",
        "",
        f"- {CITATIONS.get(meta['model']['family'], CITATIONS['unet'])}",
        f"- {get_kind(meta['dataset']['kind']).citation}",
        "",
    ]


def package_readme(meta: dict) -> str:
    """Markdown documentation of a package (``meta`` = its package.json document)."""
    lines = _model_lines(meta) + _inference_lines(meta) + _validation_lines(meta) + _usage_lines(meta)
    return "\n".join(lines)
