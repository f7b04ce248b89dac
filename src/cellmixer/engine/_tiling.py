"""Sliding-window prediction that streams tiles, so image size is limited by disk, not memory."""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np
import torch

from .._errors import out_of_memory
from .._progress import progress_bar
from .._settings import check_settings, setting
from ._device import PRECISIONS, autocast, module_device, to_device

# Sliding-window tile side of networks without an input size of their own (ViT models have one: 518).
DEFAULT_TILE_SIZE = 512

PRECISION_HELP = ("network arithmetic; auto = bfloat16 where the CPU supports it natively (about 3x faster) and on "
                  "GPUs that support it, float16 on other GPUs, else float32")


@dataclasses.dataclass(frozen=True)
class Tiling:
    """How an image goes through the network: the sliding window and the arithmetic of prediction.

    Every instance is checked when it is made, with one-line errors naming the command-line option
    (``--overlap 1.5: must be between 0 and 0.9.``).

    Attributes
    ----------
    tile_size : int, 'auto' or None
        Side of the square tiles in pixels, at least 16 (rounded down to the network's pooling
        grid); ``'auto'`` is the network's input size (518 for ViT models, 512 for U-Nets);
        ``None`` predicts the whole image in one pass (needs memory for the whole image).
    overlap : float
        Fraction of a tile shared with its neighbours, in [0, 0.9]; overlapping predictions are
        blended.
    batch_size : int
        Tiles per forward pass.
    precision : {'fp32', 'auto', 'bf16', 'fp16'}
        Network arithmetic (see :func:`cellmixer.engine.resolve_precision`).
    augment : bool
        Test-time augmentation: average the predictions of the 8 flips and rotations (8x slower).

    Examples
    --------
    >>> Tiling(overlap=0.5).batch_size
    4
    >>> Tiling(batch_size=0)
    Traceback (most recent call last):
    ...
    cellmixer._errors.CellmixerError: --batch-size 0: must be at least 1.
    """

    tile_size: int | str | None = setting(
        "auto", "tile side in pixels; auto = the model's input size: 518 for ViT models, 512 for U-Nets",
        check=lambda size: _tile_size_need(size))
    overlap: float = setting(0.25, "fraction of a tile shared with neighbours", at_least=0, at_most=0.9)
    batch_size: int = setting(4, "tiles per forward pass", at_least=1)
    precision: str = setting("fp32", PRECISION_HELP, choices=PRECISIONS)
    augment: bool = setting(False, "test-time augmentation: average over the 8 flips and rotations (8x slower)")

    def __post_init__(self):
        check_settings(self)


def _tile_size_need(size) -> str | None:
    """What ``tile_size`` must be, or None when it is fine: 'auto', None or a whole number >= 16."""
    if size in (None, "auto") or (isinstance(size, numbers.Integral) and not isinstance(size, bool) and size >= 16):
        return None
    return "must be at least 16 pixels, or 'auto' (the model's input size)"


def as_tiling(tiling: Tiling | None = None, **options) -> Tiling:
    """``tiling`` (default: ``Tiling()``) with the fields in ``options`` changed, checked.

    >>> as_tiling(overlap=0.5) == Tiling(overlap=0.5)
    True
    >>> as_tiling(Tiling(batch_size=8), overlap=0).batch_size
    8
    """
    if tiling is None:
        return Tiling(**options)
    if not isinstance(tiling, Tiling):
        raise TypeError(f"tiling: expected a Tiling, got {type(tiling).__name__}")
    return dataclasses.replace(tiling, **options) if options else tiling


def auto_tile_size(network) -> int:
    """The tile side that ``tile_size='auto'`` means for ``network``: its input size (ViT models), else 512."""
    return int(getattr(network, "input_size", DEFAULT_TILE_SIZE))


