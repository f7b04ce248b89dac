"""Finding images of homogeneous cultures: ``ROOT/<class name>/**/<image>``."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import CellmixerError
from ._read import IMAGE_SUFFIXES

MASK_SUFFIX = "_masks"


def list_images(folder, *, pattern: str = "*", mask_suffix: str = MASK_SUFFIX) -> list[Path]:
    """Image files below ``folder`` whose name matches ``pattern``, sorted.

    Hidden files and folders and masks (``*<mask_suffix>.*``) are skipped.
    """
    folder = Path(folder)
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if (path.suffix.lower() in IMAGE_SUFFIXES and fnmatch.fnmatch(path.name, pattern) and path.is_file()
                and not path.stem.endswith(mask_suffix)):
            found.append(path)
    return sorted(found)


@dataclass
class ImageDataset:
    """Images with an image-level class label each.

    Attributes
    ----------
    classes : list of str
        Class names in a fixed order; class ``k`` (1-based in label images) is ``classes[k - 1]``.
    root : Path or None
        The folder the images were found in.
    paths : list of Path
    labels : list of int
        1-based class index of each image (0 is background in label images).
    """

    classes: list[str]
    root: Path | None = None
    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def class_name(self, i: int) -> str:
        return self.classes[self.labels[i] - 1]


def discover_dataset(root, *, classes=None, pattern: str = "*", min_classes: int = 1) -> ImageDataset:
    """Find ``ROOT/<class>/**/*.{tif,tiff,png,jpg,jpeg}``; the folder name is the class label.

    Parameters
    ----------
    root : str or Path
        Folder with one sub-folder per cell type (homogeneous cultures).
    classes : sequence of str, optional
        Class folders to use, in this order. Default: every sub-folder holding images, sorted by
        name, so the class list is the same on every machine.
    pattern : str
        Only files whose name matches this glob pattern, e.g. ``'*phase*'`` or ``'*_w1*'``.
    min_classes : int
        Fewest classes accepted (training needs 2).

    Examples
    --------
    >>> import numpy as np, tifffile, tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ["k562", "jurkat"]:
    ...     (root / name).mkdir()
    ...     tifffile.imwrite(root / name / "well1.tif", np.zeros((8, 8), np.uint8))
    >>> discover_dataset(root).classes
    ['jurkat', 'k562']
    """
    root = Path(root)
    if not root.is_dir():
        raise CellmixerError(f"{root}: no such data folder; give a folder with one sub-folder per cell type.")
    if classes is None:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise CellmixerError(
                f"{root}: has no class sub-folders; put the images of each cell type in ROOT/<type>/."
            )
    else:
        folders = [root / c for c in classes]
        for f in folders:
            if not f.is_dir():
                raise CellmixerError(f"{f}: class folder not found; check --classes or the data folder.")
    dataset = ImageDataset(classes=[f.name for f in folders], root=root)
    for k, folder in enumerate(folders, start=1):
        images = list_images(folder, pattern=pattern)
        if not images:
            which = "images (.tif, .tiff, .png, .jpg)" if pattern == "*" else f"images matching --pattern {pattern}"
            raise CellmixerError(f"{folder}: class folder holds no {which}; add images or remove the folder.")
        dataset.paths.extend(images)
        dataset.labels.extend([k] * len(images))
    if len(dataset.classes) < min_classes:
        raise CellmixerError(
            f"{root}: found {len(dataset.classes)} class folder(s) ({', '.join(dataset.classes)}); "
            f"at least {min_classes} cell types are needed, one sub-folder each."
        )
    return dataset


def find_mask(image_path, *, masks_dir=None, mask_suffix: str = MASK_SUFFIX) -> Path | None:
    """The mask file of an image: ``<stem><mask_suffix>.<ext>`` next to it or in ``masks_dir``."""
    image_path = Path(image_path)
    folder = Path(masks_dir) if masks_dir is not None else image_path.parent
    for ext in IMAGE_SUFFIXES:
        for candidate in (folder / f"{image_path.stem}{mask_suffix}{ext}", folder / f"{image_path.stem}{ext}"):
            if candidate.is_file() and candidate != image_path:
                return candidate
    return None
