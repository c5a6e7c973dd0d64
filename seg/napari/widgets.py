"""The dock widgets: Segment, Teach, Fine-tune. Thin: Qt / magicgui wiring over plain functions.

- :class:`SegmentWidget` runs :func:`seg.napari.run.segment_job` on the chosen Image layer and adds
  (or updates) ``<image> labels`` (Labels) and ``<image> probability`` (Image). The Labels layer's
  ``metadata["seg"]`` keeps the segmentation as produced (``produced``), the package and the label
  kind: what Teach compares the user's corrections with.
- :class:`TeachWidget` saves the current frame of an Image layer and of the Labels layer the user
  corrected as one pair (:func:`seg.napari.pairs.save_pair`): sparse (only the cells touched) or dense.
- :class:`FinetuneWidget` runs :func:`seg.napari.run.finetune_job` (from the BASE package, on every
  pair), then shows the new segmentation and the before/after scores.

Long jobs run in napari thread workers (``napari.qt.threading.create_worker``, a generator: progress
per yield, Cancel stops at the next one) so the viewer stays responsive. :data:`SYNC` (True, or the
environment variable ``SEG_NAPARI_SYNC=1``) runs them in the calling thread instead, for tests.
"""

from __future__ import annotations

import os
from typing import Callable

import napari
import numpy as np
from magicgui.widgets import (CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, LineEdit,
                              ProgressBar, PushButton, RadioButtons, SpinBox, create_widget)
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info

from seg.device import DEVICES
from seg.errors import SegError
from seg.napari.pairs import frame_of, list_pairs, save_pair
from seg.napari.run import Segmentation, finetune_job, parse_diameter, scores_text, segment_job

#: Run the jobs synchronously in the calling thread (tests), not in a napari thread worker.
SYNC = os.environ.get("SEG_NAPARI_SYNC", "") not in ("", "0")
#: Where a Labels layer keeps what the plugin produced (``layer.metadata[META]``).
META = "seg"


def start_job(job: Callable, *args, on_yield: Callable, on_return: Callable, on_error: Callable,
              on_finish: Callable, **kwargs):
    """Run generator function ``job(*args, **kwargs)``: in a napari thread worker (returned, so it
    can be cancelled with ``quit()``), or with :data:`SYNC` right here (returns None). ``on_yield``
    gets every yielded value, ``on_return`` the return value, ``on_error`` an exception;
    ``on_finish`` is called last either way."""
    if SYNC:
        gen = job(*args, **kwargs)
        try:
            while True:
                on_yield(next(gen))
        except StopIteration as stop:
            on_return(stop.value)
        except Exception as e:  # noqa: BLE001 - every error of a job is shown, as the worker does
            on_error(e)
        finally:
            on_finish()
        return None
    worker = create_worker(job, *args, _start_thread=False, **kwargs)
    worker.yielded.connect(on_yield)
    worker.returned.connect(on_return)
    worker.errored.connect(on_error)
    worker.finished.connect(on_finish)
    worker.start()
    return worker


def frame_index(viewer, layer) -> int | None:
    """The plane of a 3D layer the viewer shows (None for a 2D layer)."""
    if layer.ndim == 2:
        return None
    return int(np.clip(round(float(layer.world_to_data(viewer.dims.point)[0])), 0, layer.data.shape[0] - 1))


def show_segmentation(viewer, image: Image, result: Segmentation) -> tuple[Labels, Image]:
    """Add, or update in place, ``<image> labels`` and ``<image> probability`` on ``image``'s grid."""
    grid = {"scale": image.scale, "translate": image.translate}
    meta = {"produced": result.labels, "package": result.package_path, "image": image.name,
            "labels": result.labels_kind}
    names = f"{image.name} labels", f"{image.name} probability"
    lab = viewer.layers[names[0]] if names[0] in viewer.layers else None
    if isinstance(lab, Labels):
        lab.data = result.labels.copy()
        lab.metadata[META] = meta
    else:
        lab = viewer.add_labels(result.labels.copy(), name=names[0], metadata={META: meta}, **grid)
    prob = viewer.layers[names[1]] if names[1] in viewer.layers else None
    if isinstance(prob, Image):
        prob.data = result.probability
    else:
        prob = viewer.add_image(result.probability, name=names[1], colormap="magma", contrast_limits=(0.0, 1.0),
                                blending="additive", opacity=0.5, visible=False, **grid)
    viewer.layers.selection.active = lab
    return lab, prob


