"""The nuclear stain paired with an image: a channel of the same file, a file found by name, or a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._errors import CellmixerError
from ._read import read_image


def paired_path(image_path, nuclear) -> Path:
    """The nuclear-stain file of ``image_path``.

    ``nuclear`` is a folder of images named like the images, ``(old, new)`` (the image's file name
    with ``old`` replaced by ``new``: ``("phase", "DAPI")`` pairs ``a_phase.tif`` with
    ``a_DAPI.tif``), or a ``{image: nuclear image}`` dict.

    Examples
    --------
    >>> paired_path("plate/A1_phase.tif", ("phase", "DAPI")).as_posix()
    'plate/A1_DAPI.tif'
    """
    image_path = Path(image_path)
    if isinstance(nuclear, dict):
        for key in (image_path, str(image_path), image_path.name):
            if key in nuclear:
                return Path(nuclear[key])
        raise CellmixerError(f"--nuclear: no nuclear image given for {image_path}.")
    if isinstance(nuclear, (tuple, list)) and len(nuclear) == 2:
        old, new = (str(v) for v in nuclear)
        if old not in image_path.name:
            raise CellmixerError(f"--nuclear-replace {old} {new}: '{old}' is not in the file name {image_path.name}; "
                                 "give the part of the image's name to replace by the nuclear image's.")
        return image_path.with_name(image_path.name.replace(old, new))
    folder = Path(nuclear)
    if not folder.is_dir():
        raise CellmixerError(f"--nuclear {folder}: no such folder; give the folder of nuclear images named like the "
                             "images, or --nuclear-replace OLD NEW.")
    for candidate in [folder / image_path.name, *sorted(folder.glob(image_path.stem + ".*"))]:
        if candidate.is_file():
            return candidate
    raise CellmixerError(f"--nuclear {folder}: no nuclear image named like {image_path.name}.")


def nuclear_as_json(nuclear):
    """``nuclear`` (as :func:`paired_path` takes it) for a settings file: ``[old, new]``, a folder, or None.

    >>> nuclear_as_json(("phase", "DAPI")), nuclear_as_json(None)
    (['phase', 'DAPI'], None)
    """
    if isinstance(nuclear, (tuple, list)):
        return list(nuclear)
    return None if nuclear is None else str(nuclear)


def read_nuclear(image, *, nuclear=None, nuclear_channel=None, shape=None) -> tuple[np.ndarray, str] | None:
    """The nuclear stain of ``image`` (a path, or an input of a command: a plane of a stack takes
    the same plane of the stain's channel) and where it was read; None when neither source is given.

    ``nuclear_channel``: a channel (index or name) of the image file itself; ``nuclear``: see
    :func:`paired_path`. With ``shape``, a stain of another size is refused, naming both files.
    """
    image_path = Path(getattr(image, "path", image))
    if nuclear is not None and nuclear_channel is not None:
        raise CellmixerError("--nuclear-channel and --nuclear/--nuclear-replace: give one way to find the nuclear "
                             "stain.")
    if nuclear_channel is not None:
        source = image if hasattr(image, "read") else image_path
        stain = read_image(source, channel=nuclear_channel, option="--nuclear-channel")
        where = f"{image_path} channel {nuclear_channel}"
    elif nuclear is not None:
        stain_file = paired_path(image_path, nuclear)
        if not stain_file.is_file():
            raise CellmixerError(f"{stain_file}: no such nuclear image (for {image_path.name}); check "
                                 "--nuclear-replace or --nuclear.")
        stain, where = read_image(stain_file), str(stain_file)
    else:
        return None
    if shape is not None and stain.shape != tuple(shape):
        raise CellmixerError(f"{where}: nuclear stain of {stain.shape[0]}x{stain.shape[1]} pixels for the "
                             f"{shape[0]}x{shape[1]} image {image_path.name}; give the stain of the same field.")
    return stain, where
