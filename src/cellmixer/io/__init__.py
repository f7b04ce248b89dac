"""Reading images, finding datasets, and writing results safely."""

from ._dataset import ImageDataset, discover_dataset, find_mask, list_images
from ._labels import read_labels
from ._read import IMAGE_SUFFIXES, check_not_constant, read_image
from ._render import add_legend, class_colors, overlay_labels, to_uint8
from ._write import (
    atomic_path,
    check_overwrite,
    prepare_output_dir,
    write_csv,
    write_json,
    write_png,
    write_text,
    write_tiff,
)

__all__ = [
    "IMAGE_SUFFIXES", "ImageDataset", "add_legend", "atomic_path", "check_not_constant",
    "check_overwrite", "class_colors", "discover_dataset", "find_mask", "list_images",
    "overlay_labels", "prepare_output_dir", "read_image", "read_labels", "to_uint8", "write_csv", "write_json",
    "write_png", "write_text", "write_tiff",
]