class _JobWidget(Container):
    """A widget with one long job: Run / Cancel buttons, a progress bar and a status line."""

    run_text = "Run"

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = viewer
        self._worker = None
        self._run = PushButton(text=self.run_text)
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self._status = Label(value="")
        self._run.changed.connect(self._start)
        self._cancel.changed.connect(self.cancel)

    def _tail(self) -> list:
        return [self._run, self._cancel, self._progress, self._status]

    @property
    def status(self) -> str:
        return self._status.value

    def _say(self, text: str) -> None:
        self._status.value = text

    def _on_yield(self, step) -> None:
        done, total, message = step
        self._progress.max = max(int(total), 1)
        self._progress.value = int(done)
        self._say(message)

    def _on_error(self, e: Exception) -> None:
        text = str(e) if isinstance(e, SegError) else f"{type(e).__name__}: {e}"
        self._say(f"error: {text}")
        show_error(text)

    def _on_finish(self) -> None:
        self._worker = None
        self._run.enabled, self._cancel.enabled = True, False

    def _launch(self, job, *args, on_return, **kwargs) -> None:
        self._run.enabled, self._cancel.enabled = False, True
        self._progress.value = 0
        self._worker = start_job(job, *args, on_yield=self._on_yield, on_return=on_return,
                                 on_error=self._on_error, on_finish=self._on_finish, **kwargs)
        if self._worker is not None:
            self._worker.aborted.connect(lambda: self._say("cancelled"))

    def cancel(self) -> None:
        """Stop the running job at its next step (nothing is added to the viewer)."""
        if self._worker is not None:
            self._say("cancelling ...")
            self._worker.quit()

    def _start(self) -> None:
        try:
            self.start()
        except SegError as e:
            self._on_error(e)

    def start(self) -> None:  # pragma: no cover - each widget's own
        raise NotImplementedError


class SegmentWidget(_JobWidget):
    """Segment the chosen Image layer with a model package (folder or zip from ``seg package``)."""

    run_text = "Segment"

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(viewer)
        self.image = create_widget(annotation=Image, label="image")
        self.package = FileEdit(label="package", mode="r", filter="*.zip package.json",
                                tooltip="a package folder (pick its package.json) or a package .zip")
        self.diameter = LineEdit(label="diameter (px)", value="",
                                 tooltip="empty: the package's own scale; 'auto': estimated from the image; "
                                         "or the cells' diameter in pixels")
        self.device = ComboBox(label="device", choices=list(DEVICES), value="cpu")
        self.extend([self.image, self.package, self.diameter, self.device, *self._tail()])
        self._target: Image | None = None

    def start(self) -> None:
        layer = self.image.value
        if layer is None:
            raise SegError("choose an Image layer to segment")
        if layer.rgb or layer.multiscale:
            raise SegError(f"{layer.name}: colour and multiscale images are not supported (one grey channel)")
        diameter = parse_diameter(self.diameter.value)
        self._target = layer
        self._launch(segment_job, np.asarray(layer.data), str(self.package.value), device=self.device.value,
                     diameter=diameter, on_return=self._done)

    def _done(self, result: Segmentation) -> None:
        show_segmentation(self._viewer, self._target, result)
        n = len(np.unique(result.labels)) - 1 if result.labels_kind == "instance" else None
        self._say(f"done: {result.package.name}" + (f", {n} cells" if n is not None else ""))


