"""Cell Tracking Challenge (CTC) 2D training datasets, e.g. DIC-C2DH-HeLa, Fluo-N2DH-GOWT1,
PhC-C2DH-U373 (any CTC 2D dataset works by adding a config entry).

Official layout (local copies are used first)::

    <seq>/tNNN.tif                 2D (H, W) image, uint8 or uint16, one per time point
    <seq>_GT/SEG/man_segNNN.tif    2D (H, W) uint16 instance labels (0 = background) for the
                                   annotated time points only (gold truth, a sparse subset)
    <seq>_ST/SEG/man_segNNN.tif    optional silver truth: computer-generated instance labels,
                                   usually for every time point

with sequences ``01`` and ``02``; frame numbers of 2 to 4 digits are accepted. The raw folder may
hold that layout directly, one folder ``<Name>/`` containing it, or the official training archive
``<Name>.zip`` (members ``<Name>/01/...``), which is extracted safely into a temporary folder.

Canonical form (see :mod:`seg.data.canonical`): every frame of a sequence, ids ``<seq>_tNNN``.
The gold-truth (GT) frames are split by the dataset's ``split`` rule; val and test frames always
carry their GT. Which labels a training frame carries is the dataset's ``labels`` setting:

- ``gt``: the GT training frames are ``train``; every other frame is ``unlabeled`` (image only).
- ``st``: every frame with silver truth (ST) is a training frame with its ST labels;
- ``gt+st``: GT where a frame has it, ST on the other frames.

With ``st`` and ``gt+st`` no frame within ``st_exclusion`` frames (in time, same sequence) of a val
or test GT frame contributes training data, GT train frames included: consecutive frames of a
time-lapse are near copies, so training on them would leak the held-out frames. Such frames are
``unlabeled`` and say why (``excluded``). With ``split: {by: sequence}`` the frames of val and test
sequences never train. Entries record their label source (``labels``: gt | st | null).
Instances keep the annotation's ids (int32); semantic = foreground minus the pixels on the border
between two different touching instances, so touching cells separate (U-Net paper).

Please cite: M. Maska et al., Bioinformatics 30(11):1609-1617, 2014; V. Ulman et al., Nature
Methods 14:1141-1152, 2017 (https://doi.org/10.1038/nmeth.4473).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seg.data.canonical import canonical_writer
from seg.data.download import safe_extract
from seg.data.splits import frame_split, sequence_split
from seg.errors import SegError
from seg.io import read_tiff, sha256_file
from seg.progress import progress

CTC_URL = "http://data.celltrackingchallenge.net/training-datasets/{name}.zip"
# SHA-256 of the official training archives, as listed by torch-em
# (torch_em/data/datasets/light_microscopy/ctc.py, CTC_CHECKSUMS["train"]).
CTC_SHA256 = {
    "BF-C2DL-HSC": "0aa68ec37a9b06e72a5dfa07d809f56e1775157fb674bb75ff904936149657b1",
    "BF-C2DL-MuSC": "ca72b59042809120578a198ba236e5ed3504dd6a122ef969428b7c64f0a5e67d",
    "DIC-C2DH-HeLa": "832fed2d05bb7488cf9c51a2994b75f8f3f53b3c3098856211f2d39023c34e1a",
    "Fluo-C2DL-Huh7": "1912658c1b3d8b38b314eb658b559e7b39c256917150e9b3dd8bfdc77347617d",
    "Fluo-C2DL-MSC": "a083521f0cb673ae02d4957c5e6580c2e021943ef88101f6a2f61b944d671af2",
    "Fluo-N2DH-GOWT1": "1a7bd9a7d1d10c4122c7782427b437246fb69cc3322a975485c04e206f64fc2c",
    "Fluo-N2DH-SIM+": "3e809148c87ace80c72f563b56c35e0d9448dcdeb461a09c83f61e93f5e40ec8",
    "Fluo-N2DL-HeLa": "35dd99d58e071aba0b03880128d920bd1c063783cc280f9531fbdc5be614c82e",
    "PhC-C2DH-U373": "b18185c18fce54e8eeb93e4bbb9b201d757add9409bbf2283b8114185a11bc9e",
    "PhC-C2DL-PSC": "9d54bb8febc8798934a21bf92e05d92f5e8557c87e28834b2832591cdda78422",
}
EXPECTED = "<seq>/tNNN.tif with <seq>_GT/SEG/man_segNNN.tif (CTC layout) or the official <Name>.zip"
_IMAGE_RE, _MASK_RE = re.compile(r"t(\d{2,4})\.tiff?"), re.compile(r"man_seg(\d{2,4})\.tiff?")


def default_source(name: str) -> tuple[str | None, str | None]:
    """(url, sha256) of the official training archive of ``name`` if known, else (None, None)."""
    if name in CTC_SHA256:
        return CTC_URL.format(name=name), CTC_SHA256[name]
    return None, None


def download_name(name: str, url: str) -> str:
    base = url.rstrip("/").rsplit("/", 1)[-1]
    return base if base.endswith(".zip") else f"{name}.zip"


def find_root(folder: Path, sequences: list[str]) -> Path | None:
    """The folder holding ``<seq>/`` or ``<seq>_GT/``: ``folder`` itself or one subfolder of it."""
    def holds(d: Path) -> bool:
        return any((d / s).is_dir() or (d / f"{s}_GT").is_dir() for s in sequences)

    if not folder.is_dir():
        return None
    if holds(folder):
        return folder
    subs = [d for d in sorted(folder.iterdir()) if d.is_dir() and holds(d)]
    return subs[0] if len(subs) == 1 else None


def find_zip(folder: Path, name: str, url: str | None) -> Path | None:
    """The official archive in ``folder``: ``<download name>.zip`` or the only ``*.zip`` there."""
    if not folder.is_dir():
        return None
    named = folder / download_name(name, url or f"{name}.zip")
    if named.is_file():
        return named
    zips = sorted(folder.glob("*.zip"))
    return zips[0] if len(zips) == 1 else None


def has_local_files(folder: Path, entry: dict, *, url: str | None = None) -> bool:
    seqs = list(entry.get("sequences") or ["01", "02"])
    return find_root(folder, seqs) is not None or find_zip(folder, folder.name, url) is not None


def _numbered(folder: Path, pattern: re.Pattern) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        m = pattern.fullmatch(p.name)
        if m:
            n = int(m.group(1))
            if n in out:
                raise SegError(f"{p}: frame {n} is also given by {out[n].name}")
            out[n] = p
    return out


@dataclass(frozen=True)
class CtcFrame:
    """One time point of a CTC sequence: its image and, where present, GT and ST instance masks."""

    frame: int
    image: Path
    gt: Path | None = None
    st: Path | None = None


def ctc_frames(root: Path, sequences: list[str]) -> dict[str, list[CtcFrame]]:
    """Every frame of each present sequence, in time order: ``{seq: [CtcFrame, ...]}``.

    Raises:
        SegError: no configured sequence is present, a GT or ST mask has no image, or there is no
            GT annotation at all (empty label set; val and test are scored on GT only).
    """
    present = [s for s in sequences if (root / s).is_dir() or (root / f"{s}_GT").is_dir()]
    if not present:
        raise SegError(f"{root}: none of the sequences {', '.join(sequences)} found (expected {EXPECTED})")
    out: dict[str, list[CtcFrame]] = {}
    for seq in present:
        images = _numbered(root / seq, _IMAGE_RE)
        masks = {kind: _numbered(root / f"{seq}_{kind}" / "SEG", _MASK_RE) for kind in ("GT", "ST")}
        for kind, found in masks.items():
            for n, mask in sorted(found.items()):
                if n not in images:
                    raise SegError(f"{mask}: no image for frame {n} (expected {root / seq}/t{n:03d}.tif)")
        frames = [CtcFrame(n, images[n], masks["GT"].get(n), masks["ST"].get(n)) for n in sorted(images)]
        if any(f.gt for f in frames):
            out[seq] = frames
    if not out:
        where = ", ".join(f"{root / s}_GT/SEG/" for s in present)
        raise SegError(f"{where}: empty label set (no man_segNNN.tif annotations found)")
    return out


def ctc_semantic(instances: np.ndarray) -> np.ndarray:
    """(H, W) int instances -> uint8 semantic: 1 = cell, 0 = background and the pixels of an
    instance that touch (8-neighbourhood) a different non-zero instance."""
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    inst = np.asarray(instances, dtype=np.int32)
    fg = inst > 0
    boundary = find_boundaries(inst, connectivity=2, mode="inner")
    footprint = np.ones((3, 3), dtype=bool)
    hi = ndi.maximum_filter(inst, footprint=footprint, mode="nearest")
    lo = ndi.minimum_filter(np.where(fg, inst, np.iinfo(np.int32).max), footprint=footprint, mode="nearest")
    touching = fg & ((hi > inst) | (lo < inst))
    return (fg & ~(boundary & touching)).astype(np.uint8)


def load_ctc_image(image_path: Path) -> np.ndarray:
    """Read one frame's image (H, W) in its original dtype (SegError naming the file if unreadable)."""
    return read_tiff(image_path, ndim=2)


