"""TorchScript and ONNX exports of a model package, each checked against PyTorch before it is kept.

Both formats hold the same graph, :class:`seg.export.graph.SegmentGraph` (raw image in,
probabilities out; preprocessing and the size contract inside, TTA if the package uses it):

- ``torchscript``: ``torch.jit.trace`` of the graph (traced sizes stay symbolic, so any input size
  works), saved with the export description as the extra file ``seg_export.json``; load it with
  ``torch.jit.load``.
- ``onnx``: ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter; needs
  ``onnxscript``, offline) with dynamic batch, height and width, weights inside the file, the
  export description in the model's ``metadata_props["seg_export"]``; run it with onnxruntime.

Every export is run on the package's test image and on a second, odd-sized crop of it and compared
with the PyTorch graph; a difference above ``atol`` (default 1e-4) refuses the export with a
:class:`SegError` naming the model and the size. Networks that cannot be exported are refused
before any work with the reason (:func:`unsupported_reason`): ONNX has no adaptive pooling, so a
network pooling to a fixed grid of bins (smp PSPNet, UPerNet pyramids) would be exported with the
pooling windows of the example size only and give wrong results at every other size.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np

from seg.errors import SegError
from seg.export.graph import SegmentGraph
from seg.infer.predictor import tile_spec
from seg.io import atomic_path, write_json
from seg.package.readme import package_readme

FORMATS = ("torchscript", "onnx")
GRAPH_FILES = {"torchscript": "model.pt", "onnx": "model.onnx"}
INPUT_NAME, OUTPUT_NAME = "raw", "probabilities"
ATOL = 1e-4


def build_graph(pkg, *, tta: bool | None = None):
    """The :class:`~seg.export.graph.SegmentGraph` of a package (eval mode, CPU, fp32), tiled as
    ``seg segment`` tiles it. ``tta`` None = the package's inference setting."""
    m = pkg.meta["model"]
    use_tta = bool(pkg.inference["tta"]) if tta is None else bool(tta)
    spec = tile_spec(pkg.model, pkg.inference, activation=pkg.target.activation)
    return SegmentGraph(pkg.model.float().cpu().eval(), spec, shift=pkg.shift, min_size=m["min_size"],
                        tta=use_tta).eval()


def unsupported_reason(model, fmt: str) -> str | None:
    """Why ``model`` cannot be exported to ``fmt`` (None = it can)."""
    import torch

    if fmt not in FORMATS:
        raise SegError(f"export: unknown format {fmt!r} (choices: {', '.join(FORMATS)}, bioimageio)")
    if fmt != "onnx":
        return None
    pools = (torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveMaxPool2d)
    for name, mod in model.named_modules():
        if isinstance(mod, pools):
            size = mod.output_size
            sizes = size if isinstance(size, (tuple, list)) else (size, size)
            if any(s not in (1, None) for s in sizes):
                return (f"its module {name} ({type(mod).__name__}, output {size}) pools to a fixed grid of "
                        "bins; ONNX has no adaptive pooling, so the exporter would fix the pooling windows "
                        "of the example size and every other input size would give wrong results "
                        "(TorchScript exports it)")
    return None


