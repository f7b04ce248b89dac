"""Where the cell type of an image or an instance comes from: the annotation, the file name, or a table."""

from __future__ import annotations

import csv
from pathlib import Path

from ..._errors import CellmixerError

ANNOTATION, PREFIX = "annotation", "prefix"
PREFIX_SEPARATOR = "_"


def prefix_class(file_name: str) -> str:
    """The part of a file name before its first underscore: LIVECell's cell line.

    >>> prefix_class("A172_Phase_C7_1_00d20h00m_4.tif")
    'A172'
    """
    stem = Path(file_name).name
    if PREFIX_SEPARATOR not in stem or stem.startswith(PREFIX_SEPARATOR):
        raise CellmixerError(f"{file_name}: no '{PREFIX_SEPARATOR}' in the file name, so no class prefix; name the "
                             "file <class>_<rest> or give the classes in a CSV (--class-from table.csv).")
    return stem.split(PREFIX_SEPARATOR, 1)[0]


def read_class_table(path) -> dict[str, str]:
    """``file name -> class`` from a CSV with columns ``image`` (or ``file_name``) and ``class`` (or ``type``).

    Only the file's name counts (``plates/a.tif`` and ``a.tif`` are the same image).
    """
    path = Path(path)
    if not path.is_file():
        raise CellmixerError(f"--class-from {path}: no such file; give 'annotation', 'prefix' or a CSV file.")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        image_key = next((k for k in ("image", "file_name") if k in fields), None)
        class_key = next((k for k in ("class", "type") if k in fields), None)
        if image_key is None or class_key is None:
            raise CellmixerError(f"{path}: needs the columns 'image' and 'class' (found {', '.join(fields) or 'none'}).")
        table = {}
        for row in reader:
            name, value = Path(row[image_key] or "").name, (row[class_key] or "").strip()
            if not name or not value:
                raise CellmixerError(f"{path}: line {reader.line_num} has an empty image or class; fill it or remove it.")
            table[name] = value
    return table


class ClassSource:
    """The class of an image (and of every instance in it) from one of three sources.

    Parameters
    ----------
    source : str or Path
        ``'annotation'`` (each annotation's COCO category), ``'prefix'`` (the file name up to its
        first underscore, as LIVECell names its images), or a CSV file (``image``, ``class``).
    """

    def __init__(self, source):
        self.source = str(source)
        self.table = None
        if self.source not in (ANNOTATION, PREFIX):
            self.table = read_class_table(source)

    @property
    def per_annotation(self) -> bool:
        return self.source == ANNOTATION

    def image_class(self, file_name: str) -> str:
        """The class of an image (not defined for ``'annotation'``)."""
        if self.source == PREFIX:
            return prefix_class(file_name)
        if self.table is None:
            raise ValueError("annotation classes belong to instances, not images")
        name = Path(file_name).name
        if name not in self.table:
            raise CellmixerError(f"{name}: not in the class table {self.source}; add a row for it.")
        return self.table[name]


def check_known(found, classes, *, where: str) -> None:
    """Raise when a class found in the data is not one of ``classes`` (a model's or the user's list)."""
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise CellmixerError(f"{where}: class '{unknown[0]}' is not one of {', '.join(classes)}; add it to --classes "
                             "or leave those images out.")
