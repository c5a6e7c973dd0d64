"""seg export: TorchScript, ONNX and bioimage.io exports of model packages (issue 21).

The exported graph is raw image -> probabilities with the package's preprocessing inside and
``seg segment``'s own tiling and TTA (seg.infer.tiling), so it equals ``seg segment`` (and the
workflow's ``seg predict``) to float rounding. All in fp32, one thread.

Exports are the slow part (an ONNX export takes seconds even for a tiny network), so every
(package, format) is exported once per module (:func:`exported`) and every test that needs it
reads the same files.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from seg.cli import main
from seg.errors import SegError

from conftest import error_lines, fake_packaged_run


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one torch thread (more only contend on a shared 2-core machine)."""


def _export(model, fmt, out) -> int:
    return main(["export", "--model", str(model), "--format", fmt, "--out", str(out)])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """exported(run, fmt) -> the folder of ``seg export --format fmt`` of the run's package,
    exported on first use and shared by every test of the module (one thread, as the tests)."""
    base = tmp_path_factory.mktemp("exports")
    done: dict = {}

    def get(run: dict, fmt: str):
        key = (str(run["package"]), fmt)
        if key not in done:
            out = base / f"{len(done)}-{run['root'].name}-{fmt}"
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                assert _export(run["package"], fmt, out) == 0
            finally:
                torch.set_num_threads(threads)
            done[key] = out
        return done[key]

    return get


@pytest.fixture(scope="module")
def tiled_run(tmp_path_factory) -> dict:
    """ISBI-kind run of a tiny same-padding U-Net on 80 x 112 images (several 32 px tiles per image,
    blended), the real image shift, 8-fold TTA; predicted and packaged."""
    return fake_packaged_run(tmp_path_factory.mktemp("tiled_run"), kind="isbi2012", size=(80, 112),
                             inference={"tile": 32, "overlap": 0.25, "tta": True})


# ----------------------------------------------------------------------------- the graph's own parts
@pytest.mark.parametrize("n,before,after", [(7, 3, 5), (5, 0, 13), (4, 9, 2), (1, 2, 3), (96, 20, 40)])
def test_mirror_indices_are_numpys_reflect(n, before, after):
    from seg.infer.padding import mirror_indices

    x = np.arange(n)
    np.testing.assert_array_equal(x[mirror_indices(n, before, after).numpy()], np.pad(x, (before, after), mode="reflect"))


