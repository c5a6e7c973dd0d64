"""A user's folder of 2D images and masks (dataset kind ``folder``), as annotation tools write them.

Layouts (``layout:`` in the dataset entry; ``auto`` detects which one the folder holds and refuses
a folder that holds more than one)::

    cellpose       <name>.tif + <name>_masks.tif in one folder (suffix: ``mask_suffix``, default
                   ``_masks``; cellpose ``io.get_label_files``)
    images-masks   images/<name>.tif + masks/<name>.tif, equal names (StarDist, BiaPy)
    nnunet         imagesTr/<case>_0000.png + labelsTr/<case>.png; imagesTs/<case>_0000.png are
                   unlabelled images (nnU-Net ``dataset_format.md``; one channel only)

Files: ``.tif``/``.tiff`` (tifffile), ``.png``, ``.jpg``/``.jpeg`` (Pillow); other files
(``dataset.json``, notes) are ignored. Images are 2D, uint8, uint16 or float, of any size (sizes may
differ between pairs); an RGB(A) image whose three colour channels are equal is taken as grey (its
first channel), a colour image with different channels is an error. An image's mask must have its
size. The name of a pair is the image's file name without extension (nnU-Net: without ``_0000``).

Masks, by the dataset's ``labels``:

- ``instance`` (default): integer instance labels, 0 = background, ids kept as they are (int32);
  float masks are accepted only when every value is a whole number. The class map is made as for
  the Cell Tracking Challenge (:func:`seg.data.ctc.ctc_semantic`: 1 = object, 0 = background and
  the border between touching objects).
- ``semantic``: class indices 0..``classes``-1 (only 2 classes: 0 = background, 1 = foreground; a
  {0, 255} mask is read as 0 / 1). Instances are the 4-connected components of class 1.

``annotations: sparse``: not every object is annotated (as DIC-HeLa); ``unannotated_value``: the
mask value that marks "not annotated" pixels (e.g. 65535). Those pixels become 0 in the canonical
masks and the dataset is sparse, so the loss counts only the annotated objects and the background
within ``weights.sparse_band`` px of them (:mod:`seg.transforms.weights`), and scoring only annotated
objects.

Split (``split:``): seeded random fractions ``{val: 0.2, test: 0.2, seed: 0}`` (the default; with
>= 3 pairs each of train, val and test gets at least one), or lists of names ``{train: [...],
val: [...], test: [...]}`` (``train`` may be left out: the rest). Unlabelled images (the
``unlabelled:`` subfolder, nnU-Net's ``imagesTs/``) are ingested as ``unlabeled`` slices, images
only, as the CTC kind keeps its unannotated frames (``seg segment`` runs on them).

Canonical ids are the pair names (characters other than letters, digits, ``.``, ``_`` and ``-``
become ``_``); every slice is sequence ``01``, frame = its index in name order (labelled pairs,
then unlabelled images).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seg.data.canonical import canonical_writer
from seg.data.ctc import ctc_semantic
from seg.data.splits import frame_split_counts
from seg.errors import SegError
from seg.io import read_tiff, sha256_file
from seg.progress import progress

LAYOUTS = ("cellpose", "images-masks", "nnunet")
EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
EXPECTED = ("2D images with masks: <name>.tif + <name>_masks.tif (cellpose), images/ + masks/ with equal "
            "names (StarDist/BiaPy) or imagesTr/<case>_0000.png + labelsTr/<case>.png (nnU-Net)")
DEFAULT_SUFFIX = "_masks"


@dataclass(frozen=True)
class Pair:
    """One image and its mask (``mask`` None: an unlabelled image)."""

    name: str
    image: Path
    mask: Path | None = None


def _files(folder: Path) -> list[Path]:
    """Image files (by extension) directly in ``folder``, sorted; hidden files ignored."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in EXTENSIONS)


def _stem(p: Path) -> str:
    return p.name[: -len(p.suffix)] if p.suffix else p.name


