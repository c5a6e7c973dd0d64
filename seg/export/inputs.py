"""What ``seg segment`` can read: single images, folders of them, multi-page stacks, CTC sequences.

:func:`discover` turns the command's INPUT paths into a list of :class:`Item` s and checks every
file's header (format, channels, dimensions) before any prediction, so a bad file stops the command
with one message naming it and nothing is written:

- an image file (``.tif``, ``.tiff``, ``.png``) holding one 2D single-channel image -> ``image``;
- a TIFF holding several 2D pages (e.g. ISBI 2012's ``test-volume.tif``, 30 x 512 x 512) -> ``stack``;
- a folder whose images are all named ``t<frame>.tif`` (``01/t000.tif``, CTC layout) -> ``sequence``;
- any other folder of images -> one ``image`` per file (other files are ignored);
- a folder holding no image but CTC sequence folders (``01/``, ``02/`` of a CTC dataset) -> one
  ``sequence`` per such folder;
- a canonical dataset folder of ``seg ingest`` (``data/<dataset>/`` with ``meta.json``): what its
  kind says (:meth:`seg.kinds.base.Kind.segment_groups`): for a CTC dataset one ``sequence`` per
  sequence with every ingested frame (annotated or not, in time order); for an ISBI 2012 dataset its
  unannotated slices (the challenge's test volume) as one ``stack`` named ``test-volume``.

Pixel types: any integer or float grey values (uint8, uint16, ...), and an RGB(A) image whose
colour channels are equal, taken as grey: the same reader as ``seg ingest`` of a folder
(:func:`seg.data.folder.load_image`), so a model trained on a folder of such files segments the
next one. Refused with a clear error: colour images whose channels differ (its pixels are read
during discovery, so the command stops before writing anything), other multi-channel images,
palette PNGs, unreadable or truncated files, empty folders, other file types named directly.
:func:`read_image` reads one 2D image, :func:`read_stack` a (Z, H, W) stack.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seg.data.canonical import load_meta
from seg.data.folder import load_image
from seg.errors import SegError
from seg.io import read_tiff
from seg.kinds import get_kind

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
CTC_FRAME = re.compile(r"^t(\d{3,4})\.tiff?$")
CTC_SEQUENCE = re.compile(r"^\d{2,3}$")
_GREY_PNG_MODES = ("L", "I", "I;16", "I;16B", "I;16L", "F", "1")


@dataclass
class Item:
    """One unit of work. ``kind``: ``image`` (one file, one 2D image), ``stack`` (one file, Z pages)
    or ``sequence`` (a CTC folder: ``frames`` = [(frame number, file)] in time order). ``name`` is
    the output stem (file stem or sequence folder name); ``shape`` is (H, W) or (Z, H, W)."""

    kind: str
    path: Path
    name: str
    shape: tuple = ()
    frames: list[tuple[int, Path]] = field(default_factory=list)
    pages: list[Path] = field(default_factory=list)  # a stack held as one 2D file per page

    @property
    def n_images(self) -> int:
        if self.kind == "sequence":
            return len(self.frames)
        return int(self.shape[0]) if self.kind == "stack" else 1


def _tiff_layout(path: Path) -> tuple[str, tuple]:
    """("image" | "stack", shape) of a TIFF from its header; SegError for colour or bad files."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = tuple(series.shape), series.axes
            page = tif.pages[0]
            samples = int(getattr(page, "samplesperpixel", 1) or 1)
            dtype = np.dtype(series.dtype)
    except Exception as e:  # noqa: BLE001 - tifffile raises many types for corrupt files
        raise SegError(f"{path}: not a readable TIFF ({type(e).__name__}: {e})") from None
    channels = max([samples] + [int(shape[axes.index(a)]) for a in "SC" if a in axes])
    if channels in (3, 4) and len([s for s in shape if s != 1]) == 3:  # one RGB(A) image: grey if equal channels
        return "image", load_image(path).shape
    if channels > 1:
        raise SegError(f"{path}: has {channels} channels per pixel (shape {shape}, axes {axes}); the model "
                       "expects one grey channel: convert it to greyscale or save the channel to segment")
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise SegError(f"{path}: pixel type {dtype} is not a grey value (expected an integer or float type)")
    core = tuple(s for s in shape[:-2] if s != 1) + shape[-2:]
    if len(shape) < 2 or min(shape[-2:]) < 1:
        raise SegError(f"{path}: expected a 2D image or a stack of 2D pages, got shape {shape}")
    if len(core) == 2:
        return "image", core
    z = int(np.prod(core[:-2]))
    return "stack", (z, *core[-2:])


