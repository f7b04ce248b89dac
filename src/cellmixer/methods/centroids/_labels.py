"""The weak label of every image, whatever its source, and the ``centroids label`` command."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..._errors import CellmixerError
from ..._progress import progress_bar
from ..._version import __version__
from ...io import (
    InputImage,
    check_not_constant,
    check_overwrite,
    collect_inputs,
    locks_outputs,
    prepare_output_dir,
    read_image,
    read_nuclear,
    to_uint8,
    warn_if_mask,
    write_json,
    write_png,
    write_tiff,
)
from ...ops import ClassicalSettings
from ._points import (
    PEAK_SIGMA,
    PeakSettings,
    check_points,
    likelihood_map,
    nuclear_centroids,
    points_for_image,
    read_points_csv,
    read_roi_points,
    write_points_csv,
)

POINTS_FILE = "points.csv"
SUMMARY_FILE = "points.json"


@dataclass
class PointLabels:
    """One image and its cell points (row, column), with where they came from."""

    path: Path
    image: np.ndarray
    points: np.ndarray
    source: str
    duplicates: int = 0
    info: dict = field(default_factory=dict)
    key: str = ""  # its path relative to the input folder: its name in points.csv


def _roi_path(image_path: Path, rois) -> Path:
    if isinstance(rois, dict):
        for key in (image_path, str(image_path), image_path.name):
            if key in rois:
                return Path(rois[key])
        raise CellmixerError(f"--rois: no ROI file given for {image_path}.")
    folder = Path(rois)
    if not folder.is_dir():
        raise CellmixerError(f"--rois {folder}: no such folder; give the folder of <image name>.zip / .roi files.")
    for suffix in (".zip", ".roi", "_rois.zip", "_RoiSet.zip"):
        candidate = folder / f"{image_path.stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise CellmixerError(f"--rois {folder}: no {image_path.stem}.zip or {image_path.stem}.roi for {image_path.name}; "
                         "an image without cells needs an empty entry in a --points CSV instead.")


def check_label_source(points=None, rois=None, nuclear=None, nuclear_channel=None) -> str:
    """The one weak-label source given: ``"points"``, ``"rois"`` or ``"nuclear"``."""
    given = [name for name, v in (("points", points), ("rois", rois), ("nuclear", nuclear)) if v is not None]
    if nuclear_channel is not None and "nuclear" not in given:
        given.append("nuclear")
    if len(given) != 1:
        raise CellmixerError("give one source of cell points: --points CSV, --rois FOLDER, or a nuclear stain "
                             f"(--nuclear FOLDER, --nuclear-replace OLD NEW or --nuclear-channel); got "
                             f"{', '.join(given) or 'none'}.")
    return given[0]


def weak_labels(paths, *, points=None, rois=None, nuclear=None, nuclear_channel: int | str | None = None,
                channel: int | str | None = None, method: str = ClassicalSettings.method,
                diameter_range=ClassicalSettings.diameter_range, progress: bool = True, desc: str = "reading points") -> list[PointLabels]:
    """Read each image and the points of its cells from one source.

    Parameters
    ----------
    paths : list of Path or InputImage
        The images to label (phase contrast, DIC, brightfield ...); inputs
        (:func:`cellmixer.io.collect_inputs`) find their points by their path relative to the
        input folder, paths by their file name.
    points : str, Path or dict, optional
        A CSV file (image,x,y; :func:`read_points_csv`) or ``{image name or path: (N, 2) (row, column)}``.
    rois : str, Path or dict, optional
        A folder of ImageJ ``<image stem>.zip`` / ``.roi`` files (point or area ROIs), or
        ``{image: ROI file}``.
    nuclear : str, Path, (old, new) or dict, optional
        The nuclear stain of each image: a folder of images named like them, a replacement in the
        file name (``("phase", "nuclear")``: ``a_phase.tif`` -> ``a_nuclear.tif``), or
        ``{image: nuclear image}``. Points are the centroids of the nuclei found by the classical
        labeller (``method``, ``diameter_range``).
    nuclear_channel : int or str, optional
        The nuclear stain is this channel of the image file itself (an index or a name).
    channel : int or str, optional
        Channel of the image to segment, in multi-channel files (an index or a name).

    Returns
    -------
    list of PointLabels

    Raises
    ------
    CellmixerError
        No or several sources; an image without points in the CSV; a point outside its image; a
        nuclear image of another size than its image. Repeated points are dropped (counted in
        ``duplicates``).
    """
    source = check_label_source(points, rois, nuclear, nuclear_channel)
    table = None
    if source == "points":
        table = points if isinstance(points, dict) else read_points_csv(points)
        table = {str(k): np.asarray(v, np.float64).reshape(-1, 2) for k, v in table.items()}
    items = []
    inputs = [p if isinstance(p, InputImage) else InputImage(Path(p), Path(p).stem, Path(p).name) for p in paths]
    names = Counter(item.path.name for item in inputs)
    for item in progress_bar(inputs, desc=desc, unit="image", enabled=progress):
        path = item.path
        image = read_image(path, channel=channel)
        check_not_constant(image, path)
        warn_if_mask(image, path)
        info = {}
        if source == "points":
            raw = points_for_image(table, path, key=item.key, shared_name=names[path.name] > 1,
                                   source=f"--points {points}" if not isinstance(points, dict) else "--points")
            where = f"{points if not isinstance(points, dict) else '--points'} ({item.key})"
        elif source == "rois":
            roi_file = _roi_path(path, rois)
            raw = read_roi_points(roi_file)
            where, info["rois"] = f"{roi_file}", str(roi_file)
        else:
            stain, where = read_nuclear(path, nuclear=nuclear, nuclear_channel=nuclear_channel)
            if nuclear_channel is None:
                info["nuclear"] = where
            raw = nuclear_centroids(stain, shape=image.shape, method=method, diameter_range=diameter_range,
                                    name=where)
        checked, duplicates = check_points(raw, image.shape, name=where)
        items.append(PointLabels(path, image, checked, source, duplicates, info, key=item.key))
    return items


@locks_outputs
def label_centroids(inputs, output, *, points=None, rois=None, nuclear=None, nuclear_channel: int | str | None = None,
                    pattern: str = "*", channel: int | str | None = None, method: str = ClassicalSettings.method,
                    diameter_range=ClassicalSettings.diameter_range, sigma: float = PEAK_SIGMA,
                    likelihood: bool = False, overlays: bool = True, overwrite: bool = False,
                    progress: bool = True) -> list[dict]:
    """Write the cell points of every image, to check them (and correct them) before training.

    Writes ``points.csv`` (image,x,y: the file ``cellmixer centroids train --points`` reads; an
    image is named by its path relative to the input folder, ``field1/phase.png``, so that fields
    of the same file name keep their own points; an image without cells has one row with empty x
    and y), ``<name>_points.png`` (the image with a
    cross on each point, unless ``overlays`` is False), with ``likelihood`` the training target
    ``<name>_likelihood.tif`` (Gaussian peaks of ``sigma`` pixels), and ``points.json`` (source,
    settings and per-image counts).

    Parameters are those of :func:`weak_labels`, plus ``inputs`` (image files or folders),
    ``output`` (folder) and ``pattern`` (glob for folders).

    Returns
    -------
    list of dict
        Per image: ``image``, ``points``, ``duplicates_dropped`` and the source file.
    """
    source = check_label_source(points, rois, nuclear, nuclear_channel)
    ClassicalSettings(method=method, diameter_range=tuple(diameter_range))  # checked before any work
    PeakSettings(sigma=sigma)
    found = collect_inputs(inputs, pattern=pattern, exclude=[output])
    out = prepare_output_dir(output)
    planned = [out / POINTS_FILE, out / SUMMARY_FILE]
    for _, stem in found:
        planned += [out / f"{stem}_points.png"] if overlays else []
        planned += [out / f"{stem}_likelihood.tif"] if likelihood else []
    check_overwrite(planned, overwrite=overwrite)
    items = weak_labels(found, points=points, rois=rois, nuclear=nuclear,
                        nuclear_channel=nuclear_channel, channel=channel, method=method,
                        diameter_range=diameter_range, progress=progress, desc="labelling")
    rows, table = [], {}
    for item, (_, stem) in zip(items, found):
        table[item.key] = item.points
        if overlays:
            write_png(out / f"{stem}_points.png", points_overlay(item.image, item.points), overwrite=overwrite)
        if likelihood:
            write_tiff(out / f"{stem}_likelihood.tif", likelihood_map(item.points, item.image.shape, sigma=sigma),
                       overwrite=overwrite)
        rows.append({"image": item.key, "points": len(item.points), "duplicates_dropped": item.duplicates,
                     **item.info})
    write_points_csv(out / POINTS_FILE, table, overwrite=overwrite)
    write_json(out / SUMMARY_FILE, {"source": source, "method": method if source == "nuclear" else None,
                                    "diameter_range": list(diameter_range) if source == "nuclear" else None,
                                    "sigma": sigma, "channel": channel, "images": rows,
                                    "cellmixer_version": __version__}, overwrite=overwrite)
    return rows


def points_overlay(image, points, *, color=(255, 40, 40), size: int | None = None) -> np.ndarray:
    """The image in grey with a cross on each (row, column) point."""
    gray = to_uint8(np.asarray(image))
    return draw_points(np.repeat(gray[..., None], 3, axis=-1), points, color=color, size=size)


def draw_points(rgb: np.ndarray, points, *, color=(255, 40, 40), size: int | None = None) -> np.ndarray:
    """Draw a cross of ``color`` on each (row, column) point of an (H, W, 3) picture, in place; returns it."""
    h, w = rgb.shape[:2]
    size = size or max(2, round(min(h, w) / 150))
    for y, x in np.round(np.asarray(points, np.float64).reshape(-1, 2)).astype(int):
        if 0 <= y < h:
            rgb[y, max(0, x - size):max(0, min(w, x + size + 1))] = color
        if 0 <= x < w:
            rgb[max(0, y - size):max(0, min(h, y + size + 1)), x] = color
    return rgb
