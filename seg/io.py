"""File I/O shared by all stages: validated TIFF reading, atomic writes, JSON, hashing, torch files.

Every writer here is atomic: it writes to a temporary name in the target folder and renames it into
place, so an interrupted run (SIGKILL included) never leaves a partial file under the final name.
Every reader raises :class:`seg.errors.SegError` naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from seg.errors import SegError

PathLike = str | os.PathLike


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks of ``chunk`` bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_tiff(path: PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Read a TIFF as a numpy array, with errors that name the file.

    Args:
        path: TIFF file.
        ndim: if given, the required number of dimensions (2 for a slice, 3 for a stack ZYX).
            Singleton leading axes are squeezed before the check (a 1xHxW page reads as HxW).

    Returns:
        The array in the file's own dtype.

    Raises:
        SegError: the file is missing, unreadable/corrupt or truncated, or has the wrong ndim.
    """
    import tifffile

    p = Path(path)
    if not p.is_file():
        raise SegError(f"{p}: file not found")
    try:
        arr = tifffile.imread(p)
    except Exception as e:  # tifffile raises many types for corrupt/truncated files
        raise SegError(f"{p}: not a readable TIFF ({type(e).__name__}: {e})") from None
    arr = np.asarray(arr)
    if ndim is not None:
        while arr.ndim > ndim and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != ndim:
            want = {2: "a 2D image (HxW)", 3: "a 3D stack (ZxHxW)"}.get(ndim, f"{ndim}D")
            raise SegError(f"{p}: expected {want}, got shape {tuple(arr.shape)}")
    return arr


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, else delete it.

    Works for files and folders (the caller creates what it wants at the yielded path).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp_path, final)
    finally:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()


def write_tiff(path: PathLike, array: np.ndarray, **kwargs: Any) -> None:
    """Write ``array`` as an uncompressed TIFF atomically (``kwargs`` go to ``tifffile.imwrite``)."""
    import tifffile

    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, np.asarray(array), **kwargs)


def write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: PathLike) -> Any:
    """Read JSON, with errors that name the file."""
    p = Path(path)
    if not p.is_file():
        raise SegError(f"{p}: file not found")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise SegError(f"{p}: not valid JSON ({e})") from None


def load_torch_file(path: PathLike, what: str = "checkpoint") -> Any:
    """``torch.load`` of a local file with ``weights_only=True`` (tensors, plain containers and
    numbers only: no code runs), every tensor on the CPU.

    Args:
        path: a ``.pt``/``.pth`` file written by ``torch.save``.
        what: what the file is, for error messages (``checkpoint``, ``pretrained weights file``).

    Returns:
        The stored object (usually a dict of tensors / state dicts), as saved.

    Raises:
        SegError: the file is missing, or not a loadable weights-only torch file (corrupt,
            truncated, or holding objects other than tensors and plain types); names the file.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise SegError(f"{p}: {what} not found")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # zip/pickle errors of many types, unsafe globals, truncation
        raise SegError(f"{p}: not a loadable {what} ({type(e).__name__}: {e})") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
