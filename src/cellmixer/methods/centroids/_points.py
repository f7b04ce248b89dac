"""Weak labels: one point per cell, from a CSV file, ImageJ ROIs, or the nuclei of a nuclear stain."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import roifile
from skimage.draw import polygon

from ..._errors import CellmixerError
from ..._settings import check_settings, setting
from ...io import write_csv
from ...ops import ClassicalSettings, classical_labels, object_table

POINT_COLUMNS = ("image", "x", "y")


def read_points_csv(path) -> dict[str, np.ndarray]:
    """Points per image from a CSV file with columns ``image``, ``x``, ``y``.

    ``x`` is the column and ``y`` the row, in pixels from the top-left pixel's centre (0, 0), as
    ImageJ, napari and :func:`cellmixer.ops.object_table` centroids give them. ``image`` is
    the image's path relative to the input folder (``field1/phase.png``: what ``cellmixer
    centroids label`` writes; unique where file names repeat), its file name (with or without
    extension) or its full path. A row with empty ``x`` and
    ``y`` lists an image without cells; repeated rows of the same point are kept here (see
    :func:`check_points`).

    Returns
    -------
    dict
        Image name as written in the file -> (N, 2) float64 array of (row, column).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "points.csv"
    >>> _ = path.write_text("image,x,y\\na.tif,3,4\\na.tif,5.5,1\\nb.tif,,\\n")
    >>> points = read_points_csv(path)
    >>> points["a.tif"].tolist(), points["b.tif"].shape
    ([[4.0, 3.0], [1.0, 5.5]], (0, 2))
    """
    path = Path(path)
    if not path.is_file():
        raise CellmixerError(f"--points {path}: no such file; give a CSV with columns image,x,y.")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {c.strip().lower(): c for c in (reader.fieldnames or [])}
            missing = [c for c in POINT_COLUMNS if c not in columns]
            if missing:
                raise CellmixerError(f"{path}: no column {missing[0]!r}; a points file has the columns image,x,y "
                                     f"(found {', '.join(reader.fieldnames or []) or 'none'}).")
            points: dict[str, list] = {}
            for line, row in enumerate(reader, start=2):
                name = (row[columns["image"]] or "").strip()
                x, y = ((row[columns[c]] or "").strip() for c in ("x", "y"))
                if not name:
                    raise CellmixerError(f"{path}, line {line}: no image name; every row names its image.")
                entry = points.setdefault(name, [])
                if x == "" and y == "":
                    continue
                try:
                    entry.append((float(y), float(x)))
                except ValueError:
                    raise CellmixerError(f"{path}, line {line}: x={x!r}, y={y!r} are not numbers.") from None
    except UnicodeDecodeError:
        raise CellmixerError(f"{path}: not a text CSV file.") from None
    return {name: np.array(p, np.float64).reshape(-1, 2) for name, p in points.items()}


def points_for_image(points: dict[str, np.ndarray], image_path, *, key: str | None = None, shared_name: bool = False,
                     source="--points") -> np.ndarray:
    """The points of one image from :func:`read_points_csv`'s result.

    Found by ``key`` (the image's path relative to the input folder, as ``cellmixer centroids
    label`` writes it, with or without extension), then by its full path, then by its file name
    or stem: the form of older files. With ``shared_name`` (another input has the same file name)
    a match by name alone is refused: it would give one field's points to the others.
    """
    image_path = Path(image_path)
    exact = [key, key and str(Path(key).with_suffix("")), str(image_path), image_path.as_posix()]
    for candidate in exact:
        if candidate and candidate in points:
            return points[candidate]
    for candidate in (image_path.name, image_path.stem):
        if candidate in points:
            if shared_name:
                raise CellmixerError(f"{source}: rows named '{candidate}' match several inputs of that name; name each "
                                     f"image by its path relative to the input folder ({key or image_path}), as "
                                     "`cellmixer centroids label` writes them.")
            return points[candidate]
    raise CellmixerError(f"{source}: no points for {key or image_path.name}; add its rows (image,x,y), or one row "
                         f"'{key or image_path.name},,' if it has no cells.")


def read_roi_points(path) -> np.ndarray:
    """Points from ImageJ ROIs (a ``.roi`` file or a ``RoiSet.zip``) read with ``roifile``.

    Point ROIs give each of their points; area ROIs (polygons, freehand, ovals, rectangles) give
    the centroid of their outline's polygon. Returns (N, 2) float64 (row, column).
    """
    rois = _read_rois(path)
    out = []
    for roi in rois:
        coords = np.asarray(roi.coordinates(), np.float64).reshape(-1, 2)  # (x, y)
        if len(coords) == 0:
            continue
        if _is_point_roi(roi):
            out.extend((y, x) for x, y in coords)
        else:
            y, x = _polygon_centroid(coords)
            out.append((y, x))
    return np.array(out, np.float64).reshape(-1, 2)


def _read_rois(path):
    path = Path(path)
    if not path.is_file():
        raise CellmixerError(f"{path}: no such ROI file; give an ImageJ .roi or RoiSet .zip.")
    try:
        rois = roifile.roiread(str(path))
    except Exception as exc:  # roifile raises ValueError, zipfile.BadZipFile, struct.error, ...
        raise CellmixerError(f"{path}: not readable as ImageJ ROIs ({exc}).") from None
    return rois if isinstance(rois, list) else [rois]


def _is_point_roi(roi) -> bool:
    return roi.roitype == roifile.ROI_TYPE.POINT


def _polygon_centroid(xy: np.ndarray) -> tuple[float, float]:
    x, y = xy[:, 0], xy[:, 1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y1 - x1 * y
    area = cross.sum() / 2
    if abs(area) < 1e-9:
        return float(y.mean()), float(x.mean())
    return float(((y + y1) * cross).sum() / (6 * area)), float(((x + x1) * cross).sum() / (6 * area))


def roi_labels(path, shape) -> np.ndarray:
    """A label image (int32, objects 1..n in file order) from the area ROIs of an ImageJ file.

    Where ROIs overlap, the later one wins (as painting them in order would). Point and line ROIs
    are skipped.
    """
    labels = np.zeros(shape, np.int32)
    k = 0
    for roi in _read_rois(path):
        if _is_point_roi(roi):
            continue
        coords = np.asarray(roi.coordinates(), np.float64).reshape(-1, 2)
        if len(coords) < 3:
            continue
        rr, cc = polygon(coords[:, 1], coords[:, 0], shape)
        if len(rr):
            k += 1
            labels[rr, cc] = k
    return labels


def check_points(points, shape, *, name="points") -> tuple[np.ndarray, int]:
    """Refuse points outside the image; drop repeated points (a cell clicked twice).

    Parameters
    ----------
    points : (N, 2) array of (row, column)
    shape : (H, W) of the image
    name : str
        What to name in the error message (file and image).

    Returns
    -------
    points : (M, 2) float64 ndarray
        The distinct points, in their first order.
    duplicates : int
        How many repeated points were dropped.

    Examples
    --------
    >>> p, dropped = check_points([[1, 2], [3, 4], [1, 2]], (10, 10))
    >>> p.tolist(), dropped
    ([[1.0, 2.0], [3.0, 4.0]], 1)
    """
    points = np.asarray(points, np.float64).reshape(-1, 2)
    if not np.isfinite(points).all():
        raise CellmixerError(f"{name}: a point has a missing or infinite coordinate.")
    h, w = shape
    outside = (points[:, 0] < -0.5) | (points[:, 0] > h - 0.5) | (points[:, 1] < -0.5) | (points[:, 1] > w - 0.5)
    if outside.any():
        y, x = points[np.flatnonzero(outside)[0]]
        raise CellmixerError(f"{name}: point x={x:g}, y={y:g} lies outside the {w}x{h} (width x height) image "
                             f"({int(outside.sum())} such point(s)); check the image the points belong to and "
                             "that x is the column and y the row.")
    _, first = np.unique(np.round(points, 6), axis=0, return_index=True)
    keep = np.sort(first)
    return points[keep], len(points) - len(keep)


def nuclear_centroids(nuclear, *, shape=None, method: str = ClassicalSettings.method,
                      diameter_range=ClassicalSettings.diameter_range, name="nuclear image", **options) -> np.ndarray:
    """Cell points without annotation: centroids of the nuclei that the classical labeller finds in
    a nuclear-stain image (:func:`cellmixer.ops.classical_labels`).

    Parameters
    ----------
    nuclear : (H, W) array
        The nuclear stain (DAPI, Hoechst, a far-red nuclear dye ...), bright nuclei on dark.
    shape : (H, W), optional
        The shape of the image the points are for; a nuclear image of another shape is refused.
    method, diameter_range, **options
        The classical labeller's method, typical nucleus diameter (min, max) in pixels, and further
        options of :func:`cellmixer.ops.identify_primary_objects`.

    Returns
    -------
    (N, 2) float64 ndarray of (row, column)
    """
    nuclear = np.asarray(nuclear)
    if nuclear.ndim != 2:
        raise CellmixerError(f"{name}: {nuclear.ndim}-D array of shape {nuclear.shape}; give one 2-D channel "
                             "(--nuclear-channel for multi-channel files).")
    if shape is not None and tuple(nuclear.shape) != tuple(shape):
        raise CellmixerError(f"{name}: {nuclear.shape[1]}x{nuclear.shape[0]} pixels but the image is "
                             f"{shape[1]}x{shape[0]}; give the nuclear stain of the same field, at the same size.")
    if nuclear.size == 0 or nuclear.min() == nuclear.max():
        return np.zeros((0, 2))
    labels, _ = classical_labels(nuclear, method=method, diameter_range=diameter_range, **options)
    table = object_table(labels)
    return np.array([(r["centroid_y"], r["centroid_x"]) for r in table], np.float64).reshape(-1, 2)


# Standard deviation (pixels of the image) of each cell's Gaussian peak in a likelihood map.
PEAK_SIGMA = 6.0


@dataclass(frozen=True)
class PeakSettings:
    """The likelihood peak of a point (its one home: default, range, help)."""

    sigma: float = setting(PEAK_SIGMA, "standard deviation of each likelihood peak, image pixels", above=0,
                           at_most=1000)

    def __post_init__(self):
        check_settings(self)


def likelihood_map(points, shape, *, sigma: float = PEAK_SIGMA) -> np.ndarray:
    """The training target of the detector: a Gaussian peak of height 1 at each point, combined by maximum.

    Parameters
    ----------
    points : (N, 2) array of (row, column)
    shape : (H, W)
    sigma : float
        Standard deviation of each peak in pixels.

    Returns
    -------
    (H, W) float32 ndarray in [0, 1]; all 0 without points.

    Examples
    --------
    >>> m = likelihood_map([[2, 3]], (5, 7), sigma=1.0)
    >>> float(m[2, 3]), round(float(m[2, 4]), 4), m.dtype
    (1.0, 0.6065, dtype('float32'))
    """
    if not sigma > 0:
        raise CellmixerError(f"--sigma {sigma}: must be positive (pixels).")
    h, w = shape
    out = np.zeros((h, w), np.float32)
    radius = int(np.ceil(4 * sigma))
    for y, x in np.asarray(points, np.float64).reshape(-1, 2):
        y0, y1 = max(0, int(np.floor(y)) - radius), min(h, int(np.ceil(y)) + radius + 1)
        x0, x1 = max(0, int(np.floor(x)) - radius), min(w, int(np.ceil(x)) + radius + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        gy = np.exp(-((np.arange(y0, y1) - y) ** 2) / (2 * sigma**2))
        gx = np.exp(-((np.arange(x0, x1) - x) ** 2) / (2 * sigma**2))
        np.maximum(out[y0:y1, x0:x1], np.outer(gy, gx).astype(np.float32), out=out[y0:y1, x0:x1])
    return out


def write_points_csv(path, rows: dict, *, overwrite: bool = False) -> Path:
    """Write ``{image key: (N, 2) (row, column)}`` as an image,x,y CSV (an empty row for images without points);
    the key is the image's path relative to the input folder."""
    out = []
    for name, points in rows.items():
        if len(points) == 0:
            out.append({"image": name, "x": "", "y": ""})
        out.extend({"image": name, "x": round(float(x), 3), "y": round(float(y), 3)} for y, x in points)
    return write_csv(path, out, overwrite=overwrite, fieldnames=list(POINT_COLUMNS))
