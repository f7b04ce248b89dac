"""Reading images, finding datasets, and writing results safely."""

from ._dataset import ImageDataset, discover_dataset, find_mask, list_images
from ._geojson import instance_features, mask_polygons
from ._inputs import collect_inputs
from ._labels import as_label_image, label_index, read_labels, relabel_consecutive, remove_border_objects
from ._overlay import instance_colors, instance_overlay
from ._read import IMAGE_SUFFIXES, check_not_constant, read_image
from ._render import add_legend, class_colors, overlay_labels, to_uint8
from ._write import (
    LOCK_FILE,
    atomic_path,
    check_overwrite,
    lock_folder,
    locks_outputs,
    new_file_mode,
    output_locks,
    prepare_output_dir,
    remove_stale_parts,
    temporary_path,
    unlock_folder,
    write_csv,
    write_json,
    write_png,
    write_text,
    write_tiff,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "LOCK_FILE",
    "lock_folder",
    "locks_outputs",
    "new_file_mode",
    "output_locks",
    "remove_stale_parts",
    "temporary_path",
    "unlock_folder",
    "ImageDataset",
    "add_legend",
    "as_label_image",
    "label_index",
    "relabel_consecutive",
    "remove_border_objects",
    "atomic_path",
    "check_not_constant",
    "check_overwrite",
    "class_colors",
    "collect_inputs",
    "discover_dataset",
    "find_mask",
    "instance_colors",
    "instance_features",
    "instance_overlay",
    "list_images",
    "mask_polygons",
    "overlay_labels",
    "prepare_output_dir",
    "read_image",
    "read_labels",
    "to_uint8",
    "write_csv",
    "write_json",
    "write_png",
    "write_text",
    "write_tiff",
]
