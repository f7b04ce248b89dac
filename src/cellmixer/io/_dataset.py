"""Finding images of homogeneous cultures: ``ROOT/<class name>/**/<image>``; what is never an input."""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._errors import CellmixerError
from .._progress import note
from ._read import IMAGE_SUFFIXES, INPUT_SUFFIXES, open_image

MASK_SUFFIX = "_masks"
# Never inputs, in every command: the files cellmixer writes (a name ends with one of these, per-plane
# outputs such as a_t003_z002_labels.tif included) ...
OUTPUT_SUFFIXES = ("_labels", "_types", "_overlay", "_probabilities", "_points", "_classes", "_qc", "_masks",
                   "_likelihood", "_ignore")
# ... and ground truth as other tools and data sets name it: Cellpose's *_cp_masks and *_masks, *_mask,
# DeepCell's feature_0.png, the Cell Tracking Challenge's man_seg000.tif and man_track000.tif.
GROUND_TRUTH_SUFFIXES = ("_mask", "_cp_masks", "_cp_outlines", "_gt")
GROUND_TRUTH_NAMES = re.compile(r"feature_\d+|man_seg\d*|man_track\d*")


def skipped_reason(path) -> str | None:
    """Why ``path`` is not an input image: ``"output"`` (a file cellmixer writes), ``"ground truth"``
    (a mask name of cellmixer, Cellpose, DeepCell or the Cell Tracking Challenge), or None.

    Examples
    --------
    >>> skipped_reason("a_t003_z002_labels.tif"), skipped_reason("f1/feature_0.png"), skipped_reason("a.tif")
    ('output', 'ground truth', None)
    """
    stem = Path(path).name
    for suffix in INPUT_SUFFIXES + (".ome",):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    if stem.endswith(OUTPUT_SUFFIXES) and not stem.endswith(MASK_SUFFIX):
        return "output"
    if stem.endswith((MASK_SUFFIX, *GROUND_TRUTH_SUFFIXES)) or GROUND_TRUTH_NAMES.fullmatch(stem):
        return "ground truth"
    return None


