"""Downloading with a checksum, probing a URL, and extracting zip archives safely.

One download helper for every dataset (the pattern of torch-em's ``util.download_source``, stricter):
the body is streamed to a temporary name beside the target while it is hashed in chunks, and renamed
to the target only when its SHA-256 matches; otherwise the temporary file is deleted and a
:class:`SegError` shows both checksums. A download without a configured checksum is refused.

:func:`safe_extract` checks every member of a zip before it writes anything: absolute paths, ``..``
parts and anything that would resolve outside the target folder are rejected with the member's name.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable

from seg.errors import SegError
from seg.io import atomic_path
from seg.progress import progress

CHUNK = 1 << 20  # bytes read/hashed per step

# The opener is a module attribute so tests can replace it (no network in tests).
urlopen: Callable = urllib.request.urlopen


def download(url: str, dest: str | os.PathLike, *, sha256: str | None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, keeping it only when its SHA-256 equals ``sha256``.

    Args:
        url: http(s):// or file:// URL.
        dest: final file path; its folder is created. Nothing else is written there.
        sha256: expected hex SHA-256 of the file (64 lowercase hex digits). Required.
        timeout: seconds to wait for the server to answer / for each read.

    Returns:
        ``dest`` as a Path.

    Raises:
        SegError: no checksum given, the download failed, or the checksum does not match (the
            partial or wrong file is deleted and the message shows expected and actual checksums).
    """
    dest = Path(dest)
    if not sha256:
        raise SegError(f"{url}: no sha256 checksum configured for {dest.name}; refusing to download "
                       "a file that cannot be verified (set the dataset's sha256 in the config)")
    created = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
    try:
        _fetch(url, dest, sha256.lower(), timeout)
    except BaseException:
        for d in created:  # leave no empty folders behind (innermost first)
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise
    return dest


def _fetch(url: str, dest: Path, expected: str, timeout: float) -> None:
    """Stream ``url`` to a temporary name beside ``dest``, hashing in chunks; rename if it matches."""

    h = hashlib.sha256()
    with atomic_path(dest) as tmp:
        try:
            with urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as f:
                total = resp.headers.get("Content-Length") if getattr(resp, "headers", None) else None
                bar = progress(total=int(total) if total else None, unit="B", unit_scale=True,
                           desc=f"download {dest.name}")
                with bar:
                    while block := resp.read(CHUNK):
                        f.write(block)
                        h.update(block)
                        bar.update(len(block))
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise SegError(f"{url}: download failed ({reason})") from None
        actual = h.hexdigest()
        if actual != expected:
            raise SegError(f"{url}: checksum mismatch for {dest.name}: expected sha256 {expected}, "
                           f"got {actual}; the download was deleted")


def probe_url(url: str, *, timeout: float = 3.0) -> str | None:
    """Check that ``url`` answers (headers only). Returns None if it does, else the reason."""
    try:
        req = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
        with urlopen(req, timeout=timeout) as resp:
            status = getattr(resp, "status", 200) or 200
            if status >= 400:
                return f"HTTP {status}"
        return None
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return str(getattr(e, "reason", None) or e)


def _member_problem(name: str, root: Path) -> str | None:
    """Why zip member ``name`` may not be extracted into ``root`` (None if it may)."""
    if not name or "\x00" in name:
        return "empty or invalid name"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(norm).parts:
        return "path contains '..'"
    target = (root / norm).resolve()
    if target != root and root not in target.parents:
        return "path resolves outside the target folder"
    return None


def safe_extract(zip_path: str | os.PathLike, target: str | os.PathLike) -> list[str]:
    """Extract a zip archive into ``target`` after checking every member.

    Args:
        zip_path: the archive.
        target: folder to extract into (created). Nothing is written outside it.

    Returns:
        The member names extracted (files and folders), in archive order.

    Raises:
        SegError: the archive is unreadable, or a member has an absolute path, a ``..`` part or
            would land outside ``target`` (the message names the member; nothing is extracted).
    """

    zp, root = Path(zip_path), Path(target)
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    try:
        with zipfile.ZipFile(zp) as zf:
            infos = zf.infolist()
            for info in infos:
                problem = _member_problem(info.filename, root)
                if problem:
                    raise SegError(f"{zp}: unsafe member {info.filename!r} ({problem}); nothing extracted")
            for info in progress(infos, desc=f"extract {zp.name}", unit="file"):
                zf.extract(info, root)
            return [i.filename for i in infos]
    except zipfile.BadZipFile as e:
        raise SegError(f"{zp}: not a readable zip archive ({e})") from None
    except (OSError, EOFError, zipfile.LargeZipFile) as e:
        raise SegError(f"{zp}: extraction failed ({type(e).__name__}: {e})") from None
