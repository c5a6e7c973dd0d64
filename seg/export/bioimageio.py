"""bioimage.io model packages (spec 0.5, validated by ``bioimageio.spec``, tested by ``bioimageio.core``).

The package holds the same graph as the TorchScript and ONNX exports (:mod:`seg.export.exporters`):
raw image in, softmax probabilities out, with the preprocessing, the size contract and TTA inside.
So its input tensor ``raw`` is float32 (batch, channel, y, x) of the image's raw values with no
declared preprocessing; ``y`` and ``x`` take any size ``min_size + n * size_divisor`` (the graph pads
to what the network accepts). Its output ``probabilities`` is float32 (batch, channel, y, x) with
one channel per class, the same size as the input. Weights: TorchScript always, ONNX too unless the
network cannot be exported to ONNX (:func:`seg.export.exporters.unsupported_reason`, stated in the
package's documentation). Documentation (README.md with a Validation section), citations, a
licence (MIT, as seg), authors and a cover image (the test image beside its probability map) are
generated. The test tensors are the seg package's test image and the PyTorch graph's output on it.

:func:`write_bioimageio` writes a ``.zip`` (or a folder) atomically and, unless told not to, runs
``bioimageio.core.test_model`` on the written package on the CPU; a failing test refuses it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from seg.errors import SegError
from seg.export.exporters import GRAPH_FILES, INPUT_NAME, OUTPUT_NAME, build_graph, export_graph, unsupported_reason
from seg.io import atomic_path, read_json
from seg.package.readme import CITATIONS, package_readme

LICENSE = "MIT"
DEFAULT_AUTHOR = "seg pipeline"


def _cover(image: np.ndarray, probability: np.ndarray, path: Path, title: str) -> None:
    """A 2:1 PNG: the raw test image beside its class-1 probability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 4), dpi=100)
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title("input", fontsize=10)
    axes[1].imshow(probability, cmap="magma", vmin=0, vmax=1)
    axes[1].set_title(title, fontsize=10)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _name(pkg) -> str:
    """A bioimage.io resource name (letters, digits, ``_+- ()``, 5..128 characters)."""
    name = re.sub(r"[^A-Za-z0-9_+\- ()]", "-", f"seg {pkg.name}")
    return name[:128]


def _documentation(pkg, formats: dict, refused: dict) -> str:
    extra = ["## bioimage.io package", "",
             "Input `raw`: float32 (batch, channel=1, y, x), the image's raw values; no preprocessing is "
             "declared because the graph applies it itself (see Preprocessing). Give whole images: the "
             "normalisation uses the statistics of the image the graph receives, so tiles of an image "
             "would be normalised differently from the whole.",
             "Output `probabilities`: float32 (batch, channel, y, x), "
             + ("softmax over the classes " if pkg.activation == "softmax" else "sigmoid maps in [0, 1] of ")
             + f"{', '.join(pkg.meta['outputs']['classes'])}; "
             + (f"channel 1 is the {pkg.meta['outputs']['probability']}." if len(pkg.meta['outputs']['classes']) == 2
                else f"channels 1 + 2 give the {pkg.meta['outputs']['probability']}."),
             "", "Weight formats: " + ", ".join(f"{k} ({v})" for k, v in formats.items()) + "."]
    extra += [f"Not included: {k}, because the network {v}." for k, v in refused.items()]
    return package_readme(pkg.meta) + "\n" + "\n".join(extra) + "\n"


def _export_graphs(pkg, work: Path, tta: bool | None, atol: float,
                   reuse: dict | None = None) -> tuple[dict, dict, dict]:
    """Export every weight format the network supports into ``work``.

    ``reuse`` {format: folder} names exports already written by ``seg export --format torchscript|onnx``
    (the workflow's ``export`` rule): a folder made from this package (same name and checkpoint
    SHA-256), with the same TTA setting and checked to ``atol`` or tighter, is copied instead of
    exported and checked again; its refusal (``exported: false``) is taken as is. Anything else is a
    SegError naming the folder.

    Returns (formats {format: exporter}, refused {format: why the network cannot be exported},
    descs {format: :func:`seg.export.exporters.export_graph`'s description}).
    """

    formats, refused, descs = {}, {}, {}
    for fmt in ("torchscript", "onnx"):
        if reuse and fmt in reuse:
            desc = _reused_export(pkg, Path(reuse[fmt]), fmt, work, tta, atol)
            if not desc["exported"]:
                refused[fmt] = desc["reason"]
                continue
        else:
            reason = unsupported_reason(pkg.model, fmt)
            if reason:
                refused[fmt] = reason
                continue
            desc = export_graph(pkg, fmt, work, tta=tta, atol=atol)
        descs[fmt], formats[fmt] = desc, desc["exporter"]
    return formats, refused, descs


