"""``cellmixer view``: images and results in napari, with the cellmixer widgets docked (extra ``[napari]``)."""

from __future__ import annotations

from pathlib import Path

from .._errors import CellmixerError
from ..io import IMAGE_SUFFIXES

NAPARI_EXTRA = "pip install 'cellmixer[napari]'"
RESULT_SUFFIX = "_labels.tif"
WIDGETS = ("Cell types (CellMixer)", "Nuclei", "Typed cells", "Cells from a nuclear stain")


def add_parsers(sub) -> None:
    p = sub.add_parser("view", help="open images and results in napari with the cellmixer widgets",
                       description="Open images, and results written by the predict commands (<name>_labels.tif "
                                   "with the cell table beside it: cells coloured by type, measurements as layer "
                                   f"features), in napari, with the cellmixer widgets docked. Needs {NAPARI_EXTRA}.")
    p.add_argument("paths", nargs="+", help="images and/or <name>_labels.tif results")
    p.add_argument("--widget", choices=WIDGETS, action="append", default=None,
                   help="the widgets to dock (default: all)")
    p.add_argument("--quiet", "-q", action="store_true", help="no messages")


def _check(paths) -> list[Path]:
    checked = []
    for path in map(Path, paths):
        if not path.is_file():
            raise CellmixerError(f"{path}: no such file; give images or <name>{RESULT_SUFFIX} results.")
        if not (path.name.endswith(RESULT_SUFFIX) or path.suffix.lower() in IMAGE_SUFFIXES):
            raise CellmixerError(f"{path}: neither an image ({', '.join(sorted(IMAGE_SUFFIXES))}) nor a "
                                 f"<name>{RESULT_SUFFIX} result.")
        checked.append(path)
    return checked


def run(args, progress: bool) -> None:
    del progress
    paths = _check(args.paths)
    try:
        import napari
    except ImportError:
        raise CellmixerError(f"napari is not installed: {NAPARI_EXTRA}") from None
    viewer = napari.Viewer(title="cellmixer")
    for path in paths:
        viewer.open(str(path), plugin="cellmixer" if path.name.endswith(RESULT_SUFFIX) else None)
    for widget in args.widget or WIDGETS:
        viewer.window.add_plugin_dock_widget("cellmixer", widget)
    napari.run()
