"""seg.data: ingest of ISBI 2012 and Cell Tracking Challenge data into the canonical dataset form.

- :mod:`seg.data.canonical`  the canonical form ``data/<dataset>/`` and its reading API
- :mod:`seg.data.sources`    raw folder resolution, availability, download of missing raw files
- :mod:`seg.data.download`   checksum-verified download, safe zip extraction
- :mod:`seg.data.isbi2012`, :mod:`seg.data.ctc`  the raw-data readers of the dataset kinds (:mod:`seg.kinds`)
- :mod:`seg.data.splits`     split rules; :mod:`seg.data.synth` synthetic test data
- :mod:`seg.data.ingest`     ``seg ingest`` (the dataset kind's :meth:`~seg.kinds.base.Kind.ingest`)

Only the standard library (and :mod:`seg.kinds`, itself stdlib-only at import time) is imported here
(the CLI and the Snakefile import this package).
"""

from __future__ import annotations

from seg.data.sources import availability, raw_dir

__all__ = ["availability", "raw_dir"]