def _reused_export(pkg, folder: Path, fmt: str, work: Path, tta: bool | None, atol: float) -> dict:
    """The ``export.json`` of the ``fmt`` export in ``folder`` after checking it belongs to ``pkg``
    (see :func:`_export_graphs`); its graph file is copied into ``work``."""

    doc_path = folder / "export.json"
    if not doc_path.is_file():
        raise SegError(f"{folder}: not an export folder (no export.json)")
    doc = read_json(doc_path)
    want_tta = bool(pkg.inference["tta"]) if tta is None else bool(tta)
    sha = (pkg.meta.get("training") or {}).get("checkpoint_sha256")
    problems = [what for what, bad in (
        (f"format {doc.get('format')!r}, not {fmt!r}", doc.get("format") != fmt),
        (f"made from package {doc.get('package')!r}, not {pkg.name!r}", doc.get("package") != pkg.name),
        ("made from another checkpoint", doc.get("exported") and (doc.get("training") or {}).get("checkpoint_sha256") != sha),
        (f"TTA {doc.get('tta')} in the graph, {want_tta} wanted", doc.get("exported") and bool(doc.get("tta")) != want_tta),
        (f"checked to {(doc.get('checks') or {}).get('atol')}, looser than {atol:g}",
         doc.get("exported") and not (doc.get("checks") or {}).get("atol", float("inf")) <= atol),
    ) if bad]
    if problems:
        raise SegError(f"{doc_path}: cannot be reused for the bioimage.io package of {pkg.name}: {'; '.join(problems)}")
    if doc.get("exported"):
        graph = folder / GRAPH_FILES[fmt]
        if not graph.is_file():
            raise SegError(f"{graph}: missing (named by {doc_path})")
        shutil.copyfile(graph, work / GRAPH_FILES[fmt])
    return doc


def _write_test_tensors(pkg, work: Path, tta: bool | None) -> None:
    """``test_input.npy`` float32 (1, 1, H, W) of the test image's raw values, ``test_output.npy`` the
    PyTorch graph's float32 (1, classes, H, W) probabilities on it, and ``cover.png``."""
    import torch


    test_in = pkg.test_input.astype(np.float32)[None, None]
    with torch.inference_mode():
        test_out = build_graph(pkg, tta=tta)(torch.from_numpy(test_in)).numpy()
    np.save(work / "test_input.npy", test_in)
    np.save(work / "test_output.npy", test_out)
    _cover(pkg.test_input, test_out[0, 1], work / "cover.png", f"p({pkg.meta['outputs']['classes'][1]})")


def _export_files(pkg, work: Path, tta: bool | None, atol: float, reuse: dict | None = None) -> tuple[dict, dict]:
    """Write the package's files into ``work``: the graphs (exported, or copied from ``reuse``), the
    test tensors, the cover and README.md.

    Returns (refused, descs) as :func:`_export_graphs`.
    """
    formats, refused, descs = _export_graphs(pkg, work, tta, atol, reuse)
    _write_test_tensors(pkg, work, tta)
    (work / "README.md").write_text(_documentation(pkg, formats, refused))
    return refused, descs


