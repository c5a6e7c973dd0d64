"""Build every report figure for a leaderboard and write them to ``results/figures/``.

Figure files (``<ds>`` = dataset name with characters outside ``[A-Za-z0-9_.-]`` replaced by ``_``):

- ``iou_<ds>.png``      IoU per variant, published U-Net IoU as a reference line where one exists;
- ``errors_<ds>.png``   kinds with ``error_figure`` (ISBI): Rand error and pixel error beside the
  published values;
- ``curves_<ds>.png``   training loss and validation IoU vs iteration (needs train_log.csv);
- ``examples_<ds>.png`` test slices: image, ground truth, prediction, error overlay (needs the
  canonical dataset and the predictions of a run);
- ``weights_<ds>.png``  copy of ``data/<ds>/weights/preview.png`` (border-weight map preview).

A figure whose inputs are missing is left out and a note says why; nothing here raises for a
missing optional input. The folder is replaced as a whole (atomically), so figures of datasets or
variants no longer in the results do not linger.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from seg.errors import SegError
from seg.io import atomic_path, read_json
from seg.kinds import find_kind
from seg.report import figures as F
from seg.report.examples import load_examples, load_target_panels
from seg.report.figures import DPI, read_train_log
from seg.report.leaderboard import SPARSE_NOTE, Leaderboard, Row
from seg.report.references import references_for


@dataclass(frozen=True)
class FigureEntry:
    """One figure: ``name`` is the PNG file name in the figures folder."""

    name: str
    dataset: str
    kind: str  # iou | errors | curves | examples | weights
    title: str
    caption: str


@dataclass
class Figures:
    """The figures written, in report order, and per-dataset notes about figures left out."""

    folder: Path
    entries: list[FigureEntry] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def for_dataset(self, dataset: str) -> list[FigureEntry]:
        return [e for e in self.entries if e.dataset == dataset]


def safe_name(dataset: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", dataset)


def _class_names(data_dir: Path, dataset: str, kind: str) -> tuple[str, str]:
    meta = data_dir / dataset / "meta.json"
    try:
        classes = read_json(meta)["classes"]
        if len(classes) == 2:
            return str(classes[0]), str(classes[1])
    except (SegError, KeyError, TypeError):
        pass
    k = find_kind(kind)
    return (str(k.classes[0]), str(k.classes[1])) if k is not None else ("background", "foreground")


def _curves(rows: list[Row], notes: list[str]):
    curves = []
    for row in rows:
        for run in row.runs:
            path = run.run_dir / "train_log.csv"
            try:
                curves.append((row, f"seed {run.seed}", read_train_log(path)))
            except SegError as e:
                notes.append(f"training curve of {row.label} (seed {run.seed}) left out: {e}")
    return curves


@dataclass
class _FigureWriter:
    """Writes the figures into ``folder`` (the temporary one that replaces the figures folder) and
    lists each in ``out``."""

    folder: Path
    out: Figures

    def add(self, fig_or_src, dataset: str, kind: str, title: str, caption: str) -> None:
        """Save a matplotlib figure (or copy a PNG file) as ``<kind>_<safe dataset name>.png``."""

        name = f"{kind}_{safe_name(dataset)}.png"
        if isinstance(fig_or_src, Path):
            shutil.copyfile(fig_or_src, self.folder / name)
        else:
            fig_or_src.savefig(self.folder / name, format="png", dpi=DPI)
        self.out.entries.append(FigureEntry(name, dataset, kind, title, caption))


def _reference_text(kind: str, refs: list) -> str:
    """What the IoU figure's caption says about the published U-Net result of the dataset (the kind's
    :attr:`~seg.kinds.base.Kind.reference_note` when its published results are other measures)."""
    if any(r.metric == "iou_mean" for r in refs):
        return ("The dashed line is the published U-Net result, measured on the "
                "challenge's own test set, not on our split.")
    k = find_kind(kind)
    if k is not None and k.reference_note:
        return k.reference_note
    if any(r.metric == "seg" for r in refs):
        return ("The published U-Net result on this dataset is the challenge's SEG "
                "measure (an object IoU): it is compared with our SEG in the reference "
                "table, not with this pixel IoU.")
    return "No published U-Net result exists for this dataset."


def _score_figures(writer: _FigureWriter, board: Leaderboard, ds: str, colors: dict, notes: list[str]) -> None:
    """The dataset's score figures: IoU per variant (SEG for sparse annotations) and, for kinds with
    an error figure (ISBI 2012), the errors beside the published ones."""

    rows, kind = board.datasets[ds], board.kinds.get(ds, "")
    refs = references_for(board.identities.get(ds))
    ref_text = _reference_text(kind, refs)
    if board.sparse(ds):  # sparse annotations: SEG, and the note beside the dataset's table
        notes.append(SPARSE_NOTE.format(dataset=ds))
        seg_ref = any(r.metric == "seg" for r in refs)
        writer.add(F.iou_chart(ds, rows, refs, colors, key="seg"), ds, "iou", "SEG per variant",
                   "SEG (the Cell Tracking Challenge's measure: mean IoU of each annotated cell with "
                   "the predicted object covering more than half of it) on our held-out test frames; "
                   "error bars and ± give the std over runs with different seeds. Sparse "
                   "annotations, so no pixel IoU over the whole frame. "
                   + ("The dashed line is the published U-Net result on the challenge's own test "
                      "sequences, not on our split." if seg_ref else ref_text))
    else:
        writer.add(F.iou_chart(ds, rows, refs, colors), ds, "iou", "IoU per variant",
                   "Mean IoU over classes on our held-out test split; error bars and ± give the std "
                   f"over runs with different seeds. {ref_text}")
    k = find_kind(kind)
    if k is not None and k.error_figure:
        writer.add(F.isbi_error_chart(ds, rows, refs, colors), ds, "errors",
                   "Errors vs the published U-Net",
                   "Rand error and pixel error on our test split (slices of the public training "
                   "stack) beside the published U-Net values on the ISBI 2012 challenge test set.")


def _curves_figure(writer: _FigureWriter, ds: str, rows: list[Row], colors: dict, notes: list[str]) -> None:
    """Training loss and validation IoU of every run of the dataset (a note where logs are missing)."""

    curves = _curves(rows, notes)
    if curves:
        writer.add(F.training_curves(ds, curves, colors), ds, "curves", "Training curves",
                   "Training loss (smoothed; raw values faint) and validation IoU against the "
                   "optimiser step, one colour per variant, one line per run.")
    else:
        notes.append("no training logs found, so no training curves")


def _example_figure(writer: _FigureWriter, ds: str, kind: str, rows: list[Row], data_dir: Path, n_examples: int,
                    threshold: float, notes: list[str]) -> None:
    """``n_examples`` test slices with the prediction of the best variant that has predictions (its
    newest run that has them); notes say why where none could be shown."""

    ds_dir = data_dir / ds
    examples, ex_notes, shown = [], [], None
    for row, run in ((row, run) for row in rows for run in row.runs):
        examples, ex_notes = load_examples(ds_dir, run.run_dir, n_examples, threshold=threshold)
        if examples:
            shown = row
            break
        if not (ds_dir / "meta.json").is_file():
            break
    notes.extend(ex_notes)
    if shown is not None:
        writer.add(F.examples_figure(ds, examples, shown.label, _class_names(data_dir, ds, kind)),
                   ds, "examples", "Example test slices",
                   f"Test slices with the prediction of {shown.label} (the best variant with "
                   "predictions). Error overlay: false positives and false negatives of the "
                   "foreground class in two colours (legend below the figure).")


def _targets_figure(writer: _FigureWriter, ds: str, kind: str, rows: list[Row], data_dir: Path,
                    notes: list[str]) -> None:
    """Instance datasets whose leaderboard holds rows of more than one target: one test slice with
    the instances of the best row of each target beside the ground truth."""

    k = find_kind(kind)
    if k is None or not k.instances or len({r.target for r in rows}) < 2:
        return
    best: dict[str, Row] = {}
    for row in rows:  # best first
        best.setdefault(row.target, row)
    runs = [(f"{row.label} ({target})", row.runs[0].run_dir) for target, row in best.items()]
    sl, panels, more = load_target_panels(data_dir / ds, runs)
    notes.extend(more)
    if sl is None or not panels:
        return
    writer.add(F.targets_figure(ds, sl["image"], sl["truth"], sl["id"], panels), ds, "targets",
               "Targets side by side",
               "One test slice: the ground-truth instances and the instances of the best row of each "
               "target (what the network predicts: fg_border = the paper's two classes and the "
               "distance watershed, three_class = background / interior / boundary), with the SEG "
               "of that slice. Colours are arbitrary per object.")


def _weights_figure(writer: _FigureWriter, ds: str, data_dir: Path, notes: list[str]) -> None:
    """A copy of the dataset's border-weight map preview (a note if ``seg weights`` has not run)."""
    preview = data_dir / ds / "weights" / "preview.png"
    if preview.is_file():
        writer.add(preview, ds, "weights", "Border-weight map",
                   "Image, label and the border-weight map w(x) = w_c(x) + w0 exp(-(d1+d2)^2 / "
                   "(2 sigma^2)) used by the weighted loss (U-Net paper, eq. 2).")
    else:
        notes.append(f"{preview}: not found (run `seg weights`), so no weight-map preview")


