"""The dataset-kind contract: every question the package asks about a dataset that depends on its kind.

A kind is one object (a subclass of :class:`Kind`, registered in :mod:`seg.kinds`). Callers look it
up by the ``kind`` of a config entry, a ``meta.json`` or a ``package.json`` and ask it; they never
compare its name. The base class implements a *binary class-map* kind: two classes, class
:attr:`Kind.foreground` = 1 is the one whose probability is written and thresholded, the
segmentation is that class map (uint8, 1 = foreground), scored by the pixel measures. ISBI 2012
(:mod:`seg.kinds.isbi2012`) adds the challenge's Rand measures to it; the Cell Tracking Challenge
(:mod:`seg.kinds.ctc`) replaces the class map by instance labels scored by SEG.

The network's maps are decoded by the variant's target (:meth:`seg.targets.base.Target.decode`,
told :attr:`Kind.instances` and :attr:`Kind.foreground`); a kind says where the decoded maps go and
how they are scored. Floors: this package imports the data readers (:mod:`seg.data`) and the
measures (:mod:`seg.metrics`), nothing above them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import tifffile

from seg.errors import SegError
from seg.metrics.measures import ClassMapMeasures

#: Post-processing settings that make instances of a probability map (``postprocess`` section keys).
INSTANCE_POSTPROCESS_KEYS = ("method", "threshold", "h", "min_size")


def write_probability(path: Path, prob, description: str) -> None:
    """float32 probability TIFF (H, W) or (Z, H, W) whose ImageDescription says what it is."""
    import numpy as np
    import tifffile

    tifffile.imwrite(path, np.ascontiguousarray(prob, dtype=np.float32), photometric="minisblack",
                     description=description, metadata=None)


def write_labels(path: Path, labels) -> None:
    """A label / class-map TIFF in the array's own dtype."""
    import numpy as np
    import tifffile

    tifffile.imwrite(path, np.ascontiguousarray(labels), photometric="minisblack")