def export_description(pkg, fmt: str, graph) -> dict:
    """What the exported graph expects and returns, with the package facts it carries."""
    m = pkg.meta["model"]
    return {
        "format": fmt, "exported": True, "package": pkg.name, "package_format_version": pkg.meta["format_version"],
        "seg_version": pkg.meta["seg_version"], "kind": pkg.kind, "classes": pkg.meta["outputs"]["classes"],
        "target": pkg.target.name,
        "input": {"name": INPUT_NAME, "shape": "(N, 1, H, W)", "dtype": "float32",
                  "values": "the image's raw values (e.g. 0..255 for uint8); the graph normalises itself",
                  "min_size": graph.min_size, "whole_image": True},
        "output": {"name": OUTPUT_NAME, "shape": "(N, classes, H, W)", "dtype": "float32",
                   "values": ("softmax probabilities; " if pkg.activation == "softmax" else "sigmoid maps in [0, 1]; ")
                   + pkg.meta["outputs"]["probability"]
                   + (" is channel 1" if len(pkg.meta["outputs"]["classes"]) == 2 else " is channels 1 + 2")},
        "preprocessing": pkg.meta["preprocessing"],
        "size_contract": {"valid_border": m["valid_border"], "size_divisor": m["size_divisor"],
                          "handled": "inside the graph: mirror padding to whole tiles of a size the network "
                                     "accepts, output cropped back to (H, W)"},
        "tta": graph.tta,
        "tiling": {"tile": graph.tile, "input_tile": graph.spec.input_tile, "overlap": graph.spec.overlap,
                   "blend": graph.spec.blend, "border": graph.border, "align": graph.spec.align,
                   "how": "seg segment's own tiling inside the graph (MONAI's tile grid and importance map; "
                          "overlap-tile for valid padding); all tiles of an image in one network call"},
        "threshold": pkg.meta["threshold"], "postprocess": pkg.meta["postprocess"],
        "outputs": pkg.meta["outputs"], "training": pkg.meta.get("training"), "metrics": pkg.meta.get("metrics"),
    }


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' deprecation/tracer warnings and their console output."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _fail(pkg, fmt: str, e: Exception) -> SegError:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    key = [ln for ln in lines if "Error" in ln or "error" in ln] or lines or [type(e).__name__]
    return SegError(f"export {fmt}: {pkg.meta['model']['name']} ({pkg.meta['model']['family']} family) could "
                    f"not be exported: {type(e).__name__}: {key[-1][:300]}")


def write_torchscript(graph, example, path: Path, description: dict) -> None:
    """Trace ``graph`` on ``example`` ((1, 1, H, W) float32) and save it to ``path``."""
    import torch

    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(graph, example, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={"seg_export.json": json.dumps(description)})


