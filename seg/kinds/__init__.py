"""seg.kinds: the registry of dataset kinds (``isbi2012``, ``ctc``, ``folder`` and its ``folder-semantic`` twin), one module per kind.

A kind answers every question the package asks about a dataset of that kind (the contract is
:class:`seg.kinds.base.Kind`): how its raw files are ingested, what the network's outputs mean,
where predictions go, how they are post-processed and scored, what the report and the model
package say. Callers look a kind up by name and ask it::

    from seg.kinds import get_kind
    kind = get_kind(meta["kind"])
    kind.write_prediction(folder, entry, probs, prob, labels, meta=meta)

A new kind is one module with a :class:`~seg.kinds.base.Kind` subclass and one
:func:`register_kind` call (below for the built-in ones; anywhere before use for others).

Floors: the kinds import the data readers (:mod:`seg.data`), the measures (:mod:`seg.metrics`)
and :mod:`seg.config`, nothing above them; :mod:`seg.kinds.ingest` and :mod:`seg.kinds.sources`
ingest a configured dataset by its kind (``seg ingest``, :mod:`seg.commands.ingest`).
"""

from __future__ import annotations

from seg.errors import SegError
from seg.kinds.base import Kind, check_kind_name
from seg.kinds.ctc import CtcKind
from seg.kinds.folder import FolderKind, FolderSemanticKind
from seg.kinds.isbi2012 import Isbi2012Kind

_KINDS: dict[str, Kind] = {}


def register_kind(kind: Kind, *, replace: bool = False) -> Kind:
    """Add ``kind`` to the registry under ``kind.name``; returns it.

    Raises:
        SegError: the name is malformed, or already registered (unless ``replace``).
    """
    if not isinstance(kind, Kind):
        raise SegError(f"register_kind: {kind!r} is not a seg.kinds.base.Kind")
    name = check_kind_name(kind.name)
    if name in _KINDS and not replace:
        raise SegError(f"dataset kind {name!r} is already registered ({_KINDS[name]!r})")
    _KINDS[name] = kind
    return kind


def unregister_kind(name: str) -> Kind:
    """Remove kind ``name`` from the registry and return it (SegError if unknown)."""
    kind = get_kind(name)
    del _KINDS[name]
    return kind


def get_kind(name: str) -> Kind:
    """The registered kind ``name``.

    Raises:
        SegError: no kind of that name; the message lists the registered ones.
    """
    kind = _KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise SegError(f"unknown dataset kind {name!r} (registered kinds: {', '.join(_KINDS) or 'none'})")
    return kind


def find_kind(name: str | None) -> Kind | None:
    """The registered kind ``name``, or None (empty, None or unregistered: e.g. a leaderboard row
    whose kind cannot be told)."""
    return _KINDS.get(name) if isinstance(name, str) else None


def kind_names() -> list[str]:
    """Names of the registered kinds, in registration order (built-in: isbi2012, ctc, folder, folder-semantic)."""
    return list(_KINDS)


def kinds() -> list[Kind]:
    """The registered kinds, in registration order."""
    return list(_KINDS.values())


register_kind(Isbi2012Kind())
register_kind(CtcKind())
register_kind(FolderKind())
register_kind(FolderSemanticKind())

__all__ = ["Kind", "find_kind", "get_kind", "kind_names", "kinds", "register_kind", "unregister_kind"]
