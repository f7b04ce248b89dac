"""Reading instance label images written by any tool (grey integer labels or colour-coded objects)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from skimage.measure import label

from .._errors import CellmixerError
from ._read import decode

LABEL_SUFFIXES = (".tif", ".tiff", ".png")


def _read_raw_labels(path: Path) -> np.ndarray:
    """The stored values, without any conversion that would change labels (palette indices stay)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        return tifffile.imread(path)
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(im, dtype=np.uint16)
        if im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        return np.asarray(im)  # "P": the palette indices; "1", "L", "I", "F", "LA", "RGB", "RGBA" as stored


def _whole_numbers(values: np.ndarray, path: Path) -> np.ndarray:
    if values.dtype == bool:
        return values.astype(np.uint8)
    if values.dtype.kind == "f":
        if not np.isfinite(values).all() or not np.array_equal(values, np.round(values)):
            raise CellmixerError(f"{path}: label image holds non-integer {values.dtype} values; a label image "
                                 "must hold whole numbers (0 background, 1, 2, ... objects), e.g. a probability "
                                 "map must be thresholded and labelled first.")
        return values.astype(np.int64)
    if values.dtype.kind not in "iu":
        raise CellmixerError(f"{path}: pixel type {values.dtype} is not supported; save labels as integers.")
    return values


def _to_int32(labels: np.ndarray) -> np.ndarray:
    """int32 labels; values beyond int32 are renumbered 1..n in their order (0 stays 0)."""
    if labels.size == 0 or int(labels.max()) <= np.iinfo(np.int32).max:
        return labels.astype(np.int32)
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:
        inverse = inverse + 1
    return inverse.reshape(labels.shape).astype(np.int32)


def read_labels(path, *, connectivity: int = 2) -> np.ndarray:
    """Read an instance label image (0 background, one value per object) as int32.

    * A single-channel integer image (TIFF of any integer type, 8/16-bit or palette PNG) is
      returned as stored: its values are the object labels (a palette PNG gives its indices).
    * An RGB or RGBA image is *colour-coded*: each object is a connected component of pixels of
      one colour, black (or fully transparent) is background. Colours may repeat between objects
      that do not touch. This reads the BBBC039 masks: their channel 0 holds a few values
      (1, 2, 3: a map colouring, touching nuclei get different values) and channels 1 and 2 are
      0, so their objects are the connected components of each value of channel 0, as the
      dataset's authors decode them (Caicedo et al. 2019: ``skimage.morphology.label`` of
      channel 0, 8-connected): 23,615 nuclei in the 200 masks.
    * A float image is accepted when all its values are whole numbers.

    Parameters
    ----------
    path : str or Path
        A TIFF or PNG file. JPEG is refused: its compression changes label values.
    connectivity : {1, 2}
        Connectivity of the colour components: 2 (8-connected, default) or 1 (4-connected). On
        BBBC039 the two differ only in two masks, where 8-connectivity joins a one- or two-pixel
        fragment to the nucleus it touches diagonally instead of counting it as a nucleus.
        Single-channel images are not relabelled, so it does not apply to them.

    Returns
    -------
    (H, W) int32 ndarray
        Labels beyond the int32 range are renumbered 1..n in their order.

    Raises
    ------
    CellmixerError
        If the file is missing or unreadable, not 2-D (single channel or RGB(A)), holds negative
        or non-integer values.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from PIL import Image
    >>> rgba = np.zeros((4, 7, 4), np.uint8); rgba[..., 3] = 255
    >>> rgba[1:3, 0:2, 0] = 1; rgba[1:3, 2:4, 0] = 2; rgba[1:3, 5:7, 0] = 1   # same value twice, apart
    >>> path = os.path.join(tempfile.mkdtemp(), "mask.png")
    >>> Image.fromarray(rgba).save(path)
    >>> read_labels(path)
    array([[0, 0, 0, 0, 0, 0, 0],
           [1, 1, 2, 2, 0, 3, 3],
           [1, 1, 2, 2, 0, 3, 3],
           [0, 0, 0, 0, 0, 0, 0]], dtype=int32)
    """
    path = Path(path)
    if connectivity not in (1, 2):
        raise CellmixerError(f"connectivity={connectivity!r}: use 1 (4-connected) or 2 (8-connected).")
    if not path.is_file():
        raise CellmixerError(f"{path}: no such label image; check the path.")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        raise CellmixerError(f"{path}: JPEG compression changes label values; save label images as PNG or TIFF.")
    raw = decode(path, _read_raw_labels, "label image", "TIFF or PNG")
    raw = np.squeeze(np.asarray(raw))
    if raw.ndim == 3 and raw.shape[-1] not in (2, 3, 4) and raw.shape[0] in (3, 4):
        raw = np.moveaxis(raw, 0, -1)  # planar RGB(A) TIFF
    if raw.ndim == 3 and raw.shape[-1] == 2:
        # Grey with alpha: the grey values are the labels, transparent pixels background.
        raw = np.where(raw[..., 1] > 0, raw[..., 0], 0)
    if raw.ndim == 2:
        labels = _whole_numbers(raw, path)
        if labels.size and labels.dtype.kind == "i" and labels.min() < 0:
            raise CellmixerError(f"{path}: label image has negative values (minimum {labels.min()}); use 0 for "
                                 "background and positive integers for objects.")
        return _to_int32(labels)
    if raw.ndim != 3 or raw.shape[-1] not in (3, 4):
        raise CellmixerError(f"{path}: label image has shape {raw.shape}; expected a 2-D label image or an RGB(A) "
                             "colour-coded one (split stacks into single images).")
    return _colour_components(raw, path, connectivity)


