"""Images larger than memory: prediction chunk by chunk on dask, instances stitched across chunk borders,
results written to OME-Zarr. Written once here; every method supplies only what it does to one chunk.

How a chunk is done (:func:`predict_chunked`):

1. The image (a lazy dask array: OME-Zarr, Zarr or TIFF read tile by tile) is cut into square chunks;
   ``dask.array.map_overlap`` hands each chunk to a task with a margin of ``tile context + halo``
   pixels around it: the tiles of the network that touch the chunk and its halo (their receptive
   field), and the halo, room for the largest object.
2. The method predicts its result on the chunk and its halo with the whole image's tiles and
   normalization (:class:`cellmixer.engine.Window`): bit for bit what the whole image gives there.
3. Semantic maps keep the chunk. Instances: an object found in a chunk's halo is found the same
   by every chunk that sees it whole; it is named by its first pixel (raster order) in the image, so
   all chunks agree on its name, and it is measured by the chunk that holds that pixel (its owner).
   The names are then renumbered 1..n in raster order of their first pixel, as ``scipy.ndimage.label``
   numbers the objects of a whole image.
4. Each finished chunk is written to a work folder and then marked done (after its data, so a chunk
   cut short is never taken as done); a run that stopped resumes from the chunks marked done.
5. The image and its labels are written to OME-Zarr with a pyramid (:func:`cellmixer.io.write_ome_zarr`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import dask
import numpy as np
import tifffile
import torch

from .._errors import CellmixerError
from .._lazy import lazy_import
from .._progress import progress_bar
from .._settings import check_settings, setting
from ..io import LazyImage, atomic_path, is_zarr, open_lazy, read_ome_zarr_labels, write_ome_zarr
from ..ops import OBJECT_FIELDS, object_table
from ._model import SegmentationModel
from ._tiling import Tiling, Window, tile_context

da = lazy_import("dask.array")
zarr = lazy_import("zarr")

DEFAULT_CHUNK = 2048
WORK_SUFFIX = ".chunks"
_FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


def _scheduler_need(value) -> str | None:
    if value is None or isinstance(value, str) and value.strip():
        return None
    return "give a dask.distributed address (tcp://host:8786), 'local', 'threads' or 'synchronous'"


@dataclasses.dataclass(frozen=True)
class Chunking:
    """How a large image is cut and where its chunks run. Checked when made, like :class:`Tiling`.

    Attributes
    ----------
    chunk_size : int
        Side of the square chunks in pixels (default 2048: about 0.15 GB of working memory per
        chunk in flight; 400 Mpx in 1.6 GB on two cores). The margin around each chunk (the tiles
        that touch it and ``halo``) is predicted twice, by it and by its neighbour: larger chunks
        waste less. TIFFs up to two chunks on a side (4096 px by default) are read whole: there the
        in-memory path is as fast and as small.
    halo : int or None
        Room for the largest object beyond a chunk, in pixels: objects larger than this may be
        cut at chunk borders (the run reports how many). ``None``: the method's default.
    scheduler : str or None
        Where chunks and the images of a plate run: a ``dask.distributed`` scheduler address
        (``tcp://host:8786``; a SLURM cluster with dask-jobqueue, see docs/scale.md), ``'local'``
        (a LocalCluster with one single-threaded worker process per core), ``'threads'`` (threads
        of this process) or ``'synchronous'`` (one at a time, for debugging). With an address or
        ``'local'``, the images of a run go to the workers, one task per image
        (:func:`cellmixer.engine.run_images`); otherwise they go one after the other in this
        process. ``None``: images here, and the chunks of large images on ``'local'`` where
        ``dask.distributed`` is installed (``pip install cellmixer[distributed]``), else ``'threads'``.

    Examples
    --------
    >>> Chunking(chunk_size=2048).halo is None
    True
    >>> Chunking(chunk_size=8)
    Traceback (most recent call last):
    ...
    cellmixer._errors.CellmixerError: --chunk-size 8: must be at least 64.
    """

    chunk_size: int = setting(DEFAULT_CHUNK, "side of the square chunks of images predicted in chunks, in pixels",
                              at_least=64)
    halo: int | None = setting(None, "room around each chunk for the largest object, in pixels (default: the "
                                     "method's)", kind=int, at_least=0, metavar="PIXELS")
    scheduler: str | None = setting(None, "dask scheduler: a dask.distributed address (tcp://host:8786) or 'local' "
                                          "(a LocalCluster, one worker per core): the images go to its workers, one "
                                          "task each, and so do the chunks of large images; 'threads' or "
                                          "'synchronous': this process (default: images one after the other here, "
                                          "chunks on 'local' with cellmixer[distributed])", kind=str,
                                    check=_scheduler_need, metavar="ADDRESS")

    def __post_init__(self):
        check_settings(self)


@dataclasses.dataclass
class ChunkTask:
    """What a method does to one chunk: given to :func:`predict_chunked`.

    Attributes
    ----------
    segment : callable
        ``segment(region, window, statistics) -> labels`` or ``-> (labels, fields)``: the result
        on ``window.area`` of the image, of which ``region`` (a numpy array) holds ``window``'s
        part. ``statistics`` is the whole image's normalization. A semantic map is (h, w)
        uint8; instances are (h, w) integer labels (any numbering), with optional per-object
        ``fields`` (dict of column name to a sequence indexed by label - 1; a column ``'class'``
        of 1-based class indices also becomes a label layer ``classes``).
    name : str
        Name of the label image in the OME-Zarr (``'classes'``, ``'nuclei'``, ``'cells'``).
    instances : bool
        Instances (stitched across chunks) or a semantic map (cut to the chunk).
    tile_context : int
        How far the network's tiles reach beyond an area (:func:`cellmixer.engine.tile_context`).
    halo : int
        The method's default room for the largest object (instances only).
    statistics : callable
        ``statistics(image)`` on the whole lazy image: its normalization, computed once.
    num_classes : int
        Classes of a semantic map, background included (for the pixel counts).
    class_names : list of str, optional
        Names of the classes of the ``'class'`` field (instances) or of the map (semantic).
    """

    segment: Callable
    name: str
    instances: bool
    tile_context: int
    halo: int = 0
    statistics: Callable = lambda image: None
    num_classes: int = 0
    class_names: list | None = None
    key: str = ""  # the method's model and settings: a stopped run resumes only with the same ones


# ------------------------------------------------------------------------------------------- schedulers


@contextlib.contextmanager
def dask_scheduler(scheduler: str | None = None, *, workers: int | None = None):
    """The dask scheduler that ``--scheduler`` names, active inside the block (see :class:`Chunking`).

    A LocalCluster gets ``workers`` single-threaded worker processes (default: one per core) and
    is closed at the end; an address that does not answer is refused with a one-line error.
    """
    if scheduler in (None, "local"):
        try:
            from distributed import Client, LocalCluster  # optional: cellmixer[distributed]
        except ImportError:
            if scheduler == "local":
                raise CellmixerError("--scheduler local: needs dask.distributed; pip install "
                                     "'cellmixer[distributed]', or use --scheduler threads.") from None
            with dask.config.set(scheduler="threads"):
                yield None
            return
        n = workers or os.cpu_count() or 1
        with contextlib.redirect_stderr(_Quiet()):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        try:
            with Client(cluster) as client:
                yield client
        finally:
            # at the end of the run, a worker that exits slowly is killed: no warning for that
            nanny = logging.getLogger("distributed.nanny")
            level = nanny.level
            nanny.setLevel(logging.ERROR)
            try:
                cluster.close()
            finally:
                nanny.setLevel(level)
        return
    if scheduler in ("threads", "synchronous"):
        with dask.config.set(scheduler=scheduler):
            yield None
        return
    try:
        from distributed import Client  # optional: cellmixer[distributed]
    except ImportError:
        raise CellmixerError(f"--scheduler {scheduler}: a cluster address needs dask.distributed; pip install "
                             "'cellmixer[distributed]'.") from None
    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CellmixerError(f"--scheduler {scheduler}: no dask scheduler answers there ({reason}); start one "
                             "(`dask scheduler`) or leave --scheduler out for a local cluster.") from None
    with client:
        yield client


class _Quiet:
    """A stream that swallows the cluster's start-up chatter."""

    def write(self, text):
        return len(text)

    def flush(self):
        pass


# ------------------------------------------------------------------------------------------- models in workers


_LOADED: dict = {}
_LOADED_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A model that tasks can carry cheaply: its folder (loaded once per worker process) or, for a
    model made in Python, the model itself (sent with the tasks)."""

    folder: str | None
    device: str = "cpu"
    model: object = None

    @classmethod
    def of(cls, model, source=None) -> "ModelRef":
        if source is not None and Path(source, "config.json").is_file():
            return cls(str(Path(source).resolve()), str(model.device))
        return cls(None, str(model.device), model)

    def get(self, load: Callable):
        """The model, ``load(folder, device=...)`` once per process."""
        if self.folder is None:
            return self.model
        key = (self.folder, self.device)
        with _LOADED_LOCK:
            if key not in _LOADED:
                if _in_dask_worker():
                    torch.set_num_threads(1)  # one core per thread of a dask.distributed worker
                _LOADED[key] = load(self.folder, device=self.device)
            return _LOADED[key]


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker  # optional: cellmixer[distributed]
        get_worker()
    except (ImportError, ValueError):
        return False
    return True


# ------------------------------------------------------------------------------------------- the chunks


def _starts(chunks) -> list[int]:
    return [0, *np.cumsum(chunks).tolist()]


def _axis_chunks(length: int, chunk: int, margin: int) -> tuple[int, ...]:
    """Chunks of ``chunk`` pixels along an axis, the last one joined to the one before it when it is
    shorter than the margin (dask's overlap needs every chunk at least as large as the margin).

    >>> _axis_chunks(10000, 4096, 640), _axis_chunks(8400, 4096, 640), _axis_chunks(300, 4096, 640)
    ((4096, 4096, 1808), (4096, 4304), (300,))
    """
    sizes = [chunk] * (length // chunk) + ([length % chunk] if length % chunk else [])
    if len(sizes) > 1 and sizes[-1] < margin:
        sizes[-2:] = [sizes[-2] + sizes[-1]]
    return tuple(sizes) or (length,)


def drop_image_border(labels: np.ndarray, window: Window) -> np.ndarray:
    """``labels`` of a window's area without the objects that touch the edge of the whole image
    (as :func:`cellmixer.io.remove_border_objects` does on a whole image)."""
    (a0, a1), (b0, b1) = window.area
    height, width = window.shape
    edges = [labels[0] if a0 == 0 else None, labels[-1] if a1 == height else None,
             labels[:, 0] if b0 == 0 else None, labels[:, -1] if b1 == width else None]
    touching = np.unique(np.concatenate([e.ravel() for e in edges if e is not None] or [np.zeros(0, labels.dtype)]))
    touching = touching[touching > 0]
    return np.where(np.isin(labels, touching), 0, labels) if len(touching) else labels


def _chunk_key(block_id) -> str:
    return f"{block_id[0]}.{block_id[1]}"


def _run_chunk(region: np.ndarray, *, task: ChunkTask, statistics, shape, starts, margin: int, halo: int,
               work: str, threads: int | None = None, block_id=None) -> np.ndarray:
    """One chunk (``region``: the chunk with its margin, cut at the image's edges): predict, write its
    labels into the work array, then its marker. Returns a 1 x 1 block (the chunk's object count)."""
    if threads:  # torch's threads are counted per thread that calls it: set in the one running this chunk
        torch.set_num_threads(threads)
    i, j = block_id
    marker = Path(work) / "done" / f"{_chunk_key(block_id)}.json"
    if marker.is_file():  # done by an earlier run (or an earlier attempt of this task)
        return np.ones((1, 1), np.int64)
    y0, y1, x0, x1 = starts[0][i], starts[0][i + 1], starts[1][j], starts[1][j + 1]
    oy, ox = max(0, y0 - margin), max(0, x0 - margin)
    reach = halo if task.instances else 0
    area = ((max(0, y0 - reach), min(shape[0], y1 + reach)), (max(0, x0 - reach), min(shape[1], x1 + reach)))
    window = Window((oy, ox), tuple(shape), area)
    result = task.segment(np.asarray(region), window, statistics)
    labels, fields = result if isinstance(result, tuple) else (result, None)
    core = (slice(y0 - area[0][0], y1 - area[0][0]), slice(x0 - area[1][0], x1 - area[1][0]))
    if task.instances:
        local = region[window.local(region.shape)]
        values, record = _stitch(np.asarray(labels), fields, window, (y0, y1, x0, x1), core, local)
    else:
        values = np.asarray(labels, np.uint8)
        record = {"pixels": np.bincount(values.ravel(), minlength=task.num_classes).tolist()}
        values = values[core]
    array = zarr.open_array(str(Path(work) / "labels"), mode="r+")
    array[y0:y1, x0:x1] = values
    marker.parent.mkdir(exist_ok=True)
    with atomic_path(marker, overwrite=True) as tmp:
        tmp.write_text(json.dumps(record))
    return np.ones((1, 1), np.int64)


def _stitch(labels: np.ndarray, fields, window: Window, chunk, core, image: np.ndarray):
    """The chunk's objects named by their first pixel in the image (``row * width + col + 1``), and the
    record of its chunk: the objects it owns (first pixel inside it) with their measurements, every
    name present in it, and how many of its objects reach the edge of its halo (maybe cut)."""
    (a0, a1), (b0, b1) = window.area
    height, width = window.shape
    y0, y1, x0, x1 = chunk
    flat = labels.ravel()
    ids, first = np.unique(flat, return_index=True)
    keep = ids > 0
    ids, first = ids[keep], first[keep]
    rows, cols = np.divmod(first, labels.shape[1])
    names = np.zeros(int(labels.max(initial=0)) + 1, np.int64)
    names[ids] = (rows + a0).astype(np.int64) * width + (cols + b0) + 1
    named = names[labels]
    owned_mask = (rows + a0 >= y0) & (rows + a0 < y1) & (cols + b0 >= x0) & (cols + b0 < x1)
    owned = ids[owned_mask]
    in_core = np.unique(labels[core])
    in_core = in_core[in_core > 0]
    # Objects that touch the halo's outer edge (not the image's): they may reach beyond it.
    edge = np.zeros(labels.shape, bool)
    if a0 > 0:
        edge[0] = True
    if a1 < height:
        edge[-1] = True
    if b0 > 0:
        edge[:, 0] = True
    if b1 < width:
        edge[:, -1] = True
    cut = np.intersect1d(np.unique(labels[edge]), in_core)
    cut = cut[cut > 0]
    table = object_table(np.where(np.isin(labels, owned), labels, 0), image)
    for row in table:
        local = row["label"]
        row["label"] = int(names[local])
        row["centroid_y"] += a0
        row["centroid_x"] += b0
        for key, shift in (("bbox_min_row", a0), ("bbox_max_row", a0), ("bbox_min_col", b0), ("bbox_max_col", b0)):
            row[key] += shift
        for key, column in (fields or {}).items():
            value = column[local - 1]
            row[key] = value.item() if isinstance(value, np.generic) else value
    present = np.unique(named[core])
    record = {"owned": table, "present": present[present > 0].tolist(), "cut": len(cut)}
    return named[core], record


def _settings_token(**settings) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _prepare_work(work: Path, *, shape, chunk: int, dtype, token: str) -> None:
    """The work folder of a run: kept when it belongs to the same run (same image, chunks and
    settings: resume), else made anew."""
    stamp = work / "run.json"
    if stamp.is_file():
        with contextlib.suppress(ValueError, OSError):
            if json.loads(stamp.read_text()).get("token") == token:
                return
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    zarr.create_array(str(work / "labels"), shape=tuple(shape), chunks=(chunk, chunk), dtype=dtype, fill_value=0)
    (work / "done").mkdir()
    with atomic_path(stamp, overwrite=True) as tmp:
        tmp.write_text(json.dumps({"token": token}))


def predict_chunked(image: LazyImage | np.ndarray | da.Array, task: ChunkTask, output, *,
                    chunking: Chunking | None = None, pixel_size=None, overwrite: bool = False,
                    progress: bool = True, write_image: bool = True) -> dict:
    """Predict an image chunk by chunk and write its labels (and the image) as OME-Zarr.

    Parameters
    ----------
    image : LazyImage, dask or numpy array
        The (Y, X) image; a :class:`cellmixer.io.LazyImage` (:func:`cellmixer.io.open_lazy`) is
        read chunk by chunk, never whole.
    task : ChunkTask
        What the method does to a chunk.
    output : str or Path
        The OME-Zarr to write (``<name>.ome.zarr``): the image (unless ``write_image`` is False:
        then labels only, as an image of their own) with its pyramid, and ``labels/<task.name>``
        (and ``labels/classes`` when the objects have a class). A work folder next to it
        (``.<name>.ome.zarr.chunks``) holds finished chunks until the end: a stopped run resumes
        from them.
    chunking : Chunking, optional
        Chunk size, halo and scheduler (default ``Chunking()``); the scheduler must already be
        active (:func:`dask_scheduler`).
    pixel_size : (float, float), optional
        Pixel size (y, x) in micrometres (default: the image's own, where it has one).
    overwrite, progress : bool

    Returns
    -------
    dict
        ``objects`` (instances), ``objects_cut`` (objects that reached the edge of their chunk's halo:
        raise ``--halo`` if not 0), ``table`` (one row per object, ``OBJECT_FIELDS`` and the
        method's fields, in label order) or ``pixels`` (per class, semantic), ``chunks``,
        ``chunks_resumed``.
    """
    chunking = chunking or Chunking()
    output = Path(output)
    if output.exists() and not overwrite:
        raise CellmixerError(f"{output} already exists; pass --overwrite to replace it, or choose another output.")
    lazy = image if isinstance(image, LazyImage) else None
    data = lazy.data if lazy is not None else (image if isinstance(image, da.Array) else da.from_array(
        np.asarray(image), chunks=chunking.chunk_size))
    if data.ndim != 2:
        raise CellmixerError(f"image of shape {data.shape}: give one 2-D plane.")
    pixel_size = pixel_size or (lazy.pixel_size if lazy is not None else None)
    shape = tuple(int(n) for n in data.shape)
    halo = (task.halo if chunking.halo is None else chunking.halo) if task.instances else 0
    margin = task.tile_context + halo
    chunk = chunking.chunk_size
    if chunk < margin and max(shape) > chunk:
        raise CellmixerError(f"--chunk-size {chunk}: smaller than the margin each chunk needs (the network's tiles "
                             f"{task.tile_context} + halo {halo} = {margin} pixels); use --chunk-size {margin} or "
                             "more (or a smaller --halo or --tile-size).")
    data = data.rechunk(tuple(_axis_chunks(n, chunk, margin) for n in shape))
    starts = [_starts(c) for c in data.chunks]
    statistics = task.statistics(data)
    # The image a stopped run worked on: its path and modification time, or the data's own token.
    source = (f"{lazy.path.resolve()}@{lazy.path.stat().st_mtime_ns}" if lazy is not None else
              dask.base.tokenize(data))
    token = _settings_token(source=source, shape=shape, chunk=chunk, margin=margin, name=task.name,
                            statistics=statistics, key=task.key)
    work = output.with_name(f".{output.name}{WORK_SUFFIX}")
    try:
        _prepare_work(work, shape=shape, chunk=chunk, dtype=np.int64 if task.instances else np.uint8, token=token)
        done_before = len(list((work / "done").glob("*.json")))
        depth = {axis: margin if len(c) > 1 else 0 for axis, c in enumerate(data.chunks)}
        # meta given: dask would otherwise call _run_chunk on an empty array here to find it
        blocks = da.map_overlap(_run_chunk, data, depth=depth, boundary="none", trim=False, dtype=np.int64,
                                meta=np.empty((0, 0), np.int64),
                                chunks=tuple((1,) * len(c) for c in data.chunks), task=task, statistics=statistics,
                                shape=shape, starts=starts, margin=margin, halo=halo, work=str(work),
                                threads=_threads_per_chunk(data.npartitions))
        _compute_with_progress(blocks, progress=progress, total=blocks.npartitions)
        records = {p.stem: json.loads(p.read_text()) for p in (work / "done").glob("*.json")}
        labels = da.from_zarr(zarr.open_array(str(work / "labels"), mode="r"))
        summary = {"chunks": blocks.npartitions, "chunks_resumed": done_before}
        layers, properties = _final_layers(task, labels, records, summary)
        write_ome_zarr(output, data if write_image else next(iter(layers.values())), labels=layers,
                       pixel_size=pixel_size, label_properties=properties, chunk_size=min(chunk, 1024),
                       overwrite=overwrite)
    except OSError as exc:
        what = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise CellmixerError(f"{output}: cannot write ({what}); free space and run the same command again: finished "
                             "chunks are kept.") from None
    shutil.rmtree(work, ignore_errors=True)
    if summary.get("objects_cut"):
        print(f"{output}: {summary['objects_cut']} objects reached the edge of their chunk's halo and may be split at "
              f"chunk borders; raise --halo (now {halo}).", file=sys.stderr)
    return summary


def _final_layers(task: ChunkTask, labels: da.Array, records: dict, summary: dict):
    """The label layers to write and their NGFF properties, and the summary (tables, counts)."""
    if not task.instances:
        pixels = np.sum([r["pixels"] for r in records.values()], axis=0)
        summary["pixels"] = pixels.tolist()
        return {task.name: labels}, None
    table = sorted((row for r in records.values() for row in r["owned"]), key=lambda row: row["label"])
    present = np.unique(np.concatenate([np.asarray(r["present"], np.int64) for r in records.values()] or
                                       [np.zeros(0, np.int64)]))
    owned = np.asarray([row["label"] for row in table], np.int64)
    # Every name gets a label: owned objects in raster order of their first pixel, then any piece of an
    # object that no chunk saw whole (counted in objects_cut).
    names = np.concatenate([owned, np.setdiff1d(present, owned)])
    order = np.argsort(names, kind="stable")
    sorted_names = names[order]
    new = np.empty(len(names), np.int64)
    new[order] = np.arange(1, len(names) + 1)
    new_sorted = new[order]
    for row, label in zip(table, new[: len(table)]):
        row["label"] = int(label)
    dtype = np.int32 if len(names) >= 65535 else np.uint16

    def relabel(block):
        out = np.zeros(block.shape, dtype)
        found = block > 0
        out[found] = new_sorted[np.searchsorted(sorted_names, block[found])]
        return out

    layers = {task.name: labels.map_blocks(relabel, dtype=dtype)}
    properties = None
    if table and "class" in table[0]:
        classes = np.zeros(len(names) + 1, np.uint8)
        for row in table:
            classes[row["label"]] = row["class"]
        layers["classes"] = layers[task.name].map_blocks(lambda block: classes[block], dtype=np.uint8)
        names_of = task.class_names or []
        properties = {task.name: [{"label-value": row["label"], "class": names_of[row["class"] - 1]
                                   if row["class"] - 1 < len(names_of) else int(row["class"])} for row in table]}
    summary.update(objects=len(table), objects_cut=int(sum(r["cut"] for r in records.values())), table=table)
    return layers, properties


def _threads_per_chunk(chunks: int) -> int | None:
    """Torch threads for each chunk when the chunks run in this process: its threads shared among the
    chunks in flight (all of them for a lone chunk). None on a dask.distributed cluster (its workers
    have one thread each)."""
    try:
        from distributed import get_client  # optional: cellmixer[distributed]
        get_client()
        return None
    except (ImportError, ValueError):
        pass
    in_flight = 1 if dask.config.get("scheduler", None) == "synchronous" else min(
        chunks, dask.config.get("num_workers", None) or os.cpu_count() or 1)
    return max(1, torch.get_num_threads() // max(1, in_flight))


def _compute_with_progress(array: da.Array, *, progress: bool, total: int) -> None:
    """Compute ``array`` (a 1 x 1 block per chunk) on the active scheduler, with a bar over chunks."""
    bar = progress_bar(total=total, desc="chunks", unit="chunk", enabled=progress)
    try:
        from distributed import as_completed, get_client  # optional: cellmixer[distributed]
        client = get_client()
    except (ImportError, ValueError):
        client = None
    if client is None:
        from dask.callbacks import Callback

        class Bar(Callback):
            def _posttask(self, key, result, dsk, state, id):
                if isinstance(key, tuple) and str(key[0]).startswith("_run_chunk"):
                    bar.update(1)

        threads = torch.get_num_threads()
        try:
            with Bar():
                array.compute()
        finally:  # a chunk run in this thread (synchronous) set its share
            torch.set_num_threads(threads)
    else:
        futures = client.compute(array.to_delayed().ravel().tolist())
        for _ in as_completed(futures):
            bar.update(1)
        client.gather(futures)
    bar.close()


def object_fields() -> tuple[str, ...]:
    """The columns every object of a chunked run has: :data:`cellmixer.ops.OBJECT_FIELDS` and mean intensity."""
    return (*OBJECT_FIELDS, "mean_intensity")


# ------------------------------------------------------------------------------------------- for the methods


def predict_semantic_chunk(region: np.ndarray, window: Window, statistics, *, model: ModelRef,
                           tiling: Tiling) -> np.ndarray:
    """The class map of a window's area (the :class:`ChunkTask` of semantic models)."""
    return model.get(SegmentationModel.load).predict(region, tiling=tiling, window=window, statistics=statistics)


def semantic_task(model: SegmentationModel, tiling: Tiling, *, source=None, name: str = "classes") -> ChunkTask:
    """The :class:`ChunkTask` of a semantic model: its class map, chunk by chunk (``source``: its folder,
    which worker processes load once, instead of receiving the model with every chunk)."""
    ref = ModelRef.of(model, source)
    return ChunkTask(functools.partial(predict_semantic_chunk, model=ref, tiling=tiling), name=name,
                     instances=False, tile_context=model_context(model, tiling),
                     statistics=model.input_statistics, num_classes=model.num_classes,
                     class_names=model.classes, key=_model_key(model, source, tiling))


def model_context(model: SegmentationModel, tiling: Tiling) -> int:
    """How far beyond an area ``model``'s tiles reach, in image pixels (its tile side; for a model that
    works at an input scale, the tile side at the image's scale)."""
    if model.config["normalization"].get("method") == "tile":
        tiling = dataclasses.replace(tiling, tile_size=model.config["normalization"]["tile_size"])
    return math.ceil(tile_context(model.network, tiling) / model.input_scale)


def _model_key(model: SegmentationModel, source, *settings) -> str:
    weights = Path(source, "weights.safetensors") if source is not None else None
    stamp = weights.stat().st_mtime_ns if weights is not None and weights.is_file() else id(model)
    return json.dumps([str(source), stamp, *[repr(s) for s in settings]])


def open_large(item, *, channel=None, chunking: Chunking) -> LazyImage | None:
    """The input ``item`` (a path or a :class:`cellmixer.io.InputImage`) as a lazy image when it is to be
    predicted in chunks (a Zarr or OME-Zarr, or a TIFF larger than two chunks on a side), else None: read
    it whole, as usual (so are the planes of z-stacks and time series). ``channel``: an index or a name."""
    path = Path(getattr(item, "path", item))
    plane = getattr(item, "plane", None)
    if plane is not None and plane.suffix:
        return None
    if not is_zarr(path) and path.suffix.lower() not in (".tif", ".tiff"):
        return None
    if not is_zarr(path) and max(_tiff_plane_shape(path, plane)) <= 2 * chunking.chunk_size:
        return None
    index = plane.image.channel_index(channel) if plane is not None else channel
    lazy = open_lazy(path, channel=index)
    if lazy.pixel_size is None and plane is not None and plane.image.pixel_size is not None:
        lazy = dataclasses.replace(lazy, pixel_size=tuple(plane.image.pixel_size), unit="micrometer")
    return lazy


def _tiff_plane_shape(path: Path, plane) -> tuple[int, int]:
    """(Y, X) of a TIFF, from its metadata: what the input already knows, else the file's first page."""
    if plane is not None:
        return tuple(plane.image.shape)
    with tifffile.TiffFile(path) as tif:
        return tuple(tif.pages[0].shape[:2])


def zarr_output(out, stem: str) -> Path:
    """``<out>/<stem>.ome.zarr``, the OME-Zarr of a large image (``a.ome`` -> ``a.ome.zarr``, not ``a.ome.ome.zarr``)."""
    return Path(out) / f"{stem.removesuffix('.ome')}.ome.zarr"


def overview(path, name: str, *, max_side: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """The image and the label image ``name`` of an OME-Zarr at the first pyramid level no larger than
    ``max_side`` on a side, as numpy arrays: for overlays of images too large to show whole."""
    for level in range(64):
        labels = read_ome_zarr_labels(path, name, level=level)
        if max(labels.shape) <= max_side:
            image = open_lazy(path, level=level).data
            return np.asarray(image, np.float32), labels.compute()
    raise CellmixerError(f"{path}: no pyramid level of at most {max_side} pixels.")


class ChunkedRun:
    """The dask side of one command: which inputs are large (predicted in chunks), and the dask scheduler,
    started at its first use (a large image, or the images of a plate) and closed at the end
    (``with ChunkedRun(chunking) as run: ...``). ``channel``: the channel the command reads;
    ``chunked``: False for a command that reads every image whole (only its plates go to the cluster)."""

    def __init__(self, chunking: Chunking | None = None, *, channel=None, chunked: bool = True):
        self.chunking = chunking or Chunking()
        self.channel = channel
        self.chunked = chunked
        self._stack = contextlib.ExitStack()
        self._started = False
        self._client = None

    def __reduce__(self):
        # A copy sent to a worker with a command's work (a plate on a cluster) never starts a scheduler
        # there: the client keeps the large images.
        return ChunkedRun, (self.chunking,), {"channel": self.channel, "chunked": self.chunked}

    def __enter__(self) -> "ChunkedRun":
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def open(self, item, *, channel=None) -> LazyImage | None:
        """See :func:`open_large` (``channel`` defaults to the run's); None for a command not ``chunked``."""
        if not self.chunked:
            return None
        return open_large(item, channel=self.channel if channel is None else channel, chunking=self.chunking)

    def start(self):
        """Start the scheduler (once); returns its ``dask.distributed`` client, or None (threads)."""
        if not self._started:
            self._client = self._stack.enter_context(dask_scheduler(self.chunking.scheduler))
            self._started = True
        return self._client

    def image_client(self):
        """The client whose workers take the images of a plate, one task per image (started here), or None:
        the images go one after the other in this process. Images go to workers when ``--scheduler`` names
        worker processes (``local`` or an address), not by default: one process already keeps the cores
        busy on a few images (torch uses them all), and a cluster costs seconds to start and a copy of
        the model per worker."""
        if self.chunking.scheduler in (None, "threads", "synchronous"):
            return None
        return self.start()

    def predict(self, image, task: ChunkTask, output, **options) -> dict:
        """:func:`predict_chunked` on this run's scheduler."""
        self.start()
        return predict_chunked(image, task, output, chunking=self.chunking, **options)
