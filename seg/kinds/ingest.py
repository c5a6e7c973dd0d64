"""``seg ingest``: raw files of one configured dataset -> the canonical form in ``data/<dataset>/``.

Finds the raw files (local first, else a verified download; see :mod:`seg.kinds.sources`), then hands
them to the dataset kind's ingest (:meth:`seg.kinds.base.Kind.ingest`, which calls its reader,
:mod:`seg.data.isbi2012` or :mod:`seg.data.ctc`), which validates everything and writes the dataset
folder atomically (no partial output on any error).
"""

from __future__ import annotations

import os
from pathlib import Path

from seg.errors import SegError
from seg.kinds import get_kind
from seg.kinds.sources import dataset_entry, obtain


def default_out(cfg: dict, name: str) -> Path:
    """``<data_dir>/<name>``."""
    return Path(cfg.get("data_dir") or "data") / name


def _check_out(out: Path, raw: Path) -> None:
    """The output must neither be nor contain nor lie inside the raw folder (it is replaced whole)."""
    o, r = out.resolve(), raw.resolve()
    if o == r or r in o.parents or o in r.parents:
        raise SegError(f"{out}: the output folder overlaps the raw folder {raw} (choose another --out)")


def ingest_dataset(cfg: dict, name: str, out: str | os.PathLike | None = None) -> dict:
    """Ingest dataset ``name`` of the validated config ``cfg`` into ``out`` (default ``<data_dir>/<name>``).

    Returns:
        The meta dict written to ``<out>/meta.json``.

    Raises:
        SegError: raw files missing and not downloadable, failed/mismatched download, or any bad
            input (the message names the file or config key).
    """

    entry = dataset_entry(cfg, name)
    out = Path(out) if out is not None else default_out(cfg, name)
    folder, source = obtain(cfg, name)
    _check_out(out, folder)
    return get_kind(entry["kind"]).ingest(folder, out, name=name, entry=entry, source=source)


def summary(meta: dict) -> str:
    """One line: counts per split."""
    counts: dict[str, int] = {}
    for s in meta["slices"]:
        counts[s["split"]] = counts.get(s["split"], 0) + 1
    parts = ", ".join(f"{counts[k]} {k}" for k in ("train", "val", "test", "unlabeled") if k in counts)
    return f"{meta['name']} ({meta['kind']}): {len(meta['slices'])} slices ({parts})"
