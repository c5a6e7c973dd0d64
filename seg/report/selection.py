"""Which row of a dataset is handed on, and how sure its val split is of it.

The workflow packages, per dataset, the run whose val score is best
(:func:`seg.packaging.build.best_run`: the ``best_val_iou`` of its training summary, the val SEG of the
post-processed instances for instance data and the val mean IoU otherwise: the score that chose its
checkpoint), never the test split's winner. The report says which row that is, by how much it leads
the next one on val, and warns when the val split holds too few annotated objects to tell rows
apart (:data:`MIN_VAL_OBJECTS`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seg.data import canonical
from seg.errors import SegError
from seg.kinds import find_kind
from seg.report.leaderboard import Leaderboard, Row

#: Fewer annotated objects than this in the val split: its ranking of rows is a coin toss for
#: differences of a few hundredths (one object more or less moves SEG by 1/N).
MIN_VAL_OBJECTS = 20


@dataclass(frozen=True)
class Choice:
    """The val split's choice on one dataset: ``winner`` (its row), ``runner_up`` (None with one
    row), ``margin`` (winner's val score - runner-up's), ``measure`` (``val SEG`` or ``val mean IoU``),
    ``val_objects`` (annotated objects in the val split; None when the dataset is not here)."""

    dataset: str
    winner: Row
    runner_up: Row | None
    margin: float | None
    measure: str
    val_objects: int | None

    @property
    def too_small(self) -> bool:
        return self.val_objects is not None and self.val_objects < MIN_VAL_OBJECTS

    def text(self) -> str:
        """One or two sentences for the report."""
        w = self.winner
        out = f"Handed on (packaged and exported): {w.label} ({w.target}), {self.measure} {w.mean['best_val_iou']:.3f}"
        if self.runner_up is not None:
            out += (f", ahead of {self.runner_up.label} ({self.runner_up.target}) by {self.margin:+.3f} "
                    f"({self.runner_up.mean['best_val_iou']:.3f})")
        out += "; chosen on the val split, never the test split."
        if self.val_objects is not None:
            out += f" The val split holds {self.val_objects} annotated objects."
        if self.too_small:
            out += (f" WARNING: fewer than {MIN_VAL_OBJECTS} val objects are too few to tell the rows apart: "
                    "a lead of a few hundredths may be chance (annotate more val frames, or compare seeds).")
        return out


def _score(row: Row) -> float:
    v = row.mean.get("best_val_iou")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else -math.inf


def val_objects(data_dir: str | os.PathLike, dataset: str) -> int | None:
    """Annotated objects (instance labels) in the val split of the canonical dataset, or None if absent."""
    ds = Path(data_dir) / dataset
    try:
        meta = canonical.load_meta(ds)
    except SegError:
        return None
    return int(sum(len(np.unique(canonical.load_instances(ds, e))) - 1
                   for e in canonical.slices(meta, "val") if e.get("instances")))


def val_choice(board: Leaderboard, dataset: str, data_dir: str | os.PathLike) -> Choice | None:
    """The val split's :class:`Choice` on ``dataset`` (None: no row has a val score)."""
    rows = sorted(board.datasets.get(dataset, []), key=_score, reverse=True)
    if not rows or _score(rows[0]) == -math.inf:
        return None
    second = rows[1] if len(rows) > 1 and _score(rows[1]) > -math.inf else None
    kind = find_kind(rows[0].kind)
    measure = "val SEG" if kind is not None and kind.instances else "val mean IoU"
    return Choice(dataset, rows[0], second, None if second is None else _score(rows[0]) - _score(second), measure,
                  val_objects(data_dir, dataset))
