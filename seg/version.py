"""The version of seg, in a module of its own so that any module can import it without importing
the ``seg`` package's top-level API (which reaches into :mod:`seg.export`)."""

__version__ = "0.1.0"