def _colour_components(rgba: np.ndarray, path: Path, connectivity: int) -> np.ndarray:
    colours = _whole_numbers(rgba[..., :3], path)
    if colours.size and colours.min() < 0:
        raise CellmixerError(f"{path}: colour label image has negative values; save it as 8- or 16-bit RGB.")
    top = int(colours.max()) if colours.size else 0
    if top >= 1 << 21:
        raise CellmixerError(f"{path}: colour channel values up to {top}; colour-coded label images must be 8- "
                             "or 16-bit RGB(A).")
    c = colours.astype(np.int64)
    key = (c[..., 0] << 42) | (c[..., 1] << 21) | c[..., 2]
    if rgba.shape[-1] == 4:
        key[rgba[..., 3] == 0] = 0
    return label(key, background=0, connectivity=connectivity).astype(np.int32)


# ------------------------------------------------------------------ label images as arrays
def as_label_image(labels, name: str) -> np.ndarray:
    """Validate a label image: integer (or bool, or integral float) values >= 0."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or not np.array_equal(labels, np.round(labels)):
            raise CellmixerError(f"{name}: a label image must hold whole numbers (got non-integer "
                                 f"{labels.dtype} values); pass integer labels, 0 for background.")
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iu":
        raise CellmixerError(f"{name}: a label image must hold integers, not {labels.dtype}; "
                             "pass integer labels, 0 for background.")
    if labels.size and labels.dtype.kind == "i" and labels.min() < 0:
        raise CellmixerError(f"{name}: label image has negative values; use 0 for background and "
                             "positive integers for objects.")
    return labels


def label_index(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each pixel's label among the labels present (0 stays 0) and those labels."""
    flat = labels.ravel()
    top = int(flat.max()) if flat.size else 0
    if top <= max(4 * flat.size, 1 << 16):
        # A lookup table is a single pass and avoids sorting the whole image.
        present = np.bincount(flat, minlength=top + 1) > 0
        present[0] = True
        ids = np.flatnonzero(present)
        lut = np.cumsum(present) - 1
        return lut[flat], ids
    ids, inverse = np.unique(flat, return_inverse=True)
    if ids[0] != 0:
        ids = np.concatenate([[0], ids])
        inverse = inverse + 1
    return inverse.ravel(), ids


def relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    """Number the objects 1..n in order of their old labels; int32."""
    present = np.bincount(labels.ravel()) > 0
    present[0] = False
    lut = np.zeros(len(present), np.int32)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    return lut[labels]


def remove_border_objects(labels, *, buffer: int = 0) -> np.ndarray:
    """Set to 0 every object with a pixel within ``buffer`` pixels of the image edge.

    Labels of the other objects are kept as they are (not renumbered). Matuszewski & Ranefall
    remove objects touching the edge from both ground truth and prediction before scoring.

    Examples
    --------
    >>> remove_border_objects(np.array([[1, 0, 0], [0, 0, 0], [0, 2, 0], [0, 0, 0]]))
    array([[0, 0, 0],
           [0, 0, 0],
           [0, 2, 0],
           [0, 0, 0]])
    """
    labels = as_label_image(labels, "labels")
    if labels.size == 0:
        return labels.copy()
    b = buffer + 1
    edge = np.ones(labels.shape, bool)
    edge[tuple(slice(b, -b) if n > 2 * b else slice(0, 0) for n in labels.shape)] = False
    touching = np.unique(labels[edge])
    touching = touching[touching > 0]
    return np.where(np.isin(labels, touching), 0, labels).astype(labels.dtype)
