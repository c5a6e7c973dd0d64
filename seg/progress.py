"""Progress bars for long work (tqdm), readable both in a terminal and in a workflow log file.

In a terminal the bar refreshes as usual; when stderr is a file (a Snakemake or SLURM job log) the
bar still writes, but at most every 30 s, so ``tail`` of a running job's log shows how far it got
without filling the log.
"""

from __future__ import annotations

import sys


def progress(iterable=None, *, disable: bool = False, **kwargs):
    """``tqdm(iterable, **kwargs)`` with the refresh interval chosen for a terminal or a log file."""
    from tqdm import tqdm

    tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.1 if tty else 30.0)
    kwargs.setdefault("dynamic_ncols", tty)
    return tqdm(iterable, disable=disable, **kwargs)
