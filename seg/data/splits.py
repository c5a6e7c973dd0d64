"""Train/val/test split rules (rules, not lists tied to one copy of the data).

- ISBI 2012 (``by: slices``): explicit slice ranges of the training stack, e.g. ``"0-19"``,
  ``"20-24"``, ``"25-29"`` (also ``"0-4,7,9-11"`` or a list of ints). A slice outside the stack
  is an error; slices in no range are left out.
- CTC by frame (``by: frame``): per sequence, annotated frames in time order; the last
  ``test_fraction`` are test, the ``val_fraction`` before them val, the rest train. Counts are
  rounded to the nearest integer (halves up) and each non-empty fraction gets at least one frame.
- CTC by sequence (``by: sequence``): lists of sequence names per split.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

from seg.errors import SegError

SPLITS = ("train", "val", "test")
ISBI_DEFAULT = {"train": "0-19", "val": "20-24", "test": "25-29"}


def parse_ranges(spec: str | Sequence[int | str], *, key: str) -> list[int]:
    """``"0-19"`` / ``"0-4,7"`` / ``[0, 1, "3-5"]`` -> sorted unique ints.

    Raises:
        SegError: naming ``key`` when the spec is malformed.
    """
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    out: set[int] = set()
    for p in parts:
        if isinstance(p, bool):
            raise SegError(f"{key}: {p!r} is not a slice number or range")
        if isinstance(p, int):
            out.add(p)
            continue
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(p))
        if not m:
            raise SegError(f"{key}: {p!r} is not a slice number or range such as '0-19'")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a:
            raise SegError(f"{key}: range {p!r} is empty (end before start)")
        out.update(range(a, b + 1))
    return sorted(out)


def isbi_split(n_slices: int, split_cfg: dict, *, where: str) -> dict[int, str]:
    """Map each training-stack slice index that is used to its split name.

    Args:
        n_slices: number of slices Z of the annotated stack.
        split_cfg: the dataset's ``split`` config (train/val/test ranges; defaults 0-19/20-24/25-29).
        where: config key prefix for messages, e.g. ``config: datasets.isbi2012.split``.

    Raises:
        SegError: a range references a slice that does not exist, or a slice is in two splits.
    """
    by = split_cfg.get("by", "slices")
    if by != "slices":
        raise SegError(f"{where}.by: {by!r} is not valid for an isbi2012 dataset (use 'slices')")
    out: dict[int, str] = {}
    for name in SPLITS:
        spec = split_cfg.get(name, ISBI_DEFAULT[name])
        for i in parse_ranges(spec, key=f"{where}.{name}"):
            if i >= n_slices:
                raise SegError(f"{where}.{name}: slice {i} does not exist "
                               f"(the annotated stack has {n_slices} slices, 0-{n_slices - 1})")
            if i in out:
                raise SegError(f"{where}.{name}: slice {i} is also in split {out[i]!r}")
            out[i] = name
    return out


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


def frame_split_counts(n: int, val_fraction: float, test_fraction: float, *, where: str) -> tuple[int, int, int]:
    """(n_train, n_val, n_test) for ``n`` annotated frames of one sequence (see module docstring).

    Raises:
        SegError: the fractions leave no training frame.
    """
    n_test = max(_round(n * test_fraction), 1) if test_fraction > 0 else 0
    n_val = max(_round(n * val_fraction), 1) if val_fraction > 0 else 0
    n_train = n - n_val - n_test
    if n_train < 1:
        raise SegError(f"{where}: {n} annotated frame(s) cannot be split with val_fraction={val_fraction} "
                       f"and test_fraction={test_fraction} (no frame would be left for train)")
    return n_train, n_val, n_test


def frame_split(frames: Sequence[int], val_fraction: float, test_fraction: float, *, where: str) -> dict[int, str]:
    """Split one sequence's annotated frame numbers in time order: train, then val, then test."""
    order = sorted(frames)
    n_train, n_val, _ = frame_split_counts(len(order), val_fraction, test_fraction, where=where)
    return {f: ("train" if i < n_train else "val" if i < n_train + n_val else "test") for i, f in enumerate(order)}


def sequence_split(present: Sequence[str], split_cfg: dict, *, where: str) -> dict[str, str]:
    """Map sequence name -> split from lists in ``split_cfg`` (sequences in no list are left out).

    Raises:
        SegError: a list names a sequence that is not present, a sequence is in two splits, or
            no sequence is assigned to train.
    """
    out: dict[str, str] = {}
    for name in SPLITS:
        spec = split_cfg.get(name) or []
        if isinstance(spec, str):
            spec = [s for s in re.split(r"[,\s]+", spec) if s]
        for seq in spec:
            seq = str(seq)
            if seq not in present:
                raise SegError(f"{where}.{name}: sequence {seq!r} does not exist "
                               f"(present: {', '.join(present) or 'none'})")
            if seq in out:
                raise SegError(f"{where}.{name}: sequence {seq!r} is also in split {out[seq]!r}")
            out[seq] = name
    if "train" not in out.values():
        raise SegError(f"{where}.train: by sequence needs at least one training sequence")
    return out