def _png_layout(path: Path) -> tuple[str, tuple]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode, size = im.mode, im.size
            im.verify()
    except Exception as e:  # noqa: BLE001
        raise SegError(f"{path}: not a readable PNG ({type(e).__name__}: {e})") from None
    if mode in ("RGB", "RGBA"):  # grey if its colour channels are equal (SegError naming the file otherwise)
        return "image", load_image(path).shape
    if mode not in _GREY_PNG_MODES:
        what = "a palette" if mode == "P" else f"a {len(mode)}-channel {mode}"
        raise SegError(f"{path}: is {what} image; the model expects one grey channel: convert it to greyscale")
    return "image", (size[1], size[0])


def layout(path: Path) -> tuple[str, tuple]:
    """("image" | "stack", shape) of an image file from its header (no pixels read)."""
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return _tiff_layout(path)
    if suffix == ".png":
        return _png_layout(path)
    raise SegError(f"{path}: unsupported file type {path.suffix!r} (images: {', '.join(IMAGE_SUFFIXES)})")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _sequence(folder: Path, files: list[Path]) -> Item | None:
    """A CTC sequence Item if every image in ``folder`` is named ``t<frame>.tif``, else None."""
    matches = [CTC_FRAME.match(p.name) for p in files]
    if not files or not all(matches):
        return None
    frames = sorted((int(m.group(1)), p) for m, p in zip(matches, files))
    shapes = set()
    for _, p in frames:
        kind, shape = layout(p)
        if kind != "image":
            raise SegError(f"{p}: a CTC frame must be one 2D image, got shape {shape}")
        shapes.add(shape)
    return Item("sequence", folder, folder.name, shape=(len(frames), *sorted(shapes)[0]), frames=frames)


def _canonical(ds_dir: Path) -> list[Item]:
    """The Items of a canonical dataset folder: what its kind segments
    (:meth:`seg.kinds.base.Kind.segment_groups`; see the module docstring)."""

    meta = load_meta(ds_dir)
    items = []
    for form, name, entries in get_kind(meta["kind"]).segment_groups(meta, ds_dir):
        shape = (len(entries), *entries[0]["shape"])
        if form == "stack":
            items.append(Item("stack", ds_dir, name, shape=shape, pages=[ds_dir / e["image"] for e in entries]))
        else:
            items.append(Item("sequence", ds_dir, name, shape=shape,
                              frames=sorted((int(e["frame"]), ds_dir / e["image"]) for e in entries)))
    return items


def discover(paths: list[str | os.PathLike]) -> list[Item]:
    """The work items of ``paths`` (see module docstring), headers checked, names unique.

    Raises:
        SegError: a missing path, an empty folder, an unsupported or unreadable file, a colour
            image, two inputs with the same output name.
    """
    items: list[Item] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise SegError(f"{p}: no such file or folder")
        if p.is_file():
            kind, shape = layout(p)
            items.append(Item(kind, p, p.stem, shape=shape))
            continue
        if (p / "meta.json").is_file():
            items.extend(_canonical(p))
            continue
        files = _images_in(p)
        seq = _sequence(p, files)
        if seq is not None:
            items.append(seq)
            continue
        if files:
            for f in files:
                kind, shape = layout(f)
                items.append(Item(kind, f, f.stem, shape=shape))
            continue
        subs = sorted(d for d in p.iterdir() if d.is_dir() and CTC_SEQUENCE.match(d.name))
        seqs = [s for s in (_sequence(d, _images_in(d)) for d in subs) if s is not None]
        if not seqs:
            raise SegError(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)}) and no CTC sequence folders in this folder")
        items.extend(seqs)
    seen: dict[str, Path] = {}
    for it in items:
        if it.name in seen:
            raise SegError(f"{it.path}: its outputs would have the same name {it.name!r} as those of {seen[it.name]}; "
                           "segment them into different --out folders")
        seen[it.name] = it.path
    return items


def read_image(path: Path) -> np.ndarray:
    """One 2D grey image (H, W) in its own dtype (SegError naming the file otherwise)."""
    kind, shape = layout(path)
    if kind != "image":
        raise SegError(f"{path}: expected one 2D image, got a stack of shape {shape}")
    return load_image(path)


def read_stack(item: Item) -> np.ndarray:
    """The (Z, H, W) stack of a ``stack`` Item (one multi-page file, or one file per page) in its own dtype."""

    if item.pages:
        return np.stack([read_image(p) for p in item.pages])
    kind, shape = layout(item.path)
    return read_tiff(item.path).reshape(shape if kind == "stack" else (1, *shape))
