"""The one exception type the CLI turns into a one-line error message and a non-zero exit."""

from __future__ import annotations


class SegError(Exception):
    """A user-facing error: bad input, bad config, checksum mismatch, missing file.

    The message must name the file or config key and say what is wrong, in one line, e.g.
    ``"data/raw/isbi2012/train-labels.tif: labels must be binary {0, 255}, found values [0, 3, 255]"``.
    ``seg`` prints it as ``seg <command>: error: <message>`` and exits with status 2.
    """
