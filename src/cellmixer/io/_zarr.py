"""Large images without loading them: lazy reading of Zarr, OME-Zarr and TIFF as dask arrays, and the one
writer of OME-Zarr (NGFF 0.4 or 0.5, as ome-zarr-py writes it): an image and its label images, each with a
multiscale pyramid and the physical pixel size, written chunk by chunk from numpy or dask arrays.

Viewers: napari (napari-ome-zarr), Fiji (OME-Zarr via the N5/MoBIE plugins or Bio-Formats), QuPath 0.6 and
later read NGFF 0.4; 0.5 (Zarr v3) is read by fewer of them yet, so 0.4 is the default.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from .._errors import CellmixerError
from .._lazy import lazy_import
from ._read import IMAGE_SUFFIXES, read_image

da = lazy_import("dask.array")
zarr = lazy_import("zarr")

ZARR_SUFFIXES = (".zarr",)
# NGFF version -> Zarr format. The metadata is written as ome-zarr-py writes it (checked against its reader in
# the tests); ome-zarr-py itself is not needed (its import costs seconds at every start of the command).
NGFF_VERSIONS = {"0.4": 2, "0.5": 3}
# Chunk side of what is written, and the side below which the pyramid stops.
WRITE_CHUNK = 1024
SMALLEST_LEVEL = 256
_TIFF_SUFFIXES = (".tif", ".tiff")


def is_zarr(path) -> bool:
    """Whether ``path`` is a Zarr store (a folder named ``*.zarr`` or holding Zarr metadata)."""
    path = Path(path)
    return path.is_dir() and (path.suffix.lower() in ZARR_SUFFIXES
                              or any((path / name).is_file() for name in (".zgroup", ".zarray", "zarr.json")))


@dataclass(frozen=True)
class LazyImage:
    """A 2-D image read lazily: nothing is loaded until its chunks are computed.

    Attributes
    ----------
    data : dask.array.Array
        (Y, X), the file's own dtype; chunks follow the file's tiles or chunks.
    pixel_size : (float, float) or None
        Physical size of a pixel (y, x) in ``unit``, where the file says it.
    unit : str or None
        e.g. ``'micrometer'``.
    path : Path
    """

    data: da.Array
    pixel_size: tuple[float, float] | None
    unit: str | None
    path: Path

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.data.shape)


def open_lazy(path, *, channel: int | None = None, level: int = 0) -> LazyImage:
    """Open an image as a lazy (Y, X) dask array.

    Parameters
    ----------
    path : str or Path
        An OME-Zarr image (its full-resolution level is read; axes and pixel size from its
        metadata), a plain Zarr array (2-D, or 3-D with channels first or last; named axes from
        ``_ARRAY_DIMENSIONS`` where present), a TIFF (read tile by tile or strip by strip through
        ``tifffile.aszarr``; axes from tifffile) or a PNG/JPEG (read whole: they are not tiled).
    channel : int, optional
        Channel of multi-channel images; needed when there are several (a T or Z axis must have
        one plane).
    level : int
        Pyramid level of an OME-Zarr (0: full resolution; each next one half the size).

    Returns
    -------
    LazyImage

    Raises
    ------
    CellmixerError
        Missing or unreadable files, and arrays without a Y and an X axis, naming the file.

    Examples
    --------
    >>> import numpy as np, tifffile, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "big.tif")
    >>> tifffile.imwrite(path, np.arange(600, dtype=np.uint16).reshape(20, 30), tile=(16, 16))
    >>> image = open_lazy(path)
    >>> image.shape, str(image.data.dtype), int(image.data[19, 29].compute())
    ((20, 30), 'uint16', 599)
    """
    path = Path(path)
    if is_zarr(path):
        return _open_zarr(path, channel, level)
    if not path.is_file():
        raise CellmixerError(f"{path}: no such image file or Zarr folder; check the path.")
    if path.suffix.lower() in _TIFF_SUFFIXES:
        try:
            with tifffile.TiffFile(path) as tif:
                axes = tif.series[0].axes
            source = _TiffArray(str(path.resolve()), path.stat().st_mtime_ns)
            chunks = tuple(max(c, min(s, WRITE_CHUNK)) for c, s in zip(source.chunks, source.shape))
            array = da.from_array(source, chunks=chunks, asarray=True, name=f"tiff-{source.path}-{source.mtime}")
        except Exception as exc:  # any decoder failure is a bad file for the user
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CellmixerError(f"{path}: cannot read this TIFF lazily ({reason}); is the file complete?") from None
        return LazyImage(_plane(array, axes.lower().replace("s", "c"), channel, path), None, None, path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return LazyImage(da.from_array(read_image(path, channel=channel), chunks=WRITE_CHUNK), None, None, path)
    raise CellmixerError(f"{path}: not an image (TIFF, PNG, JPEG, Zarr or OME-Zarr).")


class _TiffArray:
    """The full-resolution array of a TIFF, read region by region through ``tifffile.aszarr``. It keeps
    only the path, so dask can send it to other processes; each opens the file once."""

    def __init__(self, path: str, mtime: int):
        self.path, self.mtime = path, mtime
        array = _tiff_zarr(path, mtime)
        self.shape, self.dtype, self.chunks = array.shape, array.dtype, array.chunks

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key):
        return _tiff_zarr(self.path, self.mtime)[key]

    def __getstate__(self):
        return {k: self.__dict__[k] for k in ("path", "mtime", "shape", "dtype", "chunks")}


@functools.lru_cache(maxsize=8)
def _tiff_zarr(path: str, mtime: int):
    return zarr.open_array(tifffile.imread(path, aszarr=True, level=0), mode="r")


def _open_zarr(path: Path, channel: int | None, level: int = 0) -> LazyImage:
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # not a store, or a damaged one
        raise CellmixerError(f"{path}: cannot open this Zarr ({str(exc).splitlines()[0] if str(exc) else exc}); "
                             "is it complete?") from None
    if isinstance(node, zarr.Array):
        dims = node.attrs.get("_ARRAY_DIMENSIONS")
        axes = "".join(str(d)[0].lower() for d in dims) if dims else _guess_axes(node.shape, path)
        return LazyImage(_plane(da.from_zarr(node), axes, channel, path), None, None, path)
    attrs = dict(node.attrs)
    attrs = attrs.get("ome", attrs)  # NGFF 0.5 keeps its metadata under "ome"
    multiscales = attrs.get("multiscales")
    if not multiscales:
        arrays = sorted(name for name, _ in node.arrays())
        hint = f" (it holds arrays {', '.join(arrays[:3])}: give one of them)" if arrays else ""
        raise CellmixerError(f"{path}: a Zarr group without OME-Zarr 'multiscales' metadata{hint}.")
    first = multiscales[0]
    if not 0 <= level < len(first["datasets"]):
        raise CellmixerError(f"{path}: no pyramid level {level} (it has {len(first['datasets'])}).")
    dataset = first["datasets"][level]
    axes_meta = first.get("axes") or [{"name": n} for n in "tczyx"[-node[dataset["path"]].ndim:]]
    axes = "".join((a["name"] if isinstance(a, dict) else str(a))[0].lower() for a in axes_meta)
    array = da.from_zarr(node[dataset["path"]])
    pixel_size = unit = None
    for transform in dataset.get("coordinateTransformations", []):
        if transform.get("type") == "scale" and "y" in axes and "x" in axes:
            scale = transform["scale"]
            pixel_size = (float(scale[axes.index("y")]), float(scale[axes.index("x")]))
            unit = next((a.get("unit") for a in axes_meta if isinstance(a, dict) and a.get("name") == "x"), None)
    return LazyImage(_plane(array, axes, channel, path), pixel_size, unit, path)


def _guess_axes(shape, path: Path) -> str:
    """Axes of a plain Zarr array without names: (Y, X), or channels first (C <= 8) or last (C <= 4)."""
    if len(shape) == 2:
        return "yx"
    if len(shape) == 3 and shape[0] <= 8:
        return "cyx"
    if len(shape) == 3 and shape[-1] <= 4:
        return "yxc"
    raise CellmixerError(f"{path}: a Zarr array of shape {shape} without named axes; give a 2-D (Y, X) array, or "
                         "(C, Y, X) with up to 8 channels, or an OME-Zarr image (whose metadata names its axes).")


def _plane(array: da.Array, axes: str, channel: int | None, path: Path) -> da.Array:
    """The (Y, X) plane of ``array`` whose axes are ``axes`` (letters of t, c, z, y, x)."""
    if len(axes) != array.ndim or "y" not in axes or "x" not in axes or len(set(axes)) != len(axes):
        raise CellmixerError(f"{path}: axes {axes.upper() or '?'} for an array of shape {array.shape}; need a Y and "
                             "an X axis (and optionally C, Z, T), as OME-Zarr names them.")
    index = []
    for name, size in zip(axes, array.shape):
        if name in "yx":
            index.append(slice(None))
        elif name == "c" and size > 1:
            if channel is None:
                raise CellmixerError(f"{path}: image has {size} channels; choose one with --channel (0 to {size - 1}).")
            if not -size <= channel < size:
                raise CellmixerError(f"{path}: --channel {channel} is out of range; this image has {size} channels "
                                     f"(use 0 to {size - 1}).")
            index.append(channel)
        elif size == 1:
            index.append(0)
        else:
            raise CellmixerError(f"{path}: axis {name.upper()} has {size} planes; give a single 2-D plane per "
                                 "image (split z-stacks and time series first).")
    if "c" not in axes and channel not in (None, 0, -1):
        raise CellmixerError(f"{path}: --channel {channel} is out of range; this image has a single channel.")
    plane = array[tuple(index)]
    kept = [name for name in axes if name in "yx"]
    return plane.T if kept == ["x", "y"] else plane


# --------------------------------------------------------------------------------------------- writing


def pyramid_levels(shape, *, smallest: int = SMALLEST_LEVEL) -> int:
    """Levels of a factor-2 pyramid whose last level is the first with both sides at most ``smallest``.

    >>> pyramid_levels((20000, 20000)), pyramid_levels((200, 300)), pyramid_levels((1080, 1280))
    (8, 2, 4)
    """
    return 1 + max(0, math.ceil(math.log2(max(shape[-2:]) / smallest)))


def _as_dask(array, chunk: int) -> da.Array:
    """A dask view of ``array`` chunked ``chunk`` in Y and X (and whole along leading axes)."""
    array = array if isinstance(array, da.Array) else da.from_array(np.asarray(array), chunks=-1)
    chunks = (-1,) * (array.ndim - 2) + (chunk, chunk)
    return array.rechunk(chunks)


def _downsample(array: da.Array, labels: bool) -> da.Array:
    """Half the size in Y and X: every 2nd pixel for labels (values stay labels), the 2 x 2 mean for images."""
    if labels:
        return array[..., ::2, ::2]
    pad = [(0, 0)] * (array.ndim - 2) + [(0, array.shape[-2] % 2), (0, array.shape[-1] % 2)]
    if any(p[1] for p in pad):
        array = da.pad(array, pad, mode="edge")
    axes = {array.ndim - 2: 2, array.ndim - 1: 2}
    mean = da.coarsen(np.mean, array.astype(np.float32), axes, trim_excess=True)
    return mean.round().astype(array.dtype) if np.issubdtype(array.dtype, np.integer) else mean.astype(array.dtype)


def _write_pyramid(group, array: da.Array, *, levels: int, chunk: int, labels: bool, version: str, axes: list[dict],
                   pixel_size, name: str, on_level=None) -> None:
    """Levels ``0..levels-1`` of ``array`` as arrays ``'0'``, ``'1'``, ... of ``group``, each computed from the one
    written before it (read back from disk: no level is held in memory), and their multiscales metadata."""
    datasets = []
    level = array
    for index in range(levels):
        chunks = (1,) * (level.ndim - 2) + (chunk, chunk)
        chunks = tuple(min(c, max(s, 1)) for c, s in zip(chunks, level.shape))
        target = group.create_array(str(index), shape=level.shape, chunks=chunks, dtype=level.dtype,
                                    fill_value=0, **_array_options(version, axes))
        da.store(level.rechunk(chunks), target, lock=False)
        factor = 2 ** index
        scale = [1.0] * (level.ndim - 2) + [pixel_size[0] * factor, pixel_size[1] * factor]
        datasets.append({"path": str(index), "coordinateTransformations": [{"type": "scale", "scale": scale}]})
        if on_level is not None:
            on_level(index)
        if index + 1 < levels:
            level = _downsample(da.from_zarr(target), labels)
    multiscale = {"axes": axes, "datasets": datasets, "name": name}
    _add_metadata(group, version, {"multiscales": [{**multiscale, "version": version} if version == "0.4" else
                                                   multiscale]})


def _array_options(version: str, axes: list[dict]) -> dict:
    """As ome-zarr-py creates arrays: '/'-separated chunk keys in Zarr v2, axis names in Zarr v3."""
    if NGFF_VERSIONS[version] == 2:
        return {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
    return {"dimension_names": [a["name"] for a in axes]}


def write_ome_zarr(path, image, *, labels: dict | None = None, pixel_size: tuple[float, float] | None = None,
                   unit: str = "micrometer", channel_names=None, label_properties: dict | None = None,
                   chunk_size: int = WRITE_CHUNK, levels: int | None = None, version: str = "0.4",
                   overwrite: bool = False, progress=None) -> Path:
    """Write an image and its label images as one OME-Zarr (NGFF), chunk by chunk.

    The result opens in napari (with napari-ome-zarr: the image and each label layer), Fiji and
    QuPath. Everything is written under a temporary name next to ``path`` and renamed when
    complete, so ``path`` is either the whole result or absent; a full disk stops with a one-line
    error and leaves nothing behind.

    Parameters
    ----------
    path : str or Path
        The OME-Zarr folder to write (``*.ome.zarr`` by convention).
    image : (Y, X) or (C, Y, X) numpy or dask array
        The image (any numeric dtype, kept). A dask array is computed chunk by chunk: the whole
        image is never in memory.
    labels : dict of str to (Y, X) integer array, optional
        Label images (numpy or dask) of the same Y, X size, by name, e.g. ``{"cells": labels}``:
        written under ``labels/<name>`` with the NGFF ``image-label`` metadata.
    pixel_size : (float, float), optional
        Physical size of a full-resolution pixel (y, x) in ``unit`` (default: 1 unit, unknown).
    unit : str
        An NGFF unit of length (``'micrometer'``, ``'nanometer'``, ...).
    channel_names : list of str, optional
        Names of the channels of a (C, Y, X) image (``omero`` metadata).
    label_properties : dict of str to list of dict, optional
        Per label image, NGFF label properties: dicts with ``'label-value'`` and any other
        fields (e.g. ``{'label-value': 3, 'type': 'jurkat'}``).
    chunk_size : int
        Chunk side in Y and X (default 1024).
    levels : int, optional
        Pyramid levels, each half the size of the one before (default: until both sides are at
        most 256 pixels, :func:`pyramid_levels`). Images by 2 x 2 mean, labels by taking every
        second pixel (they stay labels).
    version : {'0.4', '0.5'}
        NGFF version: 0.4 (Zarr v2, read by most viewers) or 0.5 (Zarr v3).
    overwrite : bool
        Replace an existing ``path``.
    progress : callable, optional
        ``progress(what)`` after each level written (``'image 0'``, ``'labels/cells 2'``).

    Returns
    -------
    Path

    Examples
    --------
    >>> import numpy as np, tempfile, os, zarr
    >>> image = np.arange(600 * 500, dtype=np.uint16).reshape(600, 500)
    >>> cells = (image // 30000).astype(np.int32)
    >>> out = write_ome_zarr(os.path.join(tempfile.mkdtemp(), "a.ome.zarr"), image, labels={"cells": cells},
    ...                      pixel_size=(0.65, 0.65), chunk_size=256)
    >>> root = zarr.open_group(str(out), mode="r")
    >>> [root[str(k)].shape for k in range(3)], root["labels/cells/1"].shape
    ([(600, 500), (300, 250), (150, 125)], (300, 250))
    >>> root.attrs["multiscales"][0]["datasets"][1]["coordinateTransformations"][0]["scale"]
    [1.3, 1.3]
    """
    if version not in NGFF_VERSIONS:
        raise CellmixerError(f"OME-Zarr version {version}: choose {' or '.join(NGFF_VERSIONS)}.")
    path = Path(path)
    if path.exists() and not overwrite:
        raise CellmixerError(f"{path} already exists; pass --overwrite to replace it, or choose another output.")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 16:
        raise CellmixerError(f"chunk size {chunk_size}: must be a whole number of at least 16 pixels.")
    image = _as_dask(image, chunk_size)
    if image.ndim not in (2, 3):
        raise CellmixerError(f"image of shape {image.shape}: give (Y, X) or (C, Y, X).")
    shape = image.shape[-2:]
    labels = {name: _as_dask(value, chunk_size) for name, value in (labels or {}).items()}
    for name, value in labels.items():
        if value.shape != shape or value.dtype.kind not in "iub":
            raise CellmixerError(f"labels {name!r}: {value.shape} {value.dtype} for a {shape} image; label images "
                                 "are integer arrays of the image's Y, X size.")
    pixel_size = (1.0, 1.0) if pixel_size is None else tuple(float(p) for p in pixel_size)
    if len(pixel_size) != 2 or not all(p > 0 and math.isfinite(p) for p in pixel_size):
        raise CellmixerError(f"pixel size {pixel_size}: give two positive numbers (y, x).")
    levels = pyramid_levels(shape) if levels is None else int(levels)
    space = [{"name": "y", "type": "space", "unit": unit}, {"name": "x", "type": "space", "unit": unit}]
    axes = ([{"name": "c", "type": "channel"}] if image.ndim == 3 else []) + space
    partial = path.with_name(f".{path.name}.part")
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(partial)  # what a stopped run left
    try:
        root = zarr.open_group(str(partial), mode="w", zarr_format=NGFF_VERSIONS[version])
        report = (lambda what: (lambda level: progress(f"{what} {level}"))) if progress else (lambda what: None)
        _write_pyramid(root, image, levels=levels, chunk=chunk_size, labels=False, version=version, axes=axes,
                       pixel_size=pixel_size, name=path.name.split(".")[0], on_level=report("image"))
        if image.ndim == 3 and channel_names is not None:
            _add_metadata(root, version, {"omero": {"channels": [{"label": str(n), "active": True}
                                                            for n in channel_names]}})
        if labels:
            group = root.create_group("labels")
            _add_metadata(group, version, {"labels": list(labels)})
            for name, value in labels.items():
                label_group = group.create_group(name)
                _write_pyramid(label_group, value, levels=levels, chunk=chunk_size, labels=True,
                               version=version, axes=space, pixel_size=pixel_size, name=name,
                               on_level=report(f"labels/{name}"))
                properties = (label_properties or {}).get(name)
                _add_metadata(label_group, version, {"image-label": {
                    "version": version, "source": {"image": "../../"},
                    **({"properties": list(properties)} if properties is not None else {})}})
        _replace(partial, path)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        what = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise CellmixerError(f"{path}: cannot write the OME-Zarr ({what}); free space or choose another output, "
                             "and run again.") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return path


def _add_metadata(group, version: str, entries: dict) -> None:
    """NGFF attributes: at the top of the group's attributes in 0.4, under "ome" (with the version) in 0.5."""
    if version == "0.4":
        group.attrs.update(entries)
    else:
        group.attrs["ome"] = {**dict(group.attrs.get("ome", {})), "version": version, **entries}


def _replace(partial: Path, path: Path) -> None:
    """Move the complete ``partial`` folder to ``path`` (an existing ``path`` is removed once replaced);
    folders made readable like files the user creates (the umask decides)."""
    umask = os.umask(0)
    os.umask(umask)
    for folder, _, files in os.walk(partial):
        os.chmod(folder, 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o666 & ~umask)
    old = path.with_name(f".{path.name}.old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(partial, path)
    shutil.rmtree(old, ignore_errors=True)


def read_ome_zarr_labels(path, name: str, *, level: int = 0) -> da.Array:
    """A label image of an OME-Zarr written by :func:`write_ome_zarr`, as a lazy (Y, X) dask array.

    Raises a one-line :class:`CellmixerError` when ``path`` holds no such label image.
    """
    path = Path(path)
    array_path = path / "labels" / name / str(level)
    try:
        return da.from_zarr(zarr.open_array(str(array_path), mode="r"))
    except Exception:  # absent or damaged
        have = _label_names(path)
        raise CellmixerError(f"{path}: no label image {name!r} (it has {', '.join(have) or 'none'}).") from None


def _label_names(path: Path) -> list[str]:
    for meta in (path / "labels" / ".zattrs", path / "labels" / "zarr.json"):
        if meta.is_file():
            attrs = json.loads(meta.read_text())
            attrs = attrs.get("attributes", attrs)
            return list(attrs.get("ome", attrs).get("labels", []))
    return []
