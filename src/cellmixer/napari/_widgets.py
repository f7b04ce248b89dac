"""Dock widgets that run a trained model on the open image layer, off the GUI thread.

One widget per kind of model: cell types (a CellMixer model: class map), nuclei, typed cells (each cell
its mask and type), and cells from a nuclear stain (a cell-centre detector: cells and their centres).
Each takes the model folder and the image layer, shows progress while it runs in a napari thread
worker, adds labels and points layers, and reports an error as a one-line notification.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info

from .._errors import CellmixerError
from ..engine import load_model
from ..methods.centroids import segment_cells
from ..methods.nuclei import segment_nuclei
from ..methods.typed import cell_table, segment_typed
from ..ops import cell_measurements
from ._layers import class_layer, instance_layer, points_layer, table_columns


def _plane(layer, viewer) -> np.ndarray:
    """The 2-D plane of an image layer that the viewer shows (colour images: the mean of the channels)."""
    data = np.asarray(layer.data)
    if layer.rgb:
        data = data[..., :3].mean(axis=-1)
    if data.ndim > 2:
        step = viewer.dims.current_step[-data.ndim:-2] if viewer is not None else (0,) * (data.ndim - 2)
        data = data[tuple(step)]
    return np.asarray(data, dtype=np.float32)


class ModelWidget(Container):
    """A model folder, an image layer, the method's options, a Run button and a progress bar."""

    methods: tuple = ()
    title = ""

    def __init__(self, viewer: napari.viewer.Viewer | None = None):
        super().__init__(labels=True)
        self.viewer = viewer
        self.model_folder = FileEdit(mode="d", label="model folder")
        self.image_layer = create_widget(annotation=napari.layers.Image, label="image")
        self.method_options = self.option_widgets()
        self.run_button = PushButton(text=f"Run: {self.title}")
        self.progress_bar = ProgressBar(min=0, max=1, value=0, visible=False, label="")
        self.status_label = Label(value="")
        self.extend([self.model_folder, self.image_layer, *self.method_options, self.run_button, self.progress_bar,
                     self.status_label])
        self.run_button.changed.connect(self.run)
        self.worker = None

    def option_widgets(self) -> list:
        return []

    def settings(self) -> dict:
        return {widget.name: widget.value for widget in self.method_options}

    @property
    def running(self) -> bool:
        return self.worker is not None

    def run(self):
        """Start the model on the chosen image in a thread worker; returns the worker (None if nothing to do)."""
        layer = self.image_layer.value
        folder = str(self.model_folder.value)
        if layer is None:
            show_error("cellmixer: open an image first, then choose it in the widget.")
            return None
        if not folder or folder == "." or not (Path(folder) / "config.json").is_file():
            show_error(f"cellmixer: {folder}: not a model folder; choose the folder a `train` command wrote.")
            return None
        image = _plane(layer, self.viewer)
        settings = {key: _plane(value, self.viewer) if isinstance(value, napari.layers.Image) else value
                    for key, value in self.settings().items()}  # layers read here, in the GUI thread
        worker = create_worker(self.compute, folder, image, layer.name, _start_thread=False, _ignore_errors=True,
                               **settings)
        worker.returned.connect(self._add_layers)
        worker.errored.connect(self._report)
        worker.finished.connect(self._done)
        self.worker = worker
        self.run_button.enabled = False
        self.progress_bar.visible = True
        self.progress_bar.max = 0  # busy: the model reports no steps
        self.status_label.value = f"running on {layer.name}..."
        worker.start()
        return worker

    def compute(self, folder: str, image: np.ndarray, name: str, **settings) -> list[tuple]:
        raise NotImplementedError

    def load(self, folder: str):
        return load_model(folder, methods=self.methods)

    def _add_layers(self, layers: list[tuple]):
        for data, meta, kind in layers:
            self.viewer.add_layer(napari.layers.Layer.create(data, meta, kind))
        self.status_label.value = f"added {', '.join(meta['name'] for _, meta, _ in layers)}"
        show_info(f"cellmixer: {self.status_label.value}")

    def _report(self, error: Exception):
        message = str(error) if isinstance(error, CellmixerError) else f"{type(error).__name__}: {error}"
        self.status_label.value = "failed"
        show_error(f"cellmixer: {message.splitlines()[0] if message else type(error).__name__}")

    def _done(self):
        self.worker = None
        self.run_button.enabled = True
        self.progress_bar.visible = False
        self.progress_bar.max = 1


def _nuclear_layer():
    """A choice of the image layer that holds the nuclear stain of the image, or none."""
    return create_widget(value=None, annotation=Optional[napari.layers.Image], name="nuclear",
                         label="nuclear stain", options={"nullable": True})


class CellTypesWidget(ModelWidget):
    """CellMixer semantic prediction: every pixel its cell type (models trained with a stain read it too)."""

    methods = ("cellmixer",)
    title = "cell types"

    def option_widgets(self):
        return [_nuclear_layer()]

    def compute(self, folder, image, name, *, nuclear=None):
        model = self.load(folder)
        labels = model.predict(image, nuclear=nuclear)
        return [class_layer(labels, model.classes, f"{name} cell types", metadata={"model": folder})]


class NucleiWidget(ModelWidget):
    """Nucleus instances from a nucleus model, with their measurements."""

    methods = ("nuclei",)
    title = "nuclei"

    def option_widgets(self):
        return [SpinBox(name="min_area", value=0, min=0, max=100_000, label="min area (pixels)"),
                CheckBox(name="remove_border", value=False, label="drop nuclei cut by the edge")]

    def compute(self, folder, image, name, *, min_area=0, remove_border=False):
        labels = segment_nuclei(self.load(folder), image, min_area=min_area, remove_border=remove_border)
        rows = cell_measurements(labels, image)
        return [instance_layer(labels, f"{name} nuclei", rows, metadata={"model": folder})]


class TypedCellsWidget(ModelWidget):
    """Every cell its mask and its type: with a nuclear stain, one cell per nucleus of the stain; without, a
    CellMixer model over its own watershed cells, or a typed model."""

    methods = ("cellmixer", "typed")
    title = "typed cells"

    def option_widgets(self):
        return [_nuclear_layer(), SpinBox(name="min_area", value=10, min=0, max=100_000, label="min area (pixels)")]

    def compute(self, folder, image, name, *, nuclear=None, min_area=10):
        cells = segment_typed(self.load(folder), image, nuclear=nuclear, min_area=min_area)
        rows = cell_table(cells, image)
        columns = table_columns(rows)
        centres = np.stack([columns["centroid_y"], columns["centroid_x"]], axis=1) if rows else np.zeros((0, 2))
        return [instance_layer(cells.labels, f"{name} typed cells", rows, type_names=cells.type_names,
                               metadata={"model": folder, "counts": cells.counts()}),
                points_layer(centres, f"{name} cell centres", features=columns if rows else None,
                             type_names=cells.type_names)]


class CellsFromNucleiWidget(ModelWidget):
    """Cells from a cell-centre detector (trained on points or on a nuclear stain): cells and their centres."""

    methods = ("centroids",)
    title = "cells from centres"

    def option_widgets(self):
        return [FloatSpinBox(name="rescale", value=1.0, min=0.1, max=10.0, step=0.1,
                             label="rescale (cell size factor)")]

    def compute(self, folder, image, name, *, rescale=1.0):
        result = segment_cells(self.load(folder), image, rescale=rescale)
        return [instance_layer(result.labels, f"{name} cells", cell_measurements(result.labels, image),
                               metadata={"model": folder}),
                points_layer(result.detections, f"{name} detections")]
