"""Reading microscopy images into float32 arrays."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from .._errors import CellmixerError, is_out_of_memory, out_of_memory

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def _read_raw(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return tifffile.imread(path)
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(im, dtype=np.uint16)
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        return np.asarray(im)


def decode(path: Path, reader, what: str, formats: str):
    """``reader(path)``, with any decoder failure turned into a one-line error naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return reader(path)
    except Exception as exc:  # any decoder failure is a bad file for the user
        if is_out_of_memory(exc):
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CellmixerError(f"{path}: cannot read this {what} ({reason}); is the file complete and a "
                             f"{formats}?") from None


def _channel_axis(shape: tuple[int, ...]) -> int | None:
    """Guess where the channels are in a 3-D array: last (H, W, C) or first (C, H, W)."""
    if len(shape) == 2:
        return None
    if shape[-1] <= 4:
        return len(shape) - 1
    if shape[0] <= 8:
        return 0
    return None


def read_image(path, *, channel: int | None = None, channel_option: str = "--channel") -> np.ndarray:
    """Read a 2-D microscopy image as float32, keeping its original intensity values.

    Parameters
    ----------
    path : str or Path
        A TIFF (any compression tifffile + imagecodecs read, LZW included), PNG (8 or 16 bit) or
        JPEG file.
    channel : int, optional
        Which channel of a multi-channel image to use. Channels are found on the last axis of
        (H, W, C) images (C <= 4, e.g. RGB) or the first axis of (C, H, W) stacks (C <= 8, common
        for TIFF). ``None`` averages the colour channels of RGB(A) images (alpha dropped) and
        refuses other multi-channel stacks.
    channel_option : str
        What set ``channel``, for messages (``'--nuclear-channel'``, a model's configuration).

    Returns
    -------
    image : (H, W) float32 ndarray

    Raises
    ------
    CellmixerError
        If the file is missing, unreadable, not 2-D, the channel is out of range, or it holds
        NaN or infinite values.

    Examples
    --------
    >>> import numpy as np, tifffile, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "cells.tif")
    >>> tifffile.imwrite(path, np.arange(12, dtype=np.uint16).reshape(3, 4), compression="lzw")
    >>> read_image(path).dtype, read_image(path).shape
    (dtype('float32'), (3, 4))
    """
    path = Path(path)
    if not path.is_file():
        raise CellmixerError(f"{path}: no such image file; check the path.")
    with out_of_memory(str(path), "the image is too large for this machine; split it into smaller fields"):
        return _read_image(path, channel, channel_option)


def _read_image(path: Path, channel, channel_option: str) -> np.ndarray:
    raw = decode(path, _read_raw, "image", "TIFF, PNG or JPEG")
    raw = np.squeeze(np.asarray(raw))
    if raw.ndim == 3:
        axis = _channel_axis(raw.shape)
        if axis is None:
            raise CellmixerError(
                f"{path}: image has shape {raw.shape}; only 2-D images or 2-D images with up to "
                "8 channels are supported (split z-stacks and time series into single images)."
            )
        raw = np.moveaxis(raw, axis, -1)
        n = raw.shape[-1]
        if channel is not None:
            if not -n <= channel < n:
                raise CellmixerError(
                    f"{path}: {channel_option} {channel} is out of range; this image has {n} channels "
                    f"(use 0 to {n - 1})."
                )
            raw = raw[..., channel]
        elif axis == 2 and n in (3, 4):
            raw = raw[..., :3].astype(np.float32).mean(axis=-1)
        else:
            raise CellmixerError(
                f"{path}: image has {n} channels; choose one with --channel (0 to {n - 1})."
            )
    elif raw.ndim == 2:
        if channel not in (None, 0, -1):
            raise CellmixerError(
                f"{path}: {channel_option} {channel} is out of range; this image has a single channel "
                "(use 0, or no channel)."
            )
    else:
        raise CellmixerError(
            f"{path}: image has shape {raw.shape}; only 2-D images (optionally with channels) are supported."
        )
    if raw.dtype == bool:
        raw = raw.astype(np.uint8)
    if not np.issubdtype(raw.dtype, np.number) or np.iscomplexobj(raw):
        raise CellmixerError(f"{path}: pixel type {raw.dtype} is not supported; save it as integer or float.")
    image = raw.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        raise CellmixerError(f"{path}: image contains NaN or infinite values; replace them before use.")
    return image


def check_not_constant(image: np.ndarray, name) -> None:
    """Raise a :class:`CellmixerError` naming ``name`` if ``image`` has a single value."""
    if image.size == 0 or float(image.max()) == float(image.min()):
        raise CellmixerError(f"{name}: image is constant (every pixel has the same value); remove it.")