def _space_axes(m: dict) -> tuple[list, list]:
    """The (y, x) axes of the input (any size ``lo + n * size_divisor``, ``lo`` at least 16 px) and of
    the output (the input's size); ``m`` = the package's ``model`` section."""
    from bioimageio.spec.model import v0_5 as b


    step = int(m["size_divisor"])
    lo = max(int(m["min_size"]), step, 16)
    lo = -(-lo // step) * step
    space_in = [b.SpaceInputAxis(id=b.AxisId(a), size=b.ParameterizedSize(min=lo, step=step)) for a in ("y", "x")]
    space_out = [b.SpaceOutputAxis(id=b.AxisId(a), size=b.SizeReference(tensor_id=b.TensorId(INPUT_NAME),
                                                                         axis_id=b.AxisId(a))) for a in ("y", "x")]
    return space_in, space_out


def _weights(work: Path, descs: dict) -> dict:
    """The weight entries {format: WeightsDescr} of the graphs exported into ``work``."""
    import torch
    from bioimageio.spec.model import v0_5 as b


    weights = {}
    if "torchscript" in descs:
        weights["torchscript"] = b.TorchscriptWeightsDescr(source=work / GRAPH_FILES["torchscript"],
                                                           pytorch_version=b.Version(torch.__version__))
    if "onnx" in descs:
        weights["onnx"] = b.OnnxWeightsDescr(source=work / GRAPH_FILES["onnx"], opset_version=descs["onnx"]["opset"],
                                             parent="torchscript" if "torchscript" in descs else None)
    return weights


def _summary(pkg) -> str:
    """The one-paragraph ``description`` of the resource."""
    m = pkg.meta["model"]
    return (f"{m.get('label', m['name'])} ({m['name']}) trained on {pkg.meta['dataset']['name']} by "
            f"the seg pipeline: per-pixel probabilities of {' / '.join(pkg.meta['outputs']['classes'])}"
            + pkg.dataset_kind.summary_tail)


def _citations(family: str, kind) -> list:
    """The network's paper (U-Net's DOI, or the smp URL) and the dataset kind's paper, as CiteEntry."""
    from bioimageio.spec.model import v0_5 as b


    return [b.CiteEntry(text=CITATIONS.get(family, CITATIONS["unet"]),
                        doi=b.Doi(re.search(r"doi:(\S+)", CITATIONS["unet"]).group(1))
                        if family != "smp" else None,
                        url=None if family != "smp" else b.HttpUrl(CITATIONS["smp"].split()[-1])),
            b.CiteEntry(text=kind.citation, doi=b.Doi(re.search(r"doi:(\S+)", kind.citation).group(1)))]


def _input_tensor(work: Path, space_in: list):
    """The input ``raw``: float32 (batch, channel=1, y, x) of the raw image values."""
    from bioimageio.spec.model import v0_5 as b


    return b.InputTensorDescr(
        id=b.TensorId(INPUT_NAME),
        axes=[b.BatchAxis(), b.ChannelAxis(channel_names=[b.Identifier("raw")]), *space_in],
        test_tensor=b.FileDescr(source=work / "test_input.npy"),
        data=b.IntervalOrRatioDataDescr(type="float32"),
        description="raw image values, not normalised: the model shifts and normalises per image",
    )


def _output_tensor(pkg, work: Path, channels: list, space_out: list):
    """The output ``probabilities``: float32 (batch, channel = one per class, y, x) in [0, 1];
    ``channels`` = the class names as Identifiers."""
    from bioimageio.spec.model import v0_5 as b


    names = pkg.meta['outputs']['classes']
    return b.OutputTensorDescr(
        id=b.TensorId(OUTPUT_NAME),
        axes=[b.BatchAxis(), b.ChannelAxis(channel_names=channels), *space_out],
        test_tensor=b.FileDescr(source=work / "test_output.npy"),
        data=b.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        description=((f"softmax probabilities of {', '.join(names)}; channel 1 = p({names[1]})"
                      if pkg.activation == "softmax" else f"sigmoid maps: {', '.join(names)}")
                     + pkg.dataset_kind.output_note)[:128],
    )


def _config(pkg, atol: float, refused: dict):
    """bioimage.io's own config (reproducibility tolerance, architecture, modality, target) and
    ``seg``'s (the package's settings, training and metrics, the formats not exported)."""
    from bioimageio.spec.model import v0_5 as b

    m, kind = pkg.meta["model"], pkg.dataset_kind
    return b.Config(
        bioimageio=b.BioimageioConfig(
            reproducibility_tolerance=[b.ReproducibilityTolerance(absolute_tolerance=atol,
                                                                  relative_tolerance=0.0,
                                                                  mismatched_elements_per_million=0)],
            architecture_type=m["name"][:32],
            modality=kind.modality, target_structure=list(kind.target_structure)),
        seg={"package": pkg.name, "kind": kind.name, "threshold": pkg.meta["threshold"],
             "postprocess": pkg.meta["postprocess"], "preprocessing": pkg.meta["preprocessing"],
             "inference": pkg.meta["inference"], "training": pkg.meta.get("training"),
             "metrics": pkg.meta.get("metrics"), "not_exported": refused})


def build_description(pkg, work: Path, *, tta: bool | None = None, atol: float = 1e-4,
                      authors: list[str] | None = None, reuse: dict | None = None):
    """Export the graphs into ``work`` (or copy the checked exports of ``reuse``, see
    :func:`_export_graphs`) and return the validated ``bioimageio.spec`` ModelDescr.

    Raises:
        SegError: the TorchScript export fails its check, or the description does not validate.
    """
    from bioimageio.spec.model import v0_5 as b

    refused, descs = _export_files(pkg, work, tta, atol, reuse)
    m = pkg.meta["model"]
    space_in, space_out = _space_axes(m)
    classes = [b.Identifier(c) for c in pkg.meta['outputs']['classes']]
    weights = _weights(work, descs)
    kind = pkg.dataset_kind
    try:
        descr = b.ModelDescr(
            name=_name(pkg),
            description=_summary(pkg),
            authors=[b.Author(name=a) for a in (authors or [DEFAULT_AUTHOR])],
            cite=_citations(m["family"], kind),
            license=b.LicenseId(LICENSE),
            documentation=b.FileDescr(source=work / "README.md"),
            covers=[b.FileDescr(source=work / "cover.png")],
            tags=["segmentation", "2d", "pytorch", m["family"], kind.tag],
            inputs=[_input_tensor(work, space_in)],
            outputs=[_output_tensor(pkg, work, classes, space_out)],
            weights=b.WeightsDescr(**weights),
            config=_config(pkg, atol, refused),
        )
    except Exception as e:  # pydantic ValidationError: the spec's own message
        raise SegError(f"export bioimageio: the description of {pkg.name} does not validate against the "
                       f"bioimage.io spec: {' '.join(ln.strip() for ln in str(e).strip().splitlines()[:4])[:500]}") from None
    return descr


def test_package(source: str | os.PathLike) -> dict:
    """``bioimageio.core.test_model`` of a written package on the CPU; returns {status, failed}."""
    from bioimageio.core import test_model

    with warnings.catch_warnings():  # torch.jit.load's deprecation notice, once per weight format
        warnings.simplefilter("ignore", FutureWarning)
        summary = test_model(str(source), devices=["cpu"])
    failed = [f"{d.name}: {'; '.join(e.msg for e in d.errors)[:300]}" for d in summary.details
              if d.status == "failed"]
    return {"status": summary.status, "failed": failed}


def write_bioimageio(pkg, out: str | os.PathLike, *, tta: bool | None = None, atol: float = 1e-4,
                     authors: list[str] | None = None, run_test: bool = True, reuse: dict | None = None) -> dict:
    """Write the bioimage.io package of ``pkg`` to ``out`` (``.zip``, else a folder), atomically;
    ``reuse`` {format: folder}: take the graphs from these checked exports (:func:`_export_graphs`).

    Returns {"out", "weights", "not_exported", "test"}; SegError if the description does not validate
    or (``run_test``) ``bioimageio.core``'s test of the written package fails.
    """
    from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder


    out = Path(out)
    with tempfile.TemporaryDirectory(prefix=".seg-bioimageio-") as work_dir:
        work = Path(work_dir)
        descr = build_description(pkg, work, tta=tta, atol=atol, authors=authors, reuse=reuse)
        weights = [k for k in ("onnx", "torchscript") if getattr(descr.weights, k) is not None]
        refused = descr.config.model_extra["seg"]["not_exported"]
        saved = work / ("package.zip" if out.suffix == ".zip" else "package")
        if out.suffix == ".zip":
            save_bioimageio_package(descr, output_path=saved)
        else:
            save_bioimageio_package_as_folder(descr, output_path=saved)
        result = test_package(saved if out.suffix == ".zip" else saved / "rdf.yaml") if run_test else None
        if result is not None and result["status"] != "passed":
            raise SegError(f"export bioimageio: bioimageio.core's test of {pkg.name} failed: "
                           f"{' | '.join(result['failed'])[:600] or result['status']}")
        with atomic_path(out) as tmp:
            shutil.move(str(saved), str(tmp))
    return {"out": str(out), "weights": weights, "not_exported": refused, "test": result}
