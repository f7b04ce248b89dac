"""Input images of a command: files and folders (searched recursively), each with its output name."""

from __future__ import annotations

from pathlib import Path

from .._errors import CellmixerError
from ._dataset import list_images
from ._read import IMAGE_SUFFIXES


def collect_inputs(inputs, *, pattern: str = "*") -> list[tuple[Path, str]]:
    """``(path, output stem)`` for image files and folders (searched recursively).

    Images found in a folder keep their sub-folder path in the stem (``sub/a`` -> ``sub__a``) so
    that files of the same name in different folders do not collide.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    found: list[tuple[Path, str]] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            images = list_images(item, pattern=pattern)
            if not images:
                raise CellmixerError(f"{item}: no images (.tif, .tiff, .png, .jpg) found; check the folder or --pattern.")
            found += [(p, "__".join(p.relative_to(item).with_suffix("").parts)) for p in images]
        elif item.is_file():
            if item.suffix.lower() not in IMAGE_SUFFIXES:
                raise CellmixerError(f"{item}: not an image file (.tif, .tiff, .png, .jpg, .jpeg).")
            found.append((item, item.stem))
        else:
            raise CellmixerError(f"{item}: no such file or folder.")
    stems = [s for _, s in found]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise CellmixerError(f"two inputs would both write '{duplicates[0]}_labels.tif'; rename one or predict "
                             "them into separate output folders.")
    return found