def tile_statistics(tile: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of a tile (the standard deviation at least 1e-6)."""
    return float(tile.mean()), max(float(tile.std()), 1e-6)


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at most ``stride`` between them.

    >>> tile_starts(10, 4, 3)
    [0, 3, 6]
    >>> tile_starts(3, 4, 3)
    [0]
    """
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def blend_window(height: int, width: int) -> np.ndarray:
    """Weights that fall smoothly from 1 at a tile's centre to near 0 at its edges.

    Tile edges see zero padding instead of the real neighbourhood; weighting them down makes
    the blended result nearly independent of where the tiles fall.
    """
    def ramp(n: int) -> np.ndarray:
        u = (np.arange(n, dtype=np.float64) + 0.5) / n
        return np.maximum(np.sin(np.pi * u) ** 2, 1e-3)

    return np.outer(ramp(height), ramp(width)).astype(np.float32)


def _softmax(network, logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities; a network with several heads (``output_groups``, e.g. instance classes and
    cell types) gets one softmax per head over its own channels. A one-channel network regresses a
    map (the cell-centre detector's likelihood): its output is returned as it is."""
    groups = getattr(network, "output_groups", None)
    if logits.shape[1] == 1:
        return logits.float()
    if groups is None:
        return torch.softmax(logits.float(), dim=1)
    return torch.cat([torch.softmax(part.float(), dim=1) for part in torch.split(logits, list(groups), dim=1)], dim=1)


def stack_channels(images) -> np.ndarray:
    """(B, C, H, W) float32 network input from B images of one channel (H, W) or of C channels (C, H, W)."""
    stack = np.stack(images)
    return (stack[:, None] if stack.ndim == 3 else stack).astype(np.float32, copy=False)


def _run(network, tiles: list[np.ndarray], precision: str = "fp32", augment: bool = False,
         batch_size: int | None = None) -> np.ndarray:
    """Softmax of the network on a batch of tiles; with ``augment``, averaged over the 8 flips and
    rotations of the square (each prediction turned back before averaging).

    A batch shorter than ``batch_size`` is filled up with blank tiles (their output dropped): every
    forward pass then has the same shape, and a tile's result does not depend on which tiles share
    its batch (oneDNN and cuDNN choose their algorithm by shape), so chunks of an image and the
    whole image give bit-identical probabilities.
    """
    count = len(tiles)
    if batch_size is not None and count < batch_size:
        tiles = [*tiles, *[np.zeros_like(tiles[0])] * (batch_size - count)]
    device = module_device(network)
    x = to_device(stack_channels(tiles), device)
    with torch.inference_mode(), autocast(precision, device):
        if not augment:
            return _softmax(network, network(x.contiguous(memory_format=torch.channels_last))).cpu().numpy()[:count]
        total = 0
        for k in range(4):
            for flip in (False, True):
                t = torch.rot90(x, k, dims=(2, 3))
                t = torch.flip(t, dims=(3,)) if flip else t
                p = _softmax(network, network(t.contiguous(memory_format=torch.channels_last)))
                p = torch.flip(p, dims=(3,)) if flip else p
                total = total + torch.rot90(p, -k, dims=(2, 3))
        return (total / 8).cpu().numpy()[:count]


def _read_tile(image, y: int, x: int, height: int, width: int, offset: float | None,
               scale: float | None) -> np.ndarray:
    """A normalized tile; where it reaches past the image's bottom or right edge, mirrored image rows/columns.

    ``offset=None`` normalizes the tile by its own mean and standard deviation (of its image
    pixels), as models trained on per-tile normalized crops expect.
    """
    tile = np.asarray(image[..., y:y + height, x:x + width], dtype=np.float32)
    if offset is None:
        offset, scale = tile_statistics(tile)
    tile = (tile - np.float32(offset)) / np.float32(scale)
    pad_h, pad_w = height - tile.shape[-2], width - tile.shape[-1]
    if pad_h or pad_w:
        mode = "reflect" if pad_h < tile.shape[-2] and pad_w < tile.shape[-1] else "symmetric"
        tile = np.pad(tile, ((0, 0),) * (tile.ndim - 2) + ((0, pad_h), (0, pad_w)), mode=mode)
    return tile


@dataclasses.dataclass(frozen=True)
class Window:
    """Where an array sits in a larger image, and which part of that image is wanted from it.

    Prediction on a window places its tiles where they fall on the whole image, so that the
    result on ``area`` is bit for bit the whole image's: the array must hold the rows and columns of
    every tile that touches ``area`` (``area`` widened by one tile side, see :func:`tile_context`).

    Attributes
    ----------
    origin : (int, int)
        Row and column of the array's first pixel in the image.
    shape : (int, int)
        The whole image's shape.
    area : ((int, int), (int, int))
        ``((row_start, row_stop), (col_start, col_stop))`` of the wanted result, in image pixels.

    Examples
    --------
    >>> w = Window.whole((300, 400))
    >>> w.area, w.area_shape
    (((0, 300), (0, 400)), (300, 400))
    """

    origin: tuple[int, int]
    shape: tuple[int, int]
    area: tuple[tuple[int, int], tuple[int, int]]

    @classmethod
    def whole(cls, shape) -> "Window":
        """The whole of an image of ``shape``."""
        return cls((0, 0), tuple(shape), ((0, shape[0]), (0, shape[1])))

    @property
    def area_shape(self) -> tuple[int, int]:
        (a0, a1), (b0, b1) = self.area
        return a1 - a0, b1 - b0

    def local(self, array_shape) -> tuple[slice, slice]:
        """The slices of ``area`` in the coordinates of the array (of ``array_shape``)."""
        (a0, a1), (b0, b1) = self.area
        oy, ox = self.origin
        if a0 < oy or b0 < ox or a1 > oy + array_shape[0] or b1 > ox + array_shape[1]:
            raise ValueError(f"window: area {self.area} is not inside the array at {self.origin} of "
                             f"shape {tuple(array_shape)}")
        return slice(a0 - oy, a1 - oy), slice(b0 - ox, b1 - ox)


def tile_context(network, tiling: Tiling) -> int:
    """How far beyond a window's area the tiles that touch it reach: its tile side (the receptive field
    of the prediction, which is bounded by the tile)."""
    multiple = getattr(network, "size_multiple", 1)
    size = auto_tile_size(network) if tiling.tile_size == "auto" else tiling.tile_size
    return 0 if size is None else max(multiple, size // multiple * multiple)


def predict_probabilities(network, image: np.ndarray, *, offset: float | None, scale: float | None, num_classes: int,
                          tiling: Tiling | None = None, probabilities=None, progress: bool = False,
                          window: Window | None = None) -> np.ndarray:
    """Class labels of ``image`` (argmax of blended softmax), optionally filling ``probabilities``.

    The image is extended at its bottom and right (mirrored) to a multiple of the network's
    ``size_multiple`` (the U-Net's pooling factor), and tiles start on that grid. Every tile then
    pools exactly the pixels the whole image would, so tiled and whole-image predictions differ
    only by the zero padding at tile edges, which the blending weights down to near nothing.

    Parameters
    ----------
    network : torch.nn.Module
        Maps (B, C, h, w) inputs to (B, num_classes, h, w) logits; in eval mode.
    image : (H, W) or (C, H, W) array
        Raw image (may be memory-mapped), or C input channels; each tile is normalized on the fly as
        ``(tile - offset) / scale``, or by its own mean and standard deviation when ``offset`` is
        None.
    num_classes : int
        Output channels of the network.
    tiling : Tiling, optional
        Tile size (``'auto'``: :func:`auto_tile_size`; ``None``: the whole image in one pass),
        overlap, batch size, precision and test-time augmentation; default ``Tiling()``.
    probabilities : array of shape (num_classes, h, w), optional
        Filled with the blended class probabilities (may be a memory-mapped file); (h, w) is the
        image's shape, or the window's area.
    progress : bool
        Show a progress bar over tiles.
    window : Window, optional
        ``image`` is part of a larger image: predict ``window.area`` of it, with the tiles (and
        batches) the whole image would have there, so that the result equals the whole image's
        to the bit. Default: the whole of ``image``.

    Returns
    -------
    labels : (h, w) uint8 ndarray
    """
    tiling = Tiling() if tiling is None else tiling
    what = f"predicting a {image.shape[-2]}x{image.shape[-1]} image" + (
        " in one pass" if tiling.tile_size is None else f" in batches of {tiling.batch_size} tiles")
    with out_of_memory(what, "give a smaller --tile-size or --batch-size"):
        return _predict_probabilities(network, image, offset=offset, scale=scale, num_classes=num_classes,
                                      tiling=tiling, probabilities=probabilities, progress=progress, window=window)


def _predict_probabilities(network, image, *, offset, scale, num_classes, tiling, probabilities, progress, window):
    window = Window.whole(image.shape[-2:]) if window is None else window
    tile_size = auto_tile_size(network) if tiling.tile_size == "auto" else tiling.tile_size
    precision, augment, batch_size = tiling.precision, tiling.augment, tiling.batch_size
    height, width = window.shape
    (a0, a1), (b0, b1) = window.area
    oy, ox = window.origin
    multiple = getattr(network, "size_multiple", 1)
    padded_h, padded_w = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    labels = np.empty(window.area_shape, np.uint8)
    if tile_size is None or (padded_h <= tile_size and padded_w <= tile_size):
        if window.origin != (0, 0) or tuple(image.shape[-2:]) != (height, width):
            raise ValueError("window: an image predicted in one pass must be given whole")
        tile = _read_tile(image, 0, 0, padded_h, padded_w, offset, scale)
        p = _run(network, [tile], precision, augment)[0][:, a0:a1, b0:b1]
        labels[:] = p.argmax(axis=0)
        if probabilities is not None:
            probabilities[:] = p
        return labels
    tile = max(multiple, tile_size // multiple * multiple)
    th, tw = min(tile, padded_h), min(tile, padded_w)
    stride = lambda t: max(multiple, round(t * (1 - tiling.overlap) / multiple) * multiple)  # noqa: E731
    # The whole image's tiles; of them, those that touch the area.
    ys = [y for y in tile_starts(padded_h, th, stride(th)) if y < a1 and y + th > a0]
    xs = [x for x in tile_starts(padded_w, tw, stride(tw)) if x < b1 and x + tw > b0]
    rows, cols = image.shape[-2:]
    if (ys[0] < oy or xs[0] < ox or (ys[-1] + th > oy + rows and oy + rows < height)
            or (xs[-1] + tw > ox + cols and ox + cols < width)):
        raise ValueError(f"window: the array at {window.origin} of shape {image.shape} does not hold the tiles of "
                         f"area {window.area}; widen it by tile_context()")
    left = xs[0]
    window_weights = blend_window(th, tw)
    # Accumulators hold one band of `th` rows starting at the current tile row; finished rows are
    # emitted and the band moves down, so memory grows with the area's width only. Tiles go through
    # the network in batches in row-major order, a batch may span two tile rows.
    acc = np.zeros((num_classes, th, xs[-1] + tw - left), np.float32)
    weight = np.zeros((th, xs[-1] + tw - left), np.float32)
    order = [(row, x) for row in range(len(ys)) for x in xs]
    state = {"row": 0}

    def finish_row(row: int) -> None:
        """Emit the rows of tile row ``row`` that no later tile touches, and move the band down."""
        top = ys[row]
        bottom = ys[row + 1] if row + 1 < len(ys) else top + th
        lo, hi = max(top, a0), min(bottom, height, a1)
        if hi > lo:
            p = acc[:, lo - top:hi - top, b0 - left:b1 - left] / weight[lo - top:hi - top, b0 - left:b1 - left]
            labels[lo - a0:hi - a0] = p.argmax(axis=0)
            if probabilities is not None:
                probabilities[:, lo - a0:hi - a0] = p
        done = min(bottom - top, th)
        acc[:, : th - done] = acc[:, done:]
        acc[:, th - done:] = 0
        weight[: th - done] = weight[done:]
        weight[th - done:] = 0

    bar = progress_bar(total=len(order), desc="tiles", unit="tile", enabled=progress)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        tiles = [_read_tile(image, ys[row] - oy, x - ox, th, tw, offset, scale) for row, x in batch]
        for (row, x), p in zip(batch, _run(network, tiles, precision, augment, batch_size)):
            while state["row"] < row:
                finish_row(state["row"])
                state["row"] += 1
            acc[:, :, x - left:x - left + tw] += p * window_weights
            weight[:, x - left:x - left + tw] += window_weights
        bar.update(len(batch))
    finish_row(len(ys) - 1)
    bar.close()
    return labels


def _linear_index(n_out: int, n_in: int, start: int = 0, stop: int | None = None):
    """Source indices and weights of linear interpolation from ``n_in`` to ``n_out`` samples
    (pixel centres aligned, as skimage.transform.resize does)."""
    out = np.arange(start, n_out if stop is None else stop, dtype=np.float64)
    src = np.clip((out + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def upsample_probabilities(small: np.ndarray, shape: tuple[int, int], *, probabilities=None,
                           band: int = 256) -> np.ndarray:
    """Resize (C, h, w) class probabilities to ``shape`` bilinearly, band by band, and take the argmax.

    Parameters
    ----------
    small : (C, h, w) array
    shape : (H, W)
    probabilities : array of shape (C, H, W), optional
        Filled with the resized probabilities.

    Returns
    -------
    labels : (H, W) uint8 ndarray
    """
    height, width = shape
    labels = np.empty(shape, np.uint8)
    x0, x1, wx = _linear_index(width, small.shape[2])
    for top in range(0, height, band):
        y0, y1, wy = _linear_index(height, small.shape[1], top, min(top + band, height))
        rows = small[:, y0] * (1 - wy)[None, :, None] + small[:, y1] * wy[None, :, None]
        p = rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx
        labels[top:top + len(y0)] = p.argmax(axis=0)
        if probabilities is not None:
            probabilities[:, top:top + len(y0)] = p
    return labels
