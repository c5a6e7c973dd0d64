"""The house holds by its floors: no package of seg imports one on a higher floor (at module level
or inside a function), no two packages import each other through any path, function-local imports
of seg modules are the few with a reason, and each library default has one owner."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SEG = Path(__file__).resolve().parents[1] / "seg"

#: Floors, bottom up: a module may import its own floor and the ones below. ``seg.commands`` (the
#: ``seg <command>`` modules), ``seg.cli`` and the package root are the top.
FLOORS = [
    {"seg.errors", "seg.version", "seg.progress", "seg.io"},
    {"seg.precision", "seg.device"},
    {"seg.config"},
    {"seg.data", "seg.metrics"},
    {"seg.models"},
    {"seg.infer"},
    {"seg.kinds", "seg.targets", "seg.transforms"},
    {"seg.package"},
    {"seg.settings"},
    {"seg.train", "seg.evaluate"},
    {"seg.packaging"},
    {"seg.export", "seg.report"},
    {"seg.finetune"},
    {"seg.commands", "seg.cli", "seg.__main__", "seg", "seg.napari"},
]
#: Function-local imports of seg modules that stay local, with their reason.
LOCAL_IMPORTS = {
    "seg": "seg.segment() loads torch and the export stage only when called",
    "seg.models.registry": "segmentation_models_pytorch (seconds to import) only for smp models",
    "seg.models.fcn": "segmentation_models_pytorch only for the VGG encoder",
    "seg.models.classification": "segmentation_models_pytorch / the U-Net module only for those classifiers",
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in SEG.rglob("*.py"):
        parts = list(p.relative_to(SEG.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(known: dict[str, Path]):
    """(importer, imported, local) for every import of a seg module."""
    for mod, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                         for a in node.names]
            else:
                continue
            x, local = node, False
            while x in parents:
                x = parents[x]
                if isinstance(x, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    local = True
                    break
            for n in names:
                while n and n not in known:
                    n = n.rpartition(".")[0]
                if n and n != mod:
                    yield mod, n, local


def _package(mod: str) -> str:
    return ".".join(mod.split(".")[:2])


def _floor(pkg: str) -> int:
    for i, floor in enumerate(FLOORS):
        if pkg in floor:
            return i
    raise AssertionError(f"{pkg}: on no floor (add it to tests/test_layers.py FLOORS)")


def test_every_import_points_down_or_sideways():
    known = _modules()
    up = sorted({f"{a} -> {b}" for a, b, _ in _imports(known) if _floor(_package(b)) > _floor(_package(a))})
    assert not up, "imports of a higher floor:\n" + "\n".join(up)


def test_no_two_packages_import_each_other():
    known = _modules()
    graph = defaultdict(set)
    for a, b, _ in _imports(known):
        if _package(a) != _package(b):
            graph[_package(a)].add(_package(b))

    def reaches(src, dst, seen=()):
        return any(n == dst or (n not in seen and reaches(n, dst, (*seen, n))) for n in graph[src])

    knots = sorted({" <-> ".join(sorted((a, b))) for a in list(graph) for b in graph[a] if reaches(b, a)})
    assert not knots, "packages that import each other (directly or through others):\n" + "\n".join(knots)


def test_function_local_imports_are_the_justified_ones():
    """Outside seg.commands (which load their stage lazily for start-up time), a seg module is
    imported inside a function only where LOCAL_IMPORTS gives the reason."""
    known = _modules()
    local = sorted({f"{a} -> {b}" for a, b, is_local in _imports(known)
                    if is_local and _package(a) != "seg.commands" and a not in LOCAL_IMPORTS})
    assert not local, "function-local imports without a reason:\n" + "\n".join(local)


def test_no_target_or_kind_name_is_compared_outside_its_package():
    from seg.kinds import kind_names
    from seg.targets import target_names

    names = set(kind_names()) | set(target_names())
    found = []
    for mod, path in _modules().items():
        if _package(mod) in ("seg.kinds", "seg.targets"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                for c in [node.left, *node.comparators]:
                    if isinstance(c, ast.Constant) and c.value in names:
                        found.append(f"{path.relative_to(SEG.parent)}:{node.lineno} compares {c.value!r}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("section", ["train", "inference", "pretrain"])
def test_amp_and_device_choices_are_the_schemas(section):
    """seg.device's AMP_MODES and DEVICES are the schema's enums (the schema owns the choices)."""
    from seg.config import load_schema
    from seg.device import AMP_MODES, DEVICES

    schema = load_schema()
    props = schema["$defs"][schema["properties"][section]["$ref"].removeprefix("#/$defs/")]["properties"]
    assert tuple(props["amp"]["enum"]) == AMP_MODES
    if "device" in props:
        assert tuple(props["device"]["enum"]) == DEVICES
