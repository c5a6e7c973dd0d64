"""Where a dataset's raw files come from: the raw folder, availability, download.

Raw folder of dataset ``name``: ``datasets.<name>.raw_dir`` (or ``path``, the folder kind's name
for it; relative paths are relative to the working directory) if set, else ``<raw_root>/<name>`` where
``raw_root`` is the environment variable ``SEG_RAW_ROOT`` if set, else the config's ``raw_root``
(default ``data/raw``). Local files are always used first. When they are absent, the configured
``url`` (or the dataset kind's default source, :meth:`seg.kinds.base.Kind.default_source`) is downloaded into the raw folder, or into
``<data_dir>/raw/<name>`` when the raw folder cannot be written (e.g. a read-only shared copy).

Imports only the standard library and :mod:`seg.kinds` (itself stdlib-only at import time) at module
level (the CLI and the Snakefile import it).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from seg.data.download import download, probe_url
from seg.errors import SegError
from seg.kinds import get_kind

PROBE_TIMEOUT = 3.0  # seconds for the availability check of a download URL


def dataset_entry(cfg: dict, name: str) -> dict:
    """The config entry of dataset ``name`` (SegError listing the configured ones if unknown)."""
    datasets = cfg.get("datasets") or {}
    if name not in datasets:
        raise SegError(f"config: datasets: unknown dataset {name!r} (configured: {', '.join(datasets) or 'none'})")
    return datasets[name]


def raw_dir(cfg: dict, name: str, *, env: dict | None = None) -> Path:
    """The raw folder of dataset ``name`` (see module docstring for the precedence)."""
    env = os.environ if env is None else env
    entry = dataset_entry(cfg, name)
    if entry.get("raw_dir") or entry.get("path"):
        return Path(entry.get("raw_dir") or entry["path"])
    root = env.get("SEG_RAW_ROOT") or cfg.get("raw_root") or "data/raw"
    return Path(root) / name


def _writable(folder: Path) -> bool:
    """Whether ``folder`` (or its nearest existing ancestor) may be written: it needs write access
    AND an owner write bit, so a tree marked read-only (e.g. ``dr-xr-xr-x`` shared data) counts as
    read-only even for root, whom ``os.access`` always allows."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return os.access(probe, os.W_OK) and bool(probe.stat().st_mode & stat.S_IWUSR)


def download_dir(cfg: dict, name: str) -> Path:
    """Where a download of ``name`` is stored: the raw folder if writable, else ``<data_dir>/raw/<name>``."""
    raw = raw_dir(cfg, name)
    if _writable(raw):
        return raw
    return Path(cfg.get("data_dir") or "data") / "raw" / name


def source_of(cfg: dict, name: str) -> tuple[str | None, str | None]:
    """(url, sha256) of the dataset's download: the config's, else its kind's known default."""
    entry = dataset_entry(cfg, name)
    default_url, default_sha = get_kind(entry["kind"]).default_source(name)
    url = entry.get("url") or default_url
    sha = entry.get("sha256") or (default_sha if url == default_url else None)
    return url, sha


def find_local(cfg: dict, name: str) -> Path | None:
    """The folder holding usable local raw files of ``name`` (raw folder first), or None."""
    entry = dataset_entry(cfg, name)
    kind = get_kind(entry["kind"])
    for folder in dict.fromkeys((raw_dir(cfg, name), download_dir(cfg, name))):
        if kind.has_local_files(folder, entry, url=source_of(cfg, name)[0]):
            return folder
    return None


def missing_message(cfg: dict, name: str, reason: str | None = None) -> str:
    """One line: what is missing, where to put it, where it would be downloaded from."""
    entry = dataset_entry(cfg, name)
    kind = get_kind(entry["kind"])
    raw = raw_dir(cfg, name)
    url, _ = source_of(cfg, name)
    where = f"would be downloaded from {url}" if url else "no download URL is configured"
    why = f" ({reason})" if reason else ""
    return (f"{name}: raw files not found in {raw}/ (expected {kind.expected}); put them there "
            f"(or set datasets.{name}.raw_dir or SEG_RAW_ROOT); they {where}{why}")


def availability(cfg: dict, name: str) -> tuple[str, str]:
    """Can ``seg ingest`` get dataset ``name``?

    Returns:
        ``("local", msg)`` when the raw files are in the raw folder; ``("downloadable", msg)`` when
        not, but the URL answers within 3 s and a checksum is configured; else ``("missing", msg)``
        with one line saying what is missing, where to put it and where it would come from.
    """

    folder = find_local(cfg, name)
    if folder is not None:
        return "local", f"{name}: raw files found in {folder}/"
    url, sha = source_of(cfg, name)
    if not url:
        return "missing", missing_message(cfg, name)
    if not sha:
        return "missing", missing_message(cfg, name, f"no sha256 configured for {url}, so it cannot be verified")
    problem = probe_url(url, timeout=PROBE_TIMEOUT)
    if problem:
        return "missing", missing_message(cfg, name, f"not reachable: {problem}")
    return "downloadable", f"{name}: not in {raw_dir(cfg, name)}/, will be downloaded from {url}"


def obtain(cfg: dict, name: str) -> tuple[Path, dict]:
    """Make sure the raw files of ``name`` are local, downloading them if needed.

    Returns:
        (folder with the raw files, source record for meta.json).

    Raises:
        SegError: the files are absent and cannot be downloaded (the missing message), or the
            download failed / did not match its checksum.
    """

    url, sha = source_of(cfg, name)
    folder = find_local(cfg, name)
    if folder is not None:
        return folder, {"origin": "local", "raw_dir": str(folder), "url": url, "sha256": sha}
    if not url:
        raise SegError(missing_message(cfg, name))
    entry = dataset_entry(cfg, name)
    dest = download_dir(cfg, name) / get_kind(entry["kind"]).download_name(name, url)
    try:
        download(url, dest, sha256=sha)
    except SegError as e:
        if "download failed" in str(e):
            raise SegError(missing_message(cfg, name, str(e).removeprefix(f"{url}: "))) from None
        raise
    return dest.parent, {"origin": "download", "raw_dir": str(dest.parent), "url": url, "sha256": sha}