def write_onnx(graph, example, path: Path, description: dict) -> int:
    """Export ``graph`` to ONNX at ``path`` (dynamic N, H, W); returns the opset version."""
    import onnx
    import torch

    lo = max(2, int(graph.min_size))
    dims = {0: torch.export.Dim("batch", min=1, max=1024), 2: torch.export.Dim("height", min=lo, max=65536),
            3: torch.export.Dim("width", min=lo, max=65536)}
    # A batch of 2 so the exporter does not specialise N to 1; size relations the symbolic solver
    # cannot prove (the tile count of the in-graph tiling is a floor division of H and W) become
    # runtime checks instead of export errors.
    example = torch.cat([example, torch.flip(example, dims=[3])])
    with _quiet(), contextlib.redirect_stderr(io.StringIO()), torch.no_grad():
        exported = torch.export.export(graph, (example,), dynamic_shapes={"image": dims},
                                       prefer_deferred_runtime_asserts_over_guards=True)
        program = torch.onnx.export(exported, (example,), dynamo=True, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], external_data=False)
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = "seg_export", json.dumps(description)
    onnx.save(proto, str(path))
    return int(next(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")))


def run_exported(path: str | os.PathLike, image: np.ndarray, fmt: str | None = None, *, session=None) -> np.ndarray:
    """Run an exported graph on ``image`` (float32 (N, 1, H, W) or (H, W)) -> (N, classes, H, W)."""
    import torch

    path = Path(path)
    fmt = fmt or ("onnx" if path.suffix == ".onnx" else "torchscript")
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 2:
        x = x[None, None]
    if fmt == "onnx":
        if session is None:
            session = onnx_session(path)
        return session.run(None, {INPUT_NAME: x})[0]
    if session is None:
        with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export, still supported
            warnings.simplefilter("ignore", FutureWarning)
            session = torch.jit.load(str(path), map_location="cpu")
    module = session
    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session for ``path`` (``threads`` intra-op threads; None = ORT's choice)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def second_size(shape: tuple[int, int], min_size: int) -> tuple[int, int]:
    """An odd-sized crop of a (H, W) test image for the size-generality check (>= min_size): odd
    and unequal sides of about 5/8 and 9/16 of the test image (321 x 289 of 512 x 512, which still
    spans 2 x 2 tiles of 256 px, so overlapping tiles are blended), at most 13 and 29 px short of
    it. The crop runs as a batch of 2 through PyTorch and the export: at nearly the full size it
    had cost twice the test image's own check."""
    h, w = shape
    ch = h if h <= 40 else min(h - 13, (h * 5) // 8 | 1)
    cw = w if w <= 60 else min(w - 29, (w * 9) // 16 | 1)
    return max(min_size, ch), max(min_size, cw)


def verify(pkg, graph, path: Path, fmt: str, *, atol: float = ATOL) -> dict:
    """Compare the export at ``path`` with the PyTorch graph on the package's test image and on a
    batch of two odd-sized crops of it; SegError above ``atol``. Returns the measured differences and outputs."""
    import torch

    test = pkg.test_input.astype(np.float32)[None, None]
    h, w = second_size(test.shape[2:], graph.min_size)
    crop = np.pad(test, ((0, 0), (0, 0), (0, max(0, h - test.shape[2])), (0, max(0, w - test.shape[3]))),
                  mode="reflect")[:, :, :h, :w]
    crop = np.ascontiguousarray(np.concatenate([crop, crop[:, :, ::-1, :]]))  # batch of 2: dynamic N too
    out = {}
    with torch.inference_mode():
        ref, ref2 = graph(torch.from_numpy(test)).numpy(), graph(torch.from_numpy(crop)).numpy()
    try:
        got, got2 = run_exported(path, test, fmt), run_exported(path, crop, fmt)
    except Exception as e:  # noqa: BLE001 - the runtime's own error, one line
        raise _fail(pkg, fmt, e) from None
    for label, a, b in (("test_input", got, ref), (f"crops_2x{h}x{w}", got2, ref2)):
        if a.shape != b.shape:
            raise SegError(f"export {fmt}: {pkg.meta['model']['name']}: output shape {a.shape} on the {label} "
                           f"differs from PyTorch's {b.shape}")
        diff = float(np.abs(a - b).max())
        if not diff <= atol:
            raise SegError(f"export {fmt}: {pkg.meta['model']['name']} ({pkg.meta['model']['family']} family): "
                           f"the exported graph differs from PyTorch by {diff:.3g} (> {atol:g}) on the {label} "
                           f"{a.shape[2:]}; not kept")
        out[f"max_abs_diff_vs_pytorch_{label}"] = diff
    out["test_output"] = got
    if pkg.test_output is not None:  # seg segment's own (tiled, fp32) result: the export must reproduce it
        diff = float(np.abs(got[0] - pkg.test_output).max())
        out["max_abs_diff_vs_seg_segment"] = diff
        if not diff <= atol:
            raise SegError(f"export {fmt}: {pkg.meta['model']['name']}: the exported graph differs from "
                           f"seg segment's prediction by {diff:.3g} (> {atol:g}) on the test image; not kept")
    return out


def export_graph(pkg, fmt: str, out_dir: Path, *, tta: bool | None = None, atol: float = ATOL) -> dict:
    """Write ``GRAPH_FILES[fmt]`` into ``out_dir`` (an existing folder) and check it (:func:`verify`).

    Returns the export description with a ``checks`` entry (measured differences) and
    ``test_output`` (the export's own output on the package's test image, float32 (1, C, H, W)).
    """
    import torch

    if pkg.test_input is None:
        raise SegError(f"{pkg.source}: the package has no test image; export needs one (seg package writes it)")
    reason = unsupported_reason(pkg.model, fmt)
    if reason:
        raise SegError(f"export {fmt}: {pkg.meta['model']['name']} ({pkg.meta['model']['family']} family) "
                       f"cannot be exported: {reason}")
    graph = build_graph(pkg, tta=tta)
    desc = export_description(pkg, fmt, graph)
    example = torch.from_numpy(pkg.test_input.astype(np.float32)[None, None])
    path = out_dir / GRAPH_FILES[fmt]
    try:
        if fmt == "torchscript":
            import torch as _torch

            write_torchscript(graph, example, path, desc)
            desc["exporter"] = f"torch.jit.trace (torch {_torch.__version__})"
        else:
            opset = write_onnx(graph, example, path, desc)
            desc["exporter"] = f"torch.onnx.export dynamo=True (torch {torch.__version__}), opset {opset}"
            desc["opset"] = opset
    except SegError:
        raise
    except Exception as e:  # noqa: BLE001 - exporter failures become one clear line
        raise _fail(pkg, fmt, e) from None
    checks = verify(pkg, graph, path, fmt, atol=atol)
    desc["test_output"] = checks.pop("test_output")
    desc["checks"] = {**checks, "atol": atol}
    return desc


def write_export(pkg, fmt: str, out: str | os.PathLike, *, tta: bool | None = None, atol: float = ATOL) -> dict:
    """Write the ``fmt`` export of ``pkg`` into the folder ``out`` atomically: the graph
    (``model.pt`` / ``model.onnx``), ``export.json`` (:func:`export_description` + checks),
    ``test_input.npy`` (float32 (1, 1, H, W)), ``test_output.npy`` (the export's output on it) and
    ``README.md``. Returns the description written to ``export.json``."""

    if fmt not in FORMATS:
        raise SegError(f"export: unknown format {fmt!r} (choices: {', '.join(FORMATS)}, bioimageio)")
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        desc = export_graph(pkg, fmt, tmp, tta=tta, atol=atol)
        np.save(tmp / "test_input.npy", pkg.test_input.astype(np.float32)[None, None])
        np.save(tmp / "test_output.npy", desc.pop("test_output"))
        desc["files"] = {"graph": GRAPH_FILES[fmt], "test_input": "test_input.npy", "test_output": "test_output.npy"}
        write_json(tmp / "export.json", desc)
        usage = ("```python\nimport onnxruntime, numpy as np\n"
                 f"s = onnxruntime.InferenceSession('{GRAPH_FILES['onnx']}')\n"
                 f"p = s.run(None, {{'{INPUT_NAME}': image.astype(np.float32)[None, None]}})[0]  # (1, classes, H, W)\n```"
                 if fmt == "onnx" else
                 "```python\nimport torch\n"
                 f"m = torch.jit.load('{GRAPH_FILES['torchscript']}')\n"
                 "p = m(torch.from_numpy(image.astype('float32'))[None, None])  # (1, classes, H, W)\n```")
        (tmp / "README.md").write_text(
            package_readme(pkg.meta) + f"\n## This export ({fmt})\n\n`{GRAPH_FILES[fmt]}` ({desc['exporter']}): "
            f"input `{INPUT_NAME}` float32 (N, 1, H, W) raw values, H, W >= {desc['input']['min_size']}; output "
            f"`{OUTPUT_NAME}` float32 (N, classes, H, W). TTA in the graph: {desc['tta']}. See export.json.\n\n"
            f"{usage}\n")
    return desc


def write_refusal(pkg, fmt: str, out: str | os.PathLike, reason: str) -> None:
    """The folder ``out`` with ``export.json`` = {exported: false, reason} for a model whose family
    cannot be exported to ``fmt`` (``seg export --allow-refusal``), written atomically."""

    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        write_json(tmp / "export.json", {
            "format": fmt, "package": pkg.name, "exported": False, "model": pkg.meta["model"]["name"],
            "family": pkg.meta["model"]["family"], "reason": reason,
            "alternatives": [f for f in FORMATS if f != fmt and unsupported_reason(pkg.model, f) is None]})