def test_graph_preprocessing_is_segs(isbi_stacks):
    """The in-graph spline shift (separable convolution) and normalisation equal
    seg.data.align.shift_image + seg.data.canonical.normalise, borders included."""
    from seg.data.align import shift_image
    from seg.data.canonical import normalise
    from seg.export.graph import SegmentGraph
    from seg.infer.tiling import TileSpec

    image = isbi_stacks["test"][0]
    for shift, crop in (((-0.5625, -0.125), (512, 512)), ((1.9, 0.0), (97, 131)), ((0.0, 0.3), (20, 40))):
        x = image[: crop[0], : crop[1]]
        graph = SegmentGraph(torch.nn.Identity(), TileSpec(16, 0.25, "gaussian"), shift=shift)
        out = graph.preprocess(torch.from_numpy(x.astype(np.float32))[None, None])[0, 0].numpy()
        np.testing.assert_allclose(out, normalise(shift_image(x, shift)), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- round trips
def test_exports_reproduce_the_workflows_predictions(isbi_packaged_run, exported):
    """Valid-padding U-Net, several tiles per image, TTA, image shift: the TorchScript and ONNX graphs
    on the test split's raw images give seg predict's probabilities to 1e-4."""
    import onnx

    from seg.export.exporters import run_exported

    r = isbi_packaged_run
    for fmt, name in (("torchscript", "model.pt"), ("onnx", "model.onnx")):
        out = exported(r, fmt)
        desc = json.loads((out / "export.json").read_text())
        assert desc["tta"] is True and desc["input"]["name"] == "raw" and desc["kind"] == "isbi2012"
        assert desc["checks"]["max_abs_diff_vs_pytorch_test_input"] <= 1e-4
        assert desc["checks"]["max_abs_diff_vs_seg_segment"] <= 1e-4  # overlap-tile == whole image
        for sid in r["ids"]:
            raw = tifffile.imread(r["images"] / f"{sid}.tif")
            probs = run_exported(out / name, raw)
            assert probs.shape == (1, 2, *raw.shape)
            np.testing.assert_allclose(probs[0, 1], tifffile.imread(r["pred"] / f"{sid}_prob.tif"), atol=1e-4, rtol=0)
        np.testing.assert_allclose(run_exported(out / name, np.load(out / "test_input.npy")),
                                   np.load(out / "test_output.npy"), atol=1e-6, rtol=0)
    meta = {p.key: p.value for p in onnx.load(str(exported(r, "onnx") / "model.onnx")).metadata_props}
    assert json.loads(meta["seg_export"])["threshold"]["value"] == 0.45
    extra = {"seg_export.json": ""}
    with pytest.warns(FutureWarning, match="deprecated"):  # torch.jit: deprecated, still supported
        torch.jit.load(str(exported(r, "torchscript") / "model.pt"), _extra_files=extra)
    assert json.loads(extra["seg_export.json"])["preprocessing"]["steps"][0]["op"] == "shift"


def test_same_padding_exports_tile_like_the_workflow(ctc_packaged_run, tiled_run, exported, shared_data):
    """Same-padding U-Net on images several tiles wide (blended Gaussian tiles, the image shift, 8x
    TTA) and on a CTC run where one tile covers the image: the graphs tile inside themselves as seg
    predict does, so they give its probabilities to 1e-4, also at sizes the export never saw."""
    from seg.export.exporters import run_exported

    tiled = tiled_run
    for r in (tiled, ctc_packaged_run):
        for fmt, name in (("torchscript", "model.pt"), ("onnx", "model.onnx")):
            out = exported(r, fmt)
            assert json.loads((out / "export.json").read_text())["checks"]["max_abs_diff_vs_seg_segment"] <= 1e-4
            for sid in r["ids"]:
                raw = tifffile.imread(r["images"] / f"{sid}.tif")
                ref = tifffile.imread(r["pred"] / f"{sid}_prob.tif")
                ref = ref if ref.ndim == 2 else ref[1]
                np.testing.assert_allclose(run_exported(out / name, raw)[0, 1], ref, atol=1e-4, rtol=0)
    # another size than the export's example: a smaller-than-a-tile crop and a wider odd one
    from seg.packaging import load_package
    from seg.export.segment import predict_probabilities

    pkg = load_package(tiled["package"])
    raw = tifffile.imread(tiled["images"] / f"{tiled['ids'][0]}.tif")
    for crop in (raw[:20, :27], raw[:77, :101]):
        ref = predict_probabilities(pkg, crop, device="cpu", amp="none")
        for fmt, name in (("torchscript", "model.pt"), ("onnx", "model.onnx")):
            got = run_exported(exported(tiled, fmt) / name, crop)[0]
            np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    # the blend of overlapping tiles is race-free in ONNX Runtime: no ScatterND/ScatterElements
    # with a reduction (ORT's threaded kernel races on repeated indices), the same output every run
    import onnx

    from seg.export.exporters import onnx_session

    path = exported(tiled, "onnx") / "model.onnx"
    reducing = [n.op_type for n in onnx.load(str(path)).graph.node
                if n.op_type.startswith("Scatter") and any(a.name == "reduction" for a in n.attribute)]
    assert reducing == []
    session = onnx_session(path, threads=2)
    batch = np.stack([raw[None], raw[::-1, ::-1][None]]).astype(np.float32)
    first = run_exported(path, batch, session=session)
    for _ in range(5):
        np.testing.assert_array_equal(run_exported(path, batch, session=session), first)


# ----------------------------------------------------------------------------- bioimage.io
def test_bioimageio_package_validates_and_passes_the_core_test(ctc_packaged_run, exported, tmp_path):
    """The bioimage.io package validates and passes bioimageio.core's test. Its ONNX graph is the
    module's checked export (reused, as the workflow does); its TorchScript graph is exported by
    write_bioimageio itself, so both ways of getting a graph are covered."""
    from bioimageio.spec import load_description
    from bioimageio.spec.model.v0_5 import ModelDescr

    from seg.export.bioimageio import write_bioimageio
    from seg.packaging import load_package

    out = tmp_path / "model.zip"
    result = write_bioimageio(load_package(ctc_packaged_run["package"]), out, authors=["A. Tester"],
                              reuse={"onnx": exported(ctc_packaged_run, "onnx")})
    assert result["test"]["status"] == "passed", result["test"]["failed"]
    assert result["weights"] == ["onnx", "torchscript"] and result["not_exported"] == {}
    descr = load_description(str(out), perform_io_checks=True)
    assert isinstance(descr, ModelDescr), descr.validation_summary.format()
    assert descr.validation_summary.status in ("valid-format", "passed")
    assert [t.id for t in descr.inputs] == ["raw"] and [t.id for t in descr.outputs] == ["probabilities"]
    assert descr.config.model_extra["seg"]["threshold"]["value"] == 0.3
    assert str(descr.license) == "MIT" and descr.authors[0].name == "A. Tester"


def test_bioimageio_reuses_checked_exports_of_the_same_package(ctc_packaged_run, exported, tmp_path, capsys):
    """--from-exports packs the workflow's TorchScript/ONNX exports byte for byte (no second export);
    an export checked to a looser tolerance is refused, naming its export.json, and nothing is written."""
    import zipfile

    pkg = ctc_packaged_run["package"]
    ts, onnx_dir = exported(ctc_packaged_run, "torchscript"), exported(ctc_packaged_run, "onnx")
    out = tmp_path / "model.zip"
    assert main(["export", "--model", str(pkg), "--format", "bioimageio", "--out", str(out),
                 "--from-exports", str(ts), str(onnx_dir)]) == 0
    with zipfile.ZipFile(out) as z:
        assert z.read("model.pt") == (ts / "model.pt").read_bytes()
        assert z.read("model.onnx") == (onnx_dir / "model.onnx").read_bytes()
    # a looser export (TorchScript: the cheap format; the tolerance rule is the same for both)
    assert main(["export", "--model", str(pkg), "--format", "torchscript", "--atol", "1e-3",
                 "--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad.zip"
    assert main(["export", "--model", str(pkg), "--format", "bioimageio", "--out", str(bad),
                 "--from-exports", str(tmp_path / "plain")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "plain" / "export.json") in err[0] and "looser" in err[0]
    assert not bad.exists()


# ----------------------------------------------------------------------------- every family
FAMILIES = [
    ("unet", {"padding": "same", "base_channels": 4, "depth": 2, "batch_norm": True}),  # = ctc_packaged_run's
    ("fcn8s", {"backbone": "vgg16", "width": 0.0625}),
    ("unet-resnet18", {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}),
]


@pytest.mark.parametrize("name,params", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_each_model_family_exports_and_matches(name, params, tmp_path, request):
    """unet, fcn and smp families: TorchScript and ONNX graphs equal PyTorch (test image and a
    batch of two odd-sized crops, dynamic N, H, W) to 1e-4. The U-Net family's exports are the
    CTC package's (a same-padding U-Net, base 4, depth 2, with batch norm), exported once for the
    module: their checks are read from export.json."""
    from seg.export.exporters import export_graph
    from seg.packaging import load_package

    if name == "unet":
        ctc_run, exported = request.getfixturevalue("ctc_packaged_run"), request.getfixturevalue("exported")
        model = json.loads((ctc_run["package"] / "package.json").read_text())["model"]
        assert model["name"] == "unet" and model["params"] == params
    else:
        r = fake_packaged_run(tmp_path / "run", kind="ctc", model=name, params=params, size=(64, 64), predict=False)
        pkg = load_package(r["package"])
    for fmt in ("torchscript", "onnx"):
        if name == "unet":
            checks = json.loads((exported(ctc_run, fmt) / "export.json").read_text())["checks"]
        else:
            folder = tmp_path / fmt
            folder.mkdir()
            checks = export_graph(pkg, fmt, folder)["checks"]
        assert max(v for k, v in checks.items() if k.startswith("max_abs_diff_vs_pytorch")) <= 1e-4


def test_pyramid_pooling_families_refuse_onnx_clearly(tmp_path, capsys):
    """smp PSPNet (and UPerNet) pool to fixed bins, which ONNX cannot express at other sizes: the ONNX
    export says so in one line and writes nothing; the TorchScript export works."""
    r = fake_packaged_run(tmp_path / "run", kind="ctc", model="pspnet-resnet18", params={"encoder_depth": 3},
                          size=(64, 64), predict=False)
    assert _export(r["package"], "onnx", tmp_path / "onnx") == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "pspnet-resnet18 (smp family) cannot be exported" in lines[0], lines
    assert "pools to a fixed grid of bins" in lines[0] and not (tmp_path / "onnx").exists()
    assert _export(r["package"], "torchscript", tmp_path / "ts") == 0
    assert (tmp_path / "ts" / "model.pt").is_file()
    # for a workflow rule: the refusal as an output instead of a failure
    assert main(["export", "--model", str(r["package"]), "--format", "onnx", "--out", str(tmp_path / "onnx"),
                 "--allow-refusal"]) == 0
    doc = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert doc["exported"] is False and "fixed grid of bins" in doc["reason"] and doc["alternatives"] == ["torchscript"]


def test_export_refuses_a_graph_that_does_not_match(ctc_packaged_run, tmp_path, monkeypatch):
    """A runtime whose output differs from PyTorch's is not kept."""
    import seg.export.exporters as ex
    from seg.packaging import load_package

    real = ex.run_exported
    monkeypatch.setattr(ex, "run_exported", lambda path, image, fmt=None, **kw: real(path, image, fmt) + 1e-3)
    with pytest.raises(SegError, match=r"differs from PyTorch by 0\.001"):
        ex.write_export(load_package(ctc_packaged_run["package"]), "torchscript", tmp_path / "ts")
    assert not (tmp_path / "ts").exists()


def _registry_names() -> list[str]:
    from seg.models.registry import REGISTRY

    return list(REGISTRY)


@pytest.mark.slow
@pytest.mark.parametrize("name", _registry_names())
def test_every_registry_model_exports_or_refuses(name, tmp_path):
    """Every registry name (U-Net, FCNs, smp decoders x registered encoders) at its default size
    (FCN VGG16 at width 1/16): each format either exports and matches PyTorch (test image and two
    odd-sized crops) or refuses with the reason. Slow: up to a minute per smp model. The tolerance
    is 1e-3 here: untrained ResNet-50 / DenseNet networks reach 1e-4 (deeplabv3-resnet50: 1.1e-4)."""
    from seg.export.exporters import export_graph, unsupported_reason
    from seg.packaging import load_package

    params = {"padding": "valid", "base_channels": 4, "depth": 2} if name == "unet" else {}
    if name.startswith("fcn"):
        params = {"width": 0.0625}
    size = 128 if name.startswith(("pan-", "upernet-")) else 64  # PAN and UPerNet need >= 128 px
    r = fake_packaged_run(tmp_path / "run", kind="ctc", model=name, params=params, size=(size, size),
                          inference={"tile": size}, predict=False)
    pkg = load_package(r["package"])
    for fmt in ("torchscript", "onnx"):
        folder = tmp_path / fmt
        folder.mkdir()
        reason = unsupported_reason(pkg.model, fmt)
        if reason:
            with pytest.raises(SegError, match=f"{name} .* cannot be exported: its module"):
                export_graph(pkg, fmt, folder)
            continue
        checks = export_graph(pkg, fmt, folder, atol=1e-3)["checks"]
        assert max(v for k, v in checks.items() if k.startswith("max_abs_diff_vs_pytorch")) <= 1e-3