class Kind(ABC):
    """A dataset kind: how its raw data is ingested and what everything downstream does with it.

    Contract (each kind module sets the attributes and overrides what differs from the binary
    class-map behaviour implemented here):

    Data (``seg ingest``, :mod:`seg.kinds.sources`, :mod:`seg.data.canonical`):
        name: registry key; the ``kind`` of config entries, ``meta.json`` and ``package.json``.
        ingests_as: the kinds its datasets may be ingested as (``folder``: ``folder`` or
            ``folder-semantic`` by its masks); empty = itself.
        classes: class names; index = value in the canonical ``semantic/`` maps and probability channel.
        foreground: index of the class whose probability is written and thresholded (1).
        conventions: ``meta.json`` ``conventions`` (images, instances, semantic) written at ingest.
        expected: the raw files, in words, for the "raw files not found" message.
        reader: module of the raw-data reader the default :meth:`has_local_files`,
            :meth:`default_source` and :meth:`download_name` call.
        :meth:`ingest`, :meth:`has_local_files`, :meth:`default_source`, :meth:`download_name`.

    Outputs (``seg predict``, ``seg segment``, the package's ``outputs``):
        probability_text, segmentation_text: what the probability map and the segmentation mean.
        instances: whether the segmentation is instance labels (post-processed objects, scored
            and calibrated by SEG, and the train-time validation score is their SEG) or the class map.
        segmentation_suffix: ``<name>_<suffix>.tif`` of ``seg segment``'s segmentation of one image.
        :meth:`write_prediction`, :meth:`segment_image`, :meth:`segment_stack`,
        :meth:`segment_sequence`, :meth:`segment_groups`.

    Measures (``seg score``, the leaderboard and the report):
        report_columns: the metric columns of the dataset's leaderboard table (fully annotated).
        summary_measures: the aggregate measures ``seg score`` prints.
        secondary: the measure shown beside IoU (None: none).
        signature_metric: an aggregate only this kind's scoring writes (tells the kind of a
            metrics.json without one), or None.
        error_figure: the report draws Rand and pixel error beside the published values.
        reference_note: the IoU figure's caption when the published results are other measures.
        :meth:`measures`, :meth:`primary`, :meth:`sparse`, :meth:`reference_identity`.

    Package and bioimage.io description:
        citation: the dataset's paper, ending in ``doi:<doi>``.
        modality, target_structure, tag: bioimage.io config fields and tag.
        summary_tail: ends the bioimage.io description's sentence about the outputs.
        output_note: appended to the output tensor's description.
    """

    name: str = ""
    #: Kinds a dataset of this config kind may be recorded as in ``meta.json`` (itself when empty).
    ingests_as: tuple[str, ...] = ()
    classes: tuple[str, ...] = ("background", "foreground")
    foreground: int = 1
    conventions: dict[str, str] = {}
    #: Module of the raw-data reader (``has_local_files``, optional ``default_source`` and
    #: ``download_name``), e.g. ``seg.data.ctc``; imported only when asked.
    reader: str = ""

    probability_text: str = ""
    segmentation_text: str = ""
    instances: bool = False
    segmentation_suffix: str = "seg"

    report_columns: tuple[str, ...] = ("iou_mean", "dice_mean", "pixel_error")
    summary_measures: tuple[str, ...] = ("iou_mean", "pixel_error")
    secondary: str | None = None
    signature_metric: str | None = None
    error_figure: bool = False
    reference_note: str | None = None

    citation: str = ""
    modality: str = ""
    target_structure: tuple[str, ...] = ()
    tag: str = ""
    summary_tail: str = "."
    output_note: str = ""

    @property
    def ingested_as(self) -> tuple[str, ...]:
        """The kinds a dataset configured with this kind is ingested as: itself, or :attr:`ingests_as`."""
        return self.ingests_as or (self.name,)

    def __repr__(self) -> str:
        return f"<dataset kind {self.name!r}>"

    # ------------------------------------------------------------------ data
    @abstractmethod
    def ingest(self, folder: Path, out: Path, *, name: str, entry: dict, source: dict) -> dict:
        """Validate the raw files in ``folder`` and write the canonical dataset ``out`` atomically
        (:func:`seg.data.canonical.canonical_writer` with ``kind=self``); returns its meta.

        ``entry`` is the dataset's config entry, ``source`` the record of where the raw files came
        from (``origin``, ``raw_dir``, ``url``, ``sha256``)."""

    @property
    def expected(self) -> str:
        """The raw files, in words, for the "raw files not found" message (:attr:`reader`'s
        ``EXPECTED``; a kind may set a string instead)."""
        return getattr(self._reader(), "EXPECTED", "")

    def _reader(self):
        """The module of :attr:`reader` (imported on first use), or None."""
        import importlib

        return importlib.import_module(self.reader) if self.reader else None

    def has_local_files(self, folder: Path, entry: dict, *, url: str | None = None) -> bool:
        """Whether ``folder`` holds this kind's raw files (ingest then checks them in full). Here:
        :attr:`reader`'s ``has_local_files``."""
        reader = self._reader()
        if reader is None:
            raise NotImplementedError(f"dataset kind {self.name!r} names no reader module: override has_local_files")
        return reader.has_local_files(folder, entry, url=url)

    def default_source(self, name: str) -> tuple[str | None, str | None]:
        """(url, sha256) downloaded when the config gives no ``url``; (None, None): none known.
        Here: :attr:`reader`'s ``default_source`` where it has one."""
        fn = getattr(self._reader(), "default_source", None)
        return fn(name) if fn else (None, None)

    def download_name(self, name: str, url: str) -> str:
        """File name of the download of ``url`` in the raw folder (:attr:`reader`'s
        ``download_name`` where it has one, else the URL's last part)."""
        fn = getattr(self._reader(), "download_name", None)
        return fn(name, url) if fn else (url.rstrip("/").rsplit("/", 1)[-1] or name)

    # ------------------------------------------------------------------ outputs
    def outputs(self) -> dict:
        """The package's ``outputs`` section: ``classes``, ``probability``, ``segmentation``."""
        return {"classes": list(self.classes), "probability": self.probability_text,
                "segmentation": self.segmentation_text}

    def validation_postprocess(self, postprocess: dict, n_classes: int) -> dict | None:
        """The post-processing whose val SEG picks the best checkpoint (instance kinds with two
        classes), or None: the val mean IoU picks it."""
        return postprocess if self.instances and n_classes == 2 else None

    def validation_postprocess_keys(self) -> tuple[str, ...]:
        """The ``postprocess`` keys training reads (part of a run's config hash)."""
        return INSTANCE_POSTPROCESS_KEYS if self.instances else ()


    def write_prediction(self, folder: Path, entry: dict, probs, prob, seg, *, meta: dict) -> None:
        """``seg predict``'s files of one slice (``entry`` of ``meta``) into ``folder``: ``probs`` the
        network's activated maps float32 (channels, H, W), ``prob`` and ``seg`` their decoding by the
        target (:meth:`seg.targets.base.Target.decode`). Here: ``<id>_prob.tif`` float32 (H, W)
        foreground probability and ``<id>_seg.tif`` uint8 class map."""
        tifffile.imwrite(folder / f"{entry['id']}_prob.tif", prob)
        tifffile.imwrite(folder / f"{entry['id']}_seg.tif", seg)

    def segment_image(self, out: Path, name: str, prob, labels, convention: str) -> list[str]:
        """``seg segment`` of one image: ``<name>_prob.tif`` and ``<name>_<segmentation_suffix>.tif``
        in ``out``; returns the names written."""
        seg_name = f"{name}_{self.segmentation_suffix}.tif"
        write_probability(out / f"{name}_prob.tif", prob, convention)
        write_labels(out / seg_name, labels)
        return [f"{name}_prob.tif", seg_name]

    def segment_stack(self, out: Path, name: str, results: list[tuple[Any, Any]], convention: str,
                      info: dict) -> list[str]:
        """``seg segment`` of a (Z, H, W) stack: ``results`` = (probability, labels) per page.
        Here: ``<name>_prob.tif`` float32 (Z, H, W) and ``<name>_seg.tif`` (Z, H, W). ``info``:
        ``input``, ``model``, ``threshold``, ``class_1``, ``segmentation`` (for sidecar files)."""
        import numpy as np

        write_probability(out / f"{name}_prob.tif", np.stack([r[0] for r in results]), convention)
        write_labels(out / f"{name}_seg.tif", np.stack([r[1] for r in results]))
        return [f"{name}_prob.tif", f"{name}_seg.tif"]

    def segment_sequence(self, out: Path, name: str, frames: list[tuple[int, Path]],
                         run: Callable[[Path], tuple[Any, Any]], convention: str) -> list[str]:
        """``seg segment`` of a sequence folder: ``frames`` = (frame number, image path), ``run``
        predicts one path. Here: ``<name>/<stem>_prob.tif`` and ``<name>/<stem>_seg.tif``."""
        sub = out / name
        sub.mkdir()
        for _, path in frames:
            prob, lab = run(path)
            write_probability(sub / f"{path.stem}_prob.tif", prob, convention)
            write_labels(sub / f"{path.stem}_seg.tif", lab)
        return [f"{name}/"]

    def segment_groups(self, meta: dict, ds_dir: Path) -> list[tuple[str, str, list[dict]]]:
        """What ``seg segment`` runs on in a canonical dataset folder: (``"stack"`` | ``"sequence"``,
        output name, slice entries in order). Here: one sequence per ``sequence`` of the slices."""
        by_seq: dict[str, list[dict]] = {}
        for e in meta["slices"]:
            by_seq.setdefault(str(e.get("sequence") or "01"), []).append(e)
        return [("sequence", seq, sorted(es, key=lambda e: int(e["frame"]))) for seq, es in sorted(by_seq.items())]

    # ------------------------------------------------------------------ measures
    def sparse(self, meta: dict) -> bool:
        """Whether the dataset's measures are restricted to sparse annotations (only instance kinds)."""
        return False

    def primary(self, *, sparse: bool = False) -> str:
        """The aggregate measure that ranks runs (higher is better)."""
        return "iou_mean"

    def measures(self, classes: list[str], *, pred_dir: Path, meta: dict, thresholds: list[float],
                 decision: float, sparse: bool):
        """The per-slice scorer of ``seg score`` (:mod:`seg.metrics.measures`): here the pixel
        measures of the class map ``<id>_seg.tif``."""

        return ClassMapMeasures(classes, seg_path=lambda e: pred_dir / f"{e['id']}_seg.tif")

    def reference_identity(self, name: str, meta: dict) -> str | None:
        """The dataset a published result was measured on, if this is it (:mod:`seg.report.references`)."""
        return None


def frames_by_sequence(meta: dict) -> dict[str, int]:
    """Highest frame number of each sequence of a canonical ``meta`` (``sequence`` None = ``01``)."""
    last: dict[str, int] = {}
    for e in meta.get("slices", []):
        seq = str(e.get("sequence") or "01")
        last[seq] = max(last.get(seq, 0), int(e.get("frame") or 0))
    return last


def check_kind_name(name: str) -> str:
    """``name`` if it can be a kind's registry key (a non-empty identifier-like string)."""
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
        raise SegError(f"dataset kind name {name!r}: must be a non-empty string of letters, digits, '_' or '-'")
    return name