class TeachWidget(Container):
    """Save the current frame of an Image layer and its corrected Labels as a training pair."""

    MODES = [("only the cells I changed (sparse)", "sparse"), ("the whole frame is corrected (dense)", "dense")]

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = viewer
        self.image = create_widget(annotation=Image, label="image")
        self.labels = create_widget(annotation=Labels, label="labels")
        self.folder = FileEdit(label="training folder", mode="d",
                               tooltip="pairs go here as <name>.tif + <name>_masks.tif (cellpose layout)")
        self.mode = RadioButtons(label="save", choices=self.MODES, value="sparse")
        self._save = PushButton(text="Save pair")
        self._status = Label(value="")
        self._save.changed.connect(self._clicked)
        self.extend([self.image, self.labels, self.folder, self.mode, self._save, self._status])

    @property
    def status(self) -> str:
        return self._status.value

    def _clicked(self) -> None:
        try:
            self.save()
        except SegError as e:
            self._status.value = f"error: {e}"
            show_error(str(e))

    def save(self) -> dict:
        """Save one pair (the shown frame of a stack); returns :func:`~seg.napari.pairs.save_pair`'s record."""
        image, labels = self.image.value, self.labels.value
        if image is None or labels is None:
            raise SegError("choose the Image layer and the Labels layer you corrected")
        folder = str(self.folder.value)
        if not folder.strip() or folder.strip() == ".":
            raise SegError("choose a training folder")
        if np.shape(image.data) != np.shape(labels.data):
            raise SegError(f"{image.name} {np.shape(image.data)} and {labels.name} {np.shape(labels.data)} "
                           "differ in shape")
        meta = labels.metadata.get(META, {})
        index = frame_index(self._viewer, image)
        produced = meta.get("produced")
        record = save_pair(folder, frame_of(image.data, index), frame_of(labels.data, index), mode=self.mode.value,
                           produced=None if produced is None else frame_of(produced, index),
                           labels=meta.get("labels", "instance"), prefix=image.name,
                           source={"image_layer": image.name, "labels_layer": labels.name, "frame": index,
                                   "package": meta.get("package")})
        what = (f"{len(record['touched'])} cells" if record["annotations"] == "sparse"
                else f"{record['objects']} cells" if record["objects"] is not None else "class map")
        self._status.value = (f"saved {record['name']} ({'sparse' if record['annotations'] == 'sparse' else 'dense'}: "
                              f"{what}); {len(list_pairs(folder))} pairs in {folder}")
        show_info(self._status.value)
        return record


class FinetuneWidget(_JobWidget):
    """Fine-tune the BASE package on every saved pair, load the new package and segment again."""

    run_text = "Fine-tune"

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(viewer)
        self.base = FileEdit(label="base package", mode="r", filter="*.zip package.json",
                             tooltip="always fine-tuned from this package (its package.json, or a .zip)")
        self.folder = FileEdit(label="training folder", mode="d")
        self.steps = SpinBox(label="steps (0: default)", value=0, min=0, max=100000)
        self.minutes = FloatSpinBox(label="minutes (0: no limit)", value=0.0, min=0.0, max=10000.0, step=0.5)
        self.device = ComboBox(label="device", choices=list(DEVICES), value="auto")
        self.image = create_widget(annotation=Image, label="segment again", options={"nullable": True})
        self.resegment = CheckBox(label="segment the image again", value=True)
        self._scores = Label(value="")
        self.extend([self.base, self.folder, self.steps, self.minutes, self.device, self.image, self.resegment,
                     *self._tail(), self._scores])
        self._target: Image | None = None

    @property
    def scores(self) -> str:
        return self._scores.value

    def start(self) -> None:
        if str(self.folder.value).strip() in ("", "."):
            raise SegError("choose the training folder (where Teach saved the pairs)")
        self._target = self.image.value if self.resegment.value else None
        image = None if self._target is None else np.asarray(self._target.data)
        self._launch(finetune_job, str(self.base.value), str(self.folder.value), steps=self.steps.value or None,
                     minutes=self.minutes.value or None, device=self.device.value, image=image, on_return=self._done)

    def _done(self, out) -> None:
        summary, result = out
        if result is not None:
            show_segmentation(self._viewer, self._target, result)
        self._scores.value = scores_text(summary)
        self._say(f"new package: {summary['package']}")