def _by_name(paths: list[tuple[str, Path]]) -> dict[str, Path]:
    """``{name: path}``; two files mapping to one name is an error naming both."""
    out: dict[str, Path] = {}
    for name, p in paths:
        if name in out:
            raise SegError(f"{p}: maps to the same name {name!r} as {out[name].name} (keep one of them)")
        out[name] = p
    return out


def detect_layouts(folder: Path, *, suffix: str = DEFAULT_SUFFIX) -> list[str]:
    """The layouts ``folder`` holds (possibly none, or more than one)."""
    found = []
    if any(_stem(p).endswith(suffix) for p in _files(folder)):
        found.append("cellpose")
    if (folder / "images").is_dir() and (folder / "masks").is_dir():
        found.append("images-masks")
    if (folder / "imagesTr").is_dir() and (folder / "labelsTr").is_dir():
        found.append("nnunet")
    return found


def resolve_layout(folder: Path, layout: str = "auto", *, suffix: str = DEFAULT_SUFFIX) -> str:
    """``layout`` itself, or with ``auto`` the one layout ``folder`` holds.

    Raises:
        SegError: unknown layout name, no layout found, or more than one found (ambiguous).
    """
    if layout != "auto":
        if layout not in LAYOUTS:
            raise SegError(f"layout {layout!r} is not one of {['auto', *LAYOUTS]}")
        return layout
    found = detect_layouts(folder, suffix=suffix)
    if not found:
        raise SegError(f"{folder}: no image/mask layout found (expected {EXPECTED})")
    if len(found) > 1:
        raise SegError(f"{folder}: holds more than one layout ({', '.join(found)}); set layout: in the dataset entry")
    return found[0]


def has_local_files(folder: Path, entry: dict, *, url: str | None = None) -> bool:
    """Whether ``folder`` holds a folder layout (the configured one, or any with ``auto``)."""
    suffix = entry.get("mask_suffix") or DEFAULT_SUFFIX
    found = detect_layouts(folder, suffix=suffix) if folder.is_dir() else []
    layout = entry.get("layout") or "auto"
    return bool(found) if layout == "auto" else layout in found


def find_pairs(folder: Path, layout: str, *, suffix: str = DEFAULT_SUFFIX,
               unlabelled: str | None = None) -> tuple[list[Pair], list[Pair]]:
    """(labelled pairs, unlabelled images) of ``folder`` in ``layout``, each sorted by name.

    Raises:
        SegError: an image without a mask or a mask without an image (naming the file), two files
            mapping to one name, an nnU-Net image with a channel other than ``_0000``, a missing
            ``unlabelled`` folder, or no pair at all.
    """
    if layout == "cellpose":
        files = _files(folder)
        masks = _by_name([(_stem(p)[: -len(suffix)], p) for p in files if _stem(p).endswith(suffix)])
        images = _by_name([(_stem(p), p) for p in files if not _stem(p).endswith(suffix)])
        where_mask = lambda n: folder / f"{n}{suffix}.tif"  # noqa: E731
    elif layout == "images-masks":
        images = _by_name([(_stem(p), p) for p in _files(folder / "images")])
        masks = _by_name([(_stem(p), p) for p in _files(folder / "masks")])
        where_mask = lambda n: folder / "masks" / f"{n}.tif"  # noqa: E731
    elif layout == "nnunet":
        images = _by_name([(_nnunet_case(p), p) for p in _files(folder / "imagesTr")])
        masks = _by_name([(_stem(p), p) for p in _files(folder / "labelsTr")])
        where_mask = lambda n: folder / "labelsTr" / f"{n}.png"  # noqa: E731
    else:
        raise SegError(f"layout {layout!r} is not one of {list(LAYOUTS)}")
    for name, m in masks.items():
        if name not in images:
            raise SegError(f"{m}: mask without an image (no image named {name!r})")
    for name, p in images.items():
        if name not in masks:
            raise SegError(f"{p}: image without a mask (expected e.g. {where_mask(name)})")
    pairs = [Pair(n, images[n], masks[n]) for n in sorted(images)]
    if not pairs:
        raise SegError(f"{folder}: no image/mask pair found in layout {layout} (expected {EXPECTED})")
    extra: list[tuple[str, Path]] = []
    if layout == "nnunet":
        extra += [(_nnunet_case(p), p) for p in _files(folder / "imagesTs")]
    if unlabelled:
        sub = folder / unlabelled
        if not sub.is_dir():
            raise SegError(f"{sub}: unlabelled folder not found (datasets.<name>.unlabelled)")
        extra += [(_stem(p), p) for p in _files(sub)]
    extra_by = _by_name(extra)
    for n, p in extra_by.items():
        if n in images:
            raise SegError(f"{p}: unlabelled image has the same name {n!r} as the labelled {images[n]}")
    return pairs, [Pair(n, extra_by[n]) for n in sorted(extra_by)]


