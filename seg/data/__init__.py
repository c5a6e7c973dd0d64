"""seg.data: the canonical dataset form and the raw-data readers that fill it.

- :mod:`seg.data.canonical`  the canonical form ``data/<dataset>/`` and its reading API
- :mod:`seg.data.download`   checksum-verified download, safe zip extraction
- :mod:`seg.data.isbi2012`, :mod:`seg.data.ctc`, :mod:`seg.data.folder`  the raw-data readers of the
  dataset kinds (:mod:`seg.kinds`, which ingests a configured dataset with them)
- :mod:`seg.data.fingerprint` the training split's fingerprint (image and object sizes)
- :mod:`seg.data.splits`     split rules; :mod:`seg.data.synth` synthetic test data; :mod:`seg.data.align`

This package knows no dataset kind, target or plan: those sit above it.
"""