def load_ctc_frame(image_path: Path, mask_path: Path, *, allow_empty: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate one annotated frame: image (H, W) original dtype, instances int32 (H, W).
    An all-zero mask is an error unless ``allow_empty`` (silver truth may hold no object)."""
    image = load_ctc_image(image_path)
    mask = read_tiff(mask_path, ndim=2)
    if not np.issubdtype(mask.dtype, np.integer):
        raise SegError(f"{mask_path}: instance labels must be integers, got dtype {mask.dtype}")
    if mask.shape != image.shape:
        raise SegError(f"{mask_path}: shape {mask.shape} does not match image {image_path.name} {image.shape}")
    if mask.min() < 0 or mask.max() > np.iinfo(np.int32).max:
        raise SegError(f"{mask_path}: instance ids must be in 0..2^31-1, found {mask.min()}..{mask.max()}")
    if mask.max() == 0 and not allow_empty:
        raise SegError(f"{mask_path}: empty label set (no objects, all pixels are 0)")
    return image, mask.astype(np.int32)


def _assign(frames: dict[str, list[CtcFrame]], split_cfg: dict, where: str) -> dict[tuple[str, int], str]:
    """Split of each GT frame ``(seq, frame) -> train|val|test`` by the dataset's split rule."""

    gt = {s: [f.frame for f in fr if f.gt] for s, fr in frames.items()}
    by = split_cfg.get("by", "frame")
    if by == "frame":
        vf, tf = split_cfg.get("val_fraction", 0.2), split_cfg.get("test_fraction", 0.3334)
        return {(s, f): sp for s, fr in gt.items()
                for f, sp in frame_split(fr, vf, tf, where=f"{where} (sequence {s})").items()}
    if by == "sequence":
        seq_split = sequence_split(list(gt), split_cfg, where=where)
        return {(s, f): seq_split[s] for s in gt if s in seq_split for f in gt[s]}
    raise SegError(f"{where}.by: {by!r} is not valid for a ctc dataset (use 'frame' or 'sequence')")


LABEL_MODES = ("gt", "st", "gt+st")


def plan_frames(frames: dict[str, list[CtcFrame]], assignment: dict[tuple[str, int], str], *,
                labels: str = "gt", st_exclusion: int = 5, where: str = "config") -> list[dict]:
    """What becomes of every frame: ``[{"sequence", "frame", "split", "labels", "mask", "excluded"}]``.

    Val and test are the GT frames the split rule chose (labels ``gt``). Training frames take their
    labels by ``labels`` (see the module docstring); with ``st`` or ``gt+st`` a frame within
    ``st_exclusion`` frames of a val or test frame of its sequence, or any frame of a val or test
    sequence, is ``unlabeled`` with ``excluded`` saying why. Frames of sequences the split rule
    leaves out are not listed. ``mask`` is the instance mask file to read (None when unlabeled).

    Raises:
        SegError: unknown ``labels`` mode or a negative ``st_exclusion``.
    """
    if labels not in LABEL_MODES:
        raise SegError(f"{where}.labels: {labels!r} is not one of {list(LABEL_MODES)}")
    if st_exclusion < 0:
        raise SegError(f"{where}.st_exclusion: must be >= 0 frames, got {st_exclusion}")
    plan = []
    for seq, fr in frames.items():
        seq_splits = {assignment[(seq, f.frame)] for f in fr if (seq, f.frame) in assignment}
        if not seq_splits:
            continue  # a sequence the split rule leaves out
        held_out = [f.frame for f in fr if assignment.get((seq, f.frame)) in ("val", "test")]
        whole_sequence_held_out = "train" not in seq_splits
        for f in fr:
            split = assignment.get((seq, f.frame))
            row = {"sequence": seq, "frame": f.frame, "image": f.image, "split": "unlabeled",
                   "labels": None, "mask": None, "excluded": None}
            if split in ("val", "test"):
                row.update(split=split, labels="gt", mask=f.gt)
            elif labels == "gt":
                if split == "train":
                    row.update(split="train", labels="gt", mask=f.gt)
            else:
                source = (("gt", f.gt) if f.gt and labels == "gt+st" else ("st", f.st) if f.st else (None, None))
                near = [g for g in held_out if abs(g - f.frame) <= st_exclusion]
                if source[0] is None:
                    pass
                elif whole_sequence_held_out:
                    row["excluded"] = f"sequence {seq} is held out ({'/'.join(sorted(seq_splits))})"
                elif near:
                    g = min(near, key=lambda x: (abs(x - f.frame), x))
                    row["excluded"] = (f"within {st_exclusion} frames of {assignment[(seq, g)]} frame "
                                       f"{g} (st_exclusion)")
                else:
                    row.update(split="train", labels=source[0], mask=source[1])
            plan.append(row)
    return plan


def ingest_ctc(folder: Path, out: Path, *, name: str, entry: dict, source: dict, url: str | None = None,
               kind) -> dict:
    """Ingest a CTC raw folder (layout or official zip) into the canonical form at ``out``; returns meta.
    ``kind``: the dataset kind written into meta.json (:class:`seg.kinds.ctc.CtcKind`, which calls this)."""

    sequences = list(entry.get("sequences") or ["01", "02"])
    root = find_root(folder, sequences)
    if root is not None:
        return _ingest_root(root, folder, out, name=name, entry=entry, source={**source, "format": "ctc"}, kind=kind)
    archive = find_zip(folder, name, url)
    if archive is None:
        raise SegError(f"{folder}: no CTC data found (expected {EXPECTED})")
    with tempfile.TemporaryDirectory(prefix=f"seg-{name}-") as tmp:
        safe_extract(archive, tmp)
        root = find_root(Path(tmp), sequences)
        if root is None:
            raise SegError(f"{archive}: none of the sequences {', '.join(sequences)} found in the archive")
        files = {archive.name: sha256_file(archive)}
        inner = root.relative_to(tmp).as_posix()
        prefix = archive.name if inner == "." else f"{archive.name}/{inner}"
        return _ingest_root(root, Path(tmp), out, name=name, entry=entry, extra_files=files,
                            source={**source, "format": "ctc-zip", "archive": archive.name},
                            prefix=prefix, kind=kind)


def _ingest_root(root: Path, rel_to: Path, out: Path, *, name: str, entry: dict, source: dict, kind,
                 extra_files: dict | None = None, prefix: str | None = None) -> dict:

    where = f"config: datasets.{name}"
    frames = ctc_frames(root, list(entry.get("sequences") or ["01", "02"]))
    assignment = _assign(frames, entry.get("split") or {}, f"{where}.split")
    labels, gap = entry.get("labels") or "gt", int(entry.get("st_exclusion", 5))
    plan = plan_frames(frames, assignment, labels=labels, st_exclusion=gap, where=where)
    source = {**source, "sequences": sorted(frames), "citation": "Ulman et al., Nature Methods 14:1141-1152, 2017"}

    def rel(p: Path) -> str:
        r = p.relative_to(rel_to if prefix is None else root).as_posix()
        return r if prefix is None else f"{prefix}/{r}"

    with canonical_writer(out, name=name, kind=kind, source=source,
                          align=bool(entry.get("align_images", False))) as w:
        w.meta.update(annotations=entry.get("annotations", "full"), labels=labels, st_exclusion=gap)
        w.record_files(extra_files or {})
        for row in progress(plan, desc=f"ingest {name}", unit="frame"):
            seq, f, img, msk = row["sequence"], row["frame"], row["image"], row["mask"]
            files = {rel(img): sha256_file(img)}
            if msk is None:
                image, inst = load_ctc_image(img), None
            else:
                image, inst = load_ctc_frame(img, msk, allow_empty=row["labels"] == "st")
                files[rel(msk)] = sha256_file(msk)
                if not inst.any():  # an empty silver-truth mask: nothing to learn from
                    row.update(split="unlabeled", labels=None, excluded="its silver truth holds no object")
                    inst = None
            e = w.add(f"{seq}_t{f:03d}", image, split=row["split"], frame=f, sequence=seq, instances=inst,
                      semantic=None if inst is None else ctc_semantic(inst))
            e["labels"] = row["labels"]
            if row["excluded"]:
                e["excluded"] = row["excluded"]
            w.record_files(files)
    return w.meta