def is_inside(path, folder) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (links resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def list_images(folder, *, pattern: str = "*", mask_suffix: str = MASK_SUFFIX, exclude=()) -> list[Path]:
    """Image files below ``folder`` whose name matches ``pattern``, sorted.

    Hidden files and folders, masks (``*<mask_suffix>.*``), the files cellmixer writes and ground
    truth (:func:`skipped_reason`) and anything inside the folders ``exclude`` (an output folder
    inside the input folder) are skipped. A ``.zarr`` folder is one image.
    """
    folder = Path(folder)
    excluded = [Path(e).resolve() for e in exclude if Path(e).exists()]
    found = []
    stack = [folder]
    while stack:
        current = stack.pop()
        if any(current.resolve() == e for e in excluded):
            continue
        for path in current.iterdir():
            if path.name.startswith("."):
                continue
            suffix = path.suffix.lower()
            if path.is_dir() and suffix != ".zarr":
                stack.append(path)
            elif (suffix in INPUT_SUFFIXES and fnmatch.fnmatch(path.name, pattern)
                  and not path.stem.endswith(mask_suffix) and skipped_reason(path) is None):
                found.append(path)
    return sorted(found)


def pattern_hint(folder, pattern: str, **options) -> str:
    """When ``pattern`` finds no image in ``folder`` only because of case (``*phase*`` and
    ``Phase_000.png``), the words that say so for an error message (``''`` otherwise)."""
    if pattern == pattern.lower() and pattern == pattern.upper():
        return ""
    folded = [p for p in list_images(folder, pattern="*", **options)
              if fnmatch.fnmatch(p.name.lower(), pattern.lower())]
    if not folded:
        return ""
    return (f"; --pattern is case-sensitive: {len(folded)} image{'s match' if len(folded) > 1 else ' matches'} "
            f"{pattern!r} in another case, such as {folded[0].name}")


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


def discover_dataset(root, *, classes=None, pattern: str = "*", min_classes: int = 1, exclude=()) -> ImageDataset:
    """Find ``ROOT/<class>/**/<image>``; the folder name is the class label.

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
    exclude : sequence of paths
        Folders that are neither classes nor hold inputs: the command's output folder, when it
        lies inside ``root``. The files cellmixer writes and ground truth are skipped by name
        (:func:`skipped_reason`); a class folder holding only such files is refused.

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
    excluded = [Path(e) for e in exclude]
    if classes is None:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                         and p.suffix.lower() != ".zarr" and not any(is_inside(p, e) for e in excluded))
        if not folders:
            raise CellmixerError(
                f"{root}: has no class sub-folders; put the images of each cell type in ROOT/<type>/."
            )
    else:
        folders = [root / c for c in classes]
        for f in folders:
            if not f.is_dir():
                raise CellmixerError(f"{f}: class folder not found; check --classes or the data folder.")
            if any(is_inside(f, e) for e in excluded):
                raise CellmixerError(f"{f}: class folder is the output folder; choose an output folder outside it.")
    dataset = ImageDataset(classes=[f.name for f in folders], root=root)
    for k, folder in enumerate(folders, start=1):
        images = list_images(folder, pattern=pattern, exclude=excluded)
        if not images:
            which = "images" if pattern == "*" else f"images matching --pattern {pattern}"
            outputs = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and skipped_reason(p)]
            if outputs:
                raise CellmixerError(f"{folder}: class folder holds no {which}, only outputs or ground truth (such as "
                                     f"{outputs[0].name}); move it out of {root} or choose the classes with --classes.")
            hint = pattern_hint(folder, pattern, exclude=excluded)
            raise CellmixerError(f"{folder}: class folder holds no {which} ({', '.join(INPUT_SUFFIXES)}){hint}; add "
                                 "images, check --pattern, or remove the folder.")
        dataset.paths.extend(images)
        dataset.labels.extend([k] * len(images))
    if len(dataset.classes) < min_classes:
        raise CellmixerError(
            f"{root}: found {len(dataset.classes)} class folder(s) ({', '.join(dataset.classes)}); "
            f"at least {min_classes} cell types are needed, one sub-folder each."
        )
    return dataset


def describe_images(groups: dict) -> list[str]:
    """One line per group of image files (a class, or all inputs): how many, their sizes, channels and
    pixel sizes, from the files' metadata (no pixels are read): what to check before training.

    Examples
    --------
    >>> import numpy as np, tifffile, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.tif"
    >>> tifffile.imwrite(path, np.zeros((2, 8, 10), np.uint16))
    >>> describe_images({"jurkat": [path]})
    ['jurkat: 1 image, 10x8 (1), 2 channels (0, 1)']
    """
    lines = []
    for name, paths in groups.items():
        sizes, channels, pixels, stacks = Counter(), Counter(), Counter(), 0
        for path in paths:
            image = open_image(path)
            sizes[f"{image.sizes['X']}x{image.sizes['Y']}"] += 1
            names = ", ".join(image.channel_names)
            channels[f"{image.sizes['C']} channel{'s' if image.sizes['C'] > 1 else ''}"
                     + (f" ({names})" if image.sizes["C"] > 1 else "")] += 1
            if image.pixel_size is not None:
                pixels[f"{image.pixel_size[1]:g} um/pixel"] += 1
            stacks += image.sizes["Z"] > 1 or image.sizes["T"] > 1
        parts = [f"{len(paths)} image{'s' if len(paths) != 1 else ''}",
                 ", ".join(f"{k} ({n})" for k, n in sizes.most_common(3)) + (", ..." if len(sizes) > 3 else ""),
                 "; ".join(channels)]
        parts += ["; ".join(pixels)] if pixels else []
        parts += [f"{stacks} stacks (z or t)"] if stacks else []
        lines.append(f"{name}: {', '.join(parts)}")
    return lines


def warn_if_mask(image: np.ndarray, name) -> None:
    """Tell the user (on stderr) when an input image looks like a mask (:func:`looks_like_mask`)."""
    if looks_like_mask(image):
        note(f"{name}: holds two values only ({', '.join(f'{v:g}' for v in np.unique(image)[:2])}): it looks like a "
             "mask, not an image of cells; rename it *_masks.* if it is one.")


def looks_like_mask(image: np.ndarray) -> bool:
    """Whether an image holds two values only (0/1, 0/255, ...): more likely a mask than a micrograph.

    Examples
    --------
    >>> mask = np.zeros((32, 32)); mask[8:20, 5:9] = 255
    >>> looks_like_mask(mask), looks_like_mask(mask + np.arange(32))
    (True, False)
    """
    values = np.unique(np.asarray(image)[:: max(1, image.shape[0] // 256), :: max(1, image.shape[1] // 256)])
    return len(values) == 2 and image.size > 16


def find_mask(image_path, *, masks_dir=None, mask_suffix: str = MASK_SUFFIX) -> Path | None:
    """The mask file of an image: ``<stem><mask_suffix>.<ext>`` next to it or in ``masks_dir``."""
    image_path = Path(image_path)
    folder = Path(masks_dir) if masks_dir is not None else image_path.parent
    for ext in IMAGE_SUFFIXES:
        for candidate in (folder / f"{image_path.stem}{mask_suffix}{ext}", folder / f"{image_path.stem}{ext}"):
            if candidate.is_file() and candidate != image_path:
                return candidate
    return None
