"""Reading the project's outputs as napari layer data: ``(data, layer keyword arguments, layer type)``.

What :func:`napari_get_reader` takes (every other path: None, so napari asks its other readers):

=================================  ===========================================================
path                               layers
=================================  ===========================================================
``<seq>_RES/`` (folder)            Labels (T, H, W) uint16: its ``maskT.tif`` in frame order (CTC
                                   result folder)
``<seq>_RES/maskT.tif``            Labels (H, W): one CTC result frame
``<seq>_prob/`` (folder)           Image (T, H, W) float32: ``seg segment``'s cell probability per
                                   frame of a CTC sequence, in frame order
``X_prob.tif``                     Image: a probability map (H, W), a stack (Z, H, W) (the ISBI
                                   2012 submission stack) or ``seg predict``'s maps (C, H, W)
``X_seg.tif``, ``X_mask.tif``      Labels: a class map (uint8, 1 = foreground) or instances (uint16)
a sequence folder of               Image (T, H, W) of the ``tNNN_prob.tif`` and Labels (T, H, W) of
``tNNN_prob.tif`` / ``_seg.tif``   the ``tNNN_seg.tif`` / ``_mask.tif`` (an ISBI-kind model on a sequence)
a ``seg segment`` output folder    every output ``segment_summary.json`` lists, as above
=================================  ===========================================================

Frames of a folder whose sizes differ are not stacked: one layer per file. Nothing here imports
napari: the functions return plain tuples (:data:`LayerData`), tested without it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from seg.errors import SegError
from seg.io import read_json, read_tiff

LayerData = tuple[np.ndarray, dict[str, Any], str]
SUMMARY = "segment_summary.json"
TIFF = (".tif", ".tiff")
_FRAME = re.compile(r"^(?:mask|t)(\d+)")
_MASK = re.compile(r"^mask\d+$")
_LABEL_ENDS = ("_seg", "_mask")


def _stem(p: Path) -> str:
    return p.name[: -len(p.suffix)] if p.suffix else p.name


def _tiffs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TIFF and not p.name.startswith("."))


def _frame_key(p: Path) -> tuple[int, str]:
    m = _FRAME.match(p.name)
    return (int(m.group(1)) if m else -1, p.name)


def _prob_meta(name: str, path: Path) -> dict:
    return {"name": name, "colormap": "magma", "contrast_limits": (0.0, 1.0), "metadata": {"path": str(path)}}


def _labels_meta(name: str, path: Path) -> dict:
    return {"name": name, "metadata": {"path": str(path)}}


def _stacked(files: list[Path], name: str, layer_type: str, folder: Path) -> list[LayerData]:
    """One (T, H, W) layer of ``files`` in frame order, or one layer per file if their shapes differ."""
    files = sorted(files, key=_frame_key)
    arrays = [read_tiff(p) for p in files]
    meta = (_prob_meta if layer_type == "image" else _labels_meta)
    if len({a.shape for a in arrays}) == 1 and arrays[0].ndim == 2:
        kw = meta(name, folder)
        kw["metadata"]["frames"] = [_frame_key(p)[0] for p in files]
        return [(np.stack(arrays), kw, layer_type)]
    return [(a, meta(f"{name}/{_stem(p)}", p), layer_type) for p, a in zip(files, arrays)]


def file_role(path: Path) -> str | None:
    """``res_mask``, ``prob`` or ``labels`` for a file this reader takes, else None."""
    if not path.is_file() or path.suffix.lower() not in TIFF:
        return None
    stem = _stem(path)
    if path.parent.name.endswith("_RES") and _MASK.match(stem):
        return "res_mask"
    if stem.endswith("_prob"):
        return "prob"
    if stem.endswith(_LABEL_ENDS):
        return "labels"
    return None


def folder_role(path: Path) -> str | None:
    """``output`` (a ``seg segment`` folder), ``res``, ``prob_frames``, ``sequence`` or None."""
    if not path.is_dir():
        return None
    if (path / SUMMARY).is_file():
        return "output"
    files = _tiffs(path)
    if path.name.endswith("_RES") and any(_MASK.match(_stem(p)) for p in files):
        return "res"
    if path.name.endswith("_prob") and any(_FRAME.match(p.name) for p in files):
        return "prob_frames"
    if any(file_role(p) in ("prob", "labels") for p in files):
        return "sequence"
    return None


def role(path: str | os.PathLike) -> str | None:
    """What :func:`read` makes of ``path`` (a file or folder role), None if it is not ours."""
    p = Path(path)
    return folder_role(p) if p.is_dir() else file_role(p)


def read_file(path: Path) -> list[LayerData]:
    r = file_role(path)
    if r == "prob":
        return [(read_tiff(path), _prob_meta(_stem(path), path), "image")]
    if r == "res_mask":
        return [(read_tiff(path, ndim=2), _labels_meta(f"{path.parent.name}/{_stem(path)}", path), "labels")]
    if r == "labels":
        return [(read_tiff(path), _labels_meta(_stem(path), path), "labels")]
    raise SegError(f"{path}: not a seg output (*_prob.tif, *_seg.tif, *_mask.tif, *_RES/maskT.tif)")


def read_folder(path: Path) -> list[LayerData]:
    r = folder_role(path)
    if r == "output":
        return read_output(path)
    files = _tiffs(path)
    if r == "res":
        return _stacked([p for p in files if _MASK.match(_stem(p))], path.name, "labels", path)
    if r == "prob_frames":
        return _stacked([p for p in files if _FRAME.match(p.name)], path.name, "image", path)
    if r == "sequence":
        probs = [p for p in files if file_role(p) == "prob"]
        labs = [p for p in files if file_role(p) == "labels"]
        out = []
        for group, suffix, kind in ((probs, "prob", "image"), (labs, "seg", "labels")):
            if group and all(_FRAME.match(p.name) for p in group):
                out += _stacked(group, f"{path.name}_{suffix}", kind, path)
            else:
                out += [layer for p in group for layer in read_file(p)]
        return out
    raise SegError(f"{path}: not a seg output folder (<seq>_RES/, <seq>_prob/, a seg segment --out folder)")


def read_output(folder: Path) -> list[LayerData]:
    """Every output of a ``seg segment --out`` folder, in the order ``segment_summary.json`` lists
    them (each input's probability, then its segmentation)."""
    summary = read_json(folder / SUMMARY)
    out = []
    for record in summary.get("inputs", []):
        for rel in record.get("outputs", []):
            p = folder / rel.rstrip("/")
            if not p.exists():
                raise SegError(f"{p}: listed in {folder / SUMMARY} but missing")
            if role(p) is not None:
                out += read(p)
    return out


def read(path: str | os.PathLike | list) -> list[LayerData]:
    """Layer data of one path (file or folder) or a list of paths (their layers in order).

    Raises:
        SegError: a path that is not a seg output, or an unreadable file (named).
    """
    if isinstance(path, (list, tuple)):
        return [layer for p in path for layer in read(p)]
    p = Path(path)
    return read_folder(p) if p.is_dir() else read_file(p)


def napari_get_reader(path: str | list) -> Callable[[str | list], list[LayerData]] | None:
    """npe2 reader command: :func:`read` if every path is a seg output, else None."""
    paths = path if isinstance(path, (list, tuple)) else [path]
    if not paths or any(role(p) is None for p in paths):
        return None
    return read