def build_figures(board: Leaderboard, cfg: dict, data_dir: Path, folder: Path) -> Figures:
    """Write all figures for ``board`` into ``folder`` (replaced atomically) and list them. The
    notes print paths inside the result folder relative to it (:meth:`Leaderboard.relative`)."""

    variants = list((cfg.get("variants") or {}))
    variants += sorted({r.variant for r in board.rows} - set(variants))
    colors = F.variant_colors(variants)
    n_examples = int((cfg.get("report") or {}).get("examples", 3))
    threshold = float((cfg.get("postprocess") or {}).get("threshold", 0.5))
    out = Figures(folder=folder)
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        writer = _FigureWriter(tmp, out)
        for ds, rows in board.datasets.items():
            kind = board.kinds.get(ds, "")
            notes = out.notes.setdefault(ds, [])
            _score_figures(writer, board, ds, colors, notes)
            _curves_figure(writer, ds, rows, colors, notes)
            if n_examples > 0:
                _example_figure(writer, ds, kind, rows, data_dir, n_examples, threshold, notes)
                _targets_figure(writer, ds, kind, rows, data_dir, notes)
            _weights_figure(writer, ds, data_dir, notes)
            notes[:] = [board.relative(n) for n in notes]  # result paths relative, as in the tables
    return out
