"""Cells from a nuclear stain for typing: the nuclei of the stain (classical or a nucleus model), grown into cells."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..._errors import CellmixerError
from ..._settings import check_settings, setting, setting_like
from ...engine import SegmentationModel, load_model
from ...methods.centroids import segment_cells
from ...methods.nuclei import segment_nuclei
from ...ops import (
    CELL_METHODS,
    ClassicalSettings,
    cells_from_nuclei,
    median_diameter,
    nuclei_of_stain,
)

NUCLEUS_SOURCES = ("classical",)


@dataclass(frozen=True)
class NuclearRoute:
    """How the cells of an image are found from its nuclear stain (the one home of these defaults)."""

    nuclei: str = setting("classical", "nuclei of the stain: 'classical' (CellProfiler-style, no training) or a "
                                       "nucleus model folder (`cellmixer nuclei train`)", metavar="classical|MODEL")
    cells: str = setting("grow", "cell bodies: 'nuclei' (the nuclei alone), 'grow' (watershed from the nuclei over "
                                 "the phase image, inside the predicted cells), 'graphcut' (one graph cut per "
                                 "nucleus), or a cell-centre detector folder (`cellmixer centroids train`)",
                         metavar="nuclei|grow|graphcut|MODEL")
    diameter_range: tuple = setting_like(ClassicalSettings, "diameter_range", (10, 50))
    method: str = setting_like(ClassicalSettings, "method", "shape/intensity", flag="--nuclear-method")
    cell_reach: float = setting(3.0, "how far a cell may reach from its nucleus, in median nucleus diameters",
                                above=0, at_most=20)
    type_falloff: float = setting(0.5, "each cell is typed from its probabilities weighted by exp(-d / (this x "
                                       "the median nucleus diameter)), d the distance from its nucleus; 0 weighs "
                                       "its whole body alike", at_least=0, at_most=20)

    def __post_init__(self):
        check_settings(self)


def nucleus_source(nuclei, route: NuclearRoute, *, device=None):
    """``nuclei`` (``'classical'``, a nucleus model or its folder, a label image, or a callable
    ``f(stain) -> labels``) as a callable ``f(stain) -> labels``."""
    if callable(nuclei):
        return nuclei
    if isinstance(nuclei, np.ndarray):
        return lambda stain: nuclei
    if isinstance(nuclei, str) and nuclei in NUCLEUS_SOURCES:
        return lambda stain: nuclei_of_stain(stain, diameter_range=route.diameter_range, method=route.method)
    if isinstance(nuclei, SegmentationModel) or (Path(nuclei) / "config.json").is_file():
        model = load_model(nuclei, methods=("nuclei",), device=device, option="--nuclei")
        return lambda stain: segment_nuclei(model, stain)
    raise CellmixerError(f"--nuclei {nuclei}: give 'classical' or a nucleus model folder (`cellmixer nuclei train`).")


def cell_source(cells, route: NuclearRoute, *, device=None):
    """``cells`` (``'nuclei'``, ``'grow'``, ``'graphcut'``, or a cell-centre detector) as a callable
    ``f(nuclei, foreground, image) -> cell labels`` keeping each nucleus's label."""
    if callable(cells):
        return cells
    if isinstance(cells, str) and cells in CELL_METHODS:
        def grow(nuclei, foreground, image):
            reach = route.cell_reach * max(median_diameter(nuclei), 1.0)
            return cells_from_nuclei(nuclei, foreground, method=cells, image=image, max_distance=reach)
        return grow
    if isinstance(cells, SegmentationModel) or (Path(cells) / "config.json").is_file():
        model = load_model(cells, methods=("centroids",), device=device, option="--cells")

        def detector(nuclei, foreground, image):
            return segment_cells(model, image, seeds=nuclei).labels
        return detector
    raise CellmixerError(f"--cells {cells}: choose one of {', '.join(CELL_METHODS)}, or a cell-centre detector folder "
                         "(`cellmixer centroids train`).")