def _nnunet_case(p: Path) -> str:
    stem = _stem(p)
    m = re.fullmatch(r"(.+)_(\d{4})", stem)
    if m is None:
        raise SegError(f"{p}: nnU-Net image names end in _0000 (<case>_0000{p.suffix})")
    if m.group(2) != "0000":
        raise SegError(f"{p}: channel {m.group(2)}: only one-channel images (_0000) are supported")
    return m.group(1)


def read_image_file(path: Path) -> np.ndarray:
    """Any supported file as a numpy array in its own dtype (SegError naming the file if unreadable)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        return read_tiff(path)
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except Exception as e:  # Pillow raises many types for corrupt files
        raise SegError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def _one_channel(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    """(H, W) of a 2D array, of (1, H, W) / (H, W, 1), or of an RGB(A) array with equal colour channels."""
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if (rgb == rgb[..., :1]).all():
            return np.ascontiguousarray(rgb[..., 0])
        raise SegError(f"{path}: colour {what} of shape {tuple(arr.shape)} with different channels; one channel "
                       "(grey) is expected")
    if arr.ndim != 2:
        raise SegError(f"{path}: expected a 2D {what} (H, W), got shape {tuple(arr.shape)}")
    return arr


def load_image(path: Path) -> np.ndarray:
    """One image (H, W): uint8, uint16 (or another integer type) or float, as stored; an RGB(A) image
    whose colour channels are equal as its grey channel; a 1-bit image as uint8 0 / 255. What
    ``seg ingest`` of a folder and ``seg segment`` read (:mod:`seg.export.inputs`).

    Raises:
        SegError: unreadable, not 2D, colour with different channels, complex or other non-grey dtype.
    """
    img = _one_channel(read_image_file(path), path, "image")
    if img.dtype == bool:  # a 1-bit PNG or TIFF, as Pillow's mode "L" would give it
        img = img.astype(np.uint8) * np.uint8(255)
    if not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
        raise SegError(f"{path}: image dtype {img.dtype} is not supported (uint8, uint16 or float)")
    if np.issubdtype(img.dtype, np.floating) and not np.isfinite(img).all():
        raise SegError(f"{path}: image holds NaN or infinite values")
    return img


def load_mask(path: Path, image_shape: tuple[int, ...], image_path: Path, *, labels: str, classes: int = 2,
              unannotated_value: int | None = None) -> np.ndarray:
    """One mask as int32 (H, W): instance ids (``labels: instance``) or class indices (``semantic``);
    pixels equal to ``unannotated_value`` become 0.

    Raises:
        SegError: naming the mask file: not 2D / colour, size differs from the image, non-whole or
            negative values, ids beyond int32, class values >= ``classes``.
    """
    raw = _one_channel(read_image_file(path), path, "mask")
    if raw.shape != tuple(image_shape):
        raise SegError(f"{path}: size {raw.shape} does not match image {image_path.name} {tuple(image_shape)}")
    if raw.dtype == bool:
        raw = raw.astype(np.uint8)
    if np.issubdtype(raw.dtype, np.floating):
        if not np.isfinite(raw).all() or (raw != np.round(raw)).any():
            raise SegError(f"{path}: mask has non-whole (float) values; expected integer labels or classes")
    elif not np.issubdtype(raw.dtype, np.integer):
        raise SegError(f"{path}: mask dtype {raw.dtype} is neither labels nor classes")
    if unannotated_value is not None:
        raw = np.where(raw == unannotated_value, 0, raw)
    lo, hi = (raw.min(), raw.max()) if raw.size else (0, 0)
    if lo < 0:
        raise SegError(f"{path}: mask has negative values (min {lo}); labels and classes are >= 0")
    if labels == "instance":
        if hi > np.iinfo(np.int32).max:
            raise SegError(f"{path}: instance ids must be in 0..2^31-1, found up to {hi}")
        return raw.astype(np.int32)
    values = set(np.unique(raw).tolist())
    if classes == 2 and values <= {0, 255}:
        return (raw == 255).astype(np.int32)
    if hi >= classes:
        raise SegError(f"{path}: mask values {sorted(values)[:8]} exceed classes: {classes} "
                       f"(class indices 0..{classes - 1}; is it an instance mask? then labels: instance)")
    return raw.astype(np.int32)


def safe_id(name: str) -> str:
    """The canonical slice id of a pair name (letters, digits, ``.``, ``_``, ``-``; others ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def split_pairs(names: list[str], rule: dict | None, *, where: str) -> dict[str, str]:
    """``{name: train|val|test}`` of the labelled pair names by the dataset's ``split`` rule.

    Fractions (``val``, ``test`` numbers in [0, 1), ``seed`` int; default 0.2, 0.2, 0): a seeded
    random order of the sorted names; each non-zero fraction gets at least one pair and train keeps
    at least one. Lists (``train``, ``val``, ``test`` lists of names; ``train`` default: the rest).

    Raises:
        SegError: naming the config key: fewer pairs than the fractions need (>= 3 for the default),
            a listed name that is no pair, a name in two lists, an unlisted name when ``train`` is
            listed, mixed lists and fractions, or a ctc-only key (``by``, ``val_fraction``, ...).
    """

    rule = {k: v for k, v in (rule or {}).items() if v is not None}
    for key in ("by", "val_fraction", "test_fraction"):
        if key in rule:
            raise SegError(f"{where}.{key}: not a folder key; use split: {{val: 0.2, test: 0.2, seed: 0}} "
                           "or lists {train: [...], val: [...], test: [...]}")
    order = sorted(names)
    lists = {k: rule[k] for k in ("train", "val", "test") if isinstance(rule.get(k), (list, str))}
    if not lists:
        val, test = float(rule.get("val", 0.2)), float(rule.get("test", 0.2))
        for k, f in (("val", val), ("test", test)):
            if not 0 <= f < 1:
                raise SegError(f"{where}.{k}: a fraction in [0, 1), got {f}")
        n_train, n_val, _ = frame_split_counts(len(order), val, test, where=f"{where} ({len(order)} pairs)")
        rng = np.random.default_rng(int(rule.get("seed", 0)))
        perm = [order[i] for i in rng.permutation(len(order))]
        return {n: "train" if i < n_train else "val" if i < n_train + n_val else "test" for i, n in enumerate(perm)}
    if len(lists) != len([k for k in ("train", "val", "test") if k in rule]) or "seed" in rule:
        raise SegError(f"{where}: give either fractions (val, test, seed) or lists of names (train, val, test), not both")
    out: dict[str, str] = {}
    for split, spec in lists.items():
        for n in ([spec] if isinstance(spec, str) else spec):
            n = str(n)
            if n not in names:
                raise SegError(f"{where}.{split}: {n!r} is not a pair name (e.g. {', '.join(order[:3])})")
            if n in out:
                raise SegError(f"{where}.{split}: {n!r} is also in {out[n]}")
            out[n] = split
    rest = [n for n in order if n not in out]
    if "train" in lists and rest:
        raise SegError(f"{where}: pairs in no split list: {', '.join(rest[:5])}{' ...' if len(rest) > 5 else ''}")
    out.update({n: "train" for n in rest})
    if "train" not in out.values():
        raise SegError(f"{where}.train: no pair is left for training")
    return out


def entry_options(entry: dict) -> dict:
    """The folder keys of a dataset entry with their defaults."""
    return {"layout": entry.get("layout") or "auto", "suffix": entry.get("mask_suffix") or DEFAULT_SUFFIX,
            "labels": entry.get("labels") or "instance", "classes": int(entry.get("classes") or 2),
            "unlabelled": entry.get("unlabelled"), "unannotated_value": entry.get("unannotated_value"),
            "annotations": entry.get("annotations") or "full"}


def check_folder(folder: Path, entry: dict, *, where: str = "config") -> tuple[str, list[Pair], list[Pair], dict]:
    """Find the pairs of ``folder`` (files are read later, by :func:`read_pair`): (layout,
    labelled pairs, unlabelled images, the entry's folder options of :func:`entry_options`).

    Raises:
        SegError: every bad-input case of :func:`find_pairs`; a ``labels`` other than instance /
            semantic; two names giving one canonical id.
    """
    o = entry_options(entry)
    if o["labels"] not in ("instance", "semantic"):
        raise SegError(f"{where}.labels: {o['labels']!r} is not one of ['instance', 'semantic'] (kind folder)")
    layout = resolve_layout(folder, o["layout"], suffix=o["suffix"])
    pairs, unlabelled = find_pairs(folder, layout, suffix=o["suffix"], unlabelled=o["unlabelled"])
    ids: dict[str, Path] = {}
    for p in pairs + unlabelled:
        i = safe_id(p.name)
        if i in ids:
            raise SegError(f"{p.image}: its name gives the same id {i!r} as {ids[i]}")
        ids[i] = p.image
    return layout, pairs, unlabelled, o


def read_pair(pair: Pair, o: dict) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W) as stored, mask int32 (H, W)) of a labelled pair, checked (see :func:`load_mask`)."""
    image = load_image(pair.image)
    mask = load_mask(pair.mask, image.shape, pair.image, labels=o["labels"], classes=o["classes"],
                     unannotated_value=o["unannotated_value"])
    if o["annotations"] == "sparse" and not mask.any():
        raise SegError(f"{pair.mask}: empty mask in a sparse dataset (no annotated object)")
    return image, mask


def ingest_folder(folder: Path, out: Path, *, name: str, entry: dict, source: dict, kinds: dict) -> dict:
    """Ingest a folder dataset into the canonical form at ``out`` (atomically); returns meta.

    ``kinds``: ``{"instance": kind, "semantic": kind}``, the kind written into meta.json for the
    dataset's ``labels`` (:class:`seg.kinds.folder.FolderKind` and its semantic twin)."""

    where = f"config: datasets.{name}"
    layout, pairs, unlabelled, o = check_folder(folder, entry, where=where)
    if o["labels"] == "semantic" and o["classes"] != 2:
        raise SegError(f"{where}.classes: {o['classes']} classes are not supported (only 2)")
    split = split_pairs([p.name for p in pairs], entry.get("split"), where=f"{where}.split")
    annotations = "sparse" if o["unannotated_value"] is not None else o["annotations"]
    source = {**source, "format": f"folder/{layout}", "layout": layout}

    def rel(p: Path) -> str:
        return p.relative_to(folder).as_posix()

    with canonical_writer(out, name=name, kind=kinds[o["labels"]], source=source,
                          align=bool(entry.get("align_images", False))) as w:
        w.meta.update(annotations=annotations, labels=o["labels"], layout=layout)
        rows = [(p, split[p.name]) for p in pairs] + [(p, "unlabeled") for p in unlabelled]
        for frame, (p, sp) in enumerate(progress(rows, desc=f"ingest {name}", unit="image")):
            files = {rel(p.image): sha256_file(p.image)}
            if p.mask is None:
                image, inst, sem = load_image(p.image), None, None
            else:
                image, mask = read_pair(p, o)
                files[rel(p.mask)] = sha256_file(p.mask)
                if o["labels"] == "instance":
                    inst, sem = mask, ctc_semantic(mask)
                else:
                    from skimage.measure import label

                    sem, inst = mask.astype(np.uint8), label(mask == 1, connectivity=1).astype(np.int32)
            e = w.add(safe_id(p.name), image, split=sp, frame=frame, sequence="01", instances=inst, semantic=sem)
            e["name"] = p.name
            e["labels"] = None if p.mask is None else "gt"
            w.record_files(files)
    return w.meta
