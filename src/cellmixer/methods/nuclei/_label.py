"""The nuclei labelling command: classical nucleus labels of every image, with tables and pictures."""

from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..._errors import CellmixerError
from ..._progress import progress_bar
from ..._version import __version__
from ...engine import InstanceWriter, write_labels
from ...io import (
    InputImage,
    check_overwrite,
    check_unique_stems,
    collect_inputs,
    locks_outputs,
    prepare_output_dir,
    write_csv,
    write_json,
)
from ...ops import (
    CLASSICAL_CONFIGURATIONS,
    CLASSICAL_METHODS,
    ClassicalSettings,
    classical_labels,
    identify_primary_objects,
)

SUMMARY_FILE = "labels.csv"
SETTINGS_FILE = "labels.json"
# Settings that the method and the command's own arguments set; not accepted among **options.
_FIXED = ("image", "declump", "dividing_lines", "diameter_range")


def _option_names() -> tuple[str, ...]:
    return tuple(name for name in inspect.signature(identify_primary_objects).parameters if name not in _FIXED)


def _check_options(method: str, diameter_range, options: dict) -> None:
    """Refuse an unknown method or option, and bad option values, before any file is touched."""
    if method not in CLASSICAL_METHODS:
        raise CellmixerError(f"--method {method}: unknown; choose one of {', '.join(CLASSICAL_METHODS)}.")
    valid = _option_names()
    for name in options:
        if name in ("declump", "dividing_lines"):
            raise CellmixerError(f"option {name!r}: set by --method; choose the method instead "
                                 f"({', '.join(CLASSICAL_METHODS)}).")
        if name not in valid:
            raise CellmixerError(f"option {name!r} is not a setting of identify_primary_objects; "
                                 f"choose from {', '.join(valid)}.")
    # A run on a tiny image checks every value (identify_primary_objects validates its options
    # first; values of the wrong type only fail when they are used).
    probe = np.zeros((8, 8))
    probe[2:6, 2:6] = 1.0
    try:
        identify_primary_objects(probe, diameter_range=diameter_range, **options)
    except (TypeError, ValueError) as exc:
        settings = ", ".join(f"{k}={v!r}" for k, v in options.items()) or f"diameter_range={diameter_range!r}"
        raise CellmixerError(f"{settings}: bad option value ({exc}); give numbers, e.g. "
                             "threshold_correction_factor=1.2.") from None


def _plan(inputs, pattern: str, out: Path, project: str | None, pixel_size) -> list[InputImage]:
    """The planes to label; sub-folders of input folders are mirrored in ``out`` (stems hold them)."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not items:
        raise CellmixerError("no inputs: give image files or folders of images.")
    planned: list[InputImage] = []
    for item in items:
        for found in collect_inputs(item, pattern=pattern, exclude=[out]):
            stem = Path(found.key).with_suffix("").as_posix() if Path(item).is_dir() else found.path.stem
            planned += replace(found, stem=stem).planes(project=project, pixel_size=pixel_size)
    return check_unique_stems(planned)


@locks_outputs
def label_nuclei(inputs, output, *, method: str = ClassicalSettings.method, pattern: str = "*",
                 channel: int | str | None = None, project: str | None = None, pixel_size=None,
                 diameter_range=ClassicalSettings.diameter_range, overlays: bool = True, overwrite: bool = False,
                 progress: bool = True, **options) -> list[dict]:
    """Label the nuclei of every image with CellProfiler's IdentifyPrimaryObjects, and write the results.

    The classical labels that Matuszewski & Ranefall (WSCG 2021) train their U-Net on. Writes,
    for each image ``<name>`` (sub-folders of input folders are mirrored in ``output``):

    * the files of :class:`cellmixer.engine.InstanceWriter`: ``<name>_labels.tif`` (0
      background, objects 1..n; uint16, or int32 from 65536 objects; with the pixel size),
      ``<name>_objects.csv`` (one row per object: :func:`cellmixer.ops.cell_measurements`; just
      the header when none is found), ``<name>_rois.zip`` (Fiji), ``<name>.geojson`` (QuPath),
      ``<name>_overlay.png`` (the image with each object's outline in colour, unless
      ``overlays`` is False);
    * for ``method="consensus"``, ``<name>_ignore.tif``: uint8, 1 on the clusters where the
      configurations disagree about the number of objects (to be ignored in training);

    and ``coco_dataset.json``, ``labels.csv`` (one row per image: ``file`` (the path relative to
    the input folder), ``objects``, ``foreground_fraction`` and, for the consensus,
    ``ignored_fraction``) and ``labels.json`` (method and settings). Each plane of a z-stack or time
    series is labelled (``<name>_t003_z002_...``), or with ``project`` the projection over z.

    Parameters
    ----------
    inputs : path or list of paths
        Image files and/or folders (searched recursively; files ending in ``_masks`` and files
        inside ``output`` are skipped).
    output : str or Path
        Folder for the results (created).
    method : str
        ``"shape/intensity"`` (the paper's best), ``"intensity/shape"``, ``"shape/shape"``,
        ``"intensity/intensity"`` (declumping / dividing lines of
        :func:`identify_primary_objects`), or ``"consensus"``: the three best configurations
        combined by :func:`consensus_labels` (objects of "shape/intensity" where all three agree).
    pattern : str
        Only files in input folders whose name matches this glob pattern.
    channel : int or str, optional
        Channel of multi-channel images: an index or a name (see :func:`cellmixer.io.read_image`).
    project : {'max', 'mean'}, optional
        Label the projection over z of z-stacks instead of each plane.
    pixel_size : float, optional
        Micrometres per pixel, for images whose files do not say.
    diameter_range : (int, int)
        Typical nucleus diameter in pixels (min, max); the paper uses 10-50 for BBBC039.
    overlays, overwrite, progress : bool
        Write the overlay PNGs; replace existing results; show a progress bar.
    **options
        Further settings of :func:`identify_primary_objects`, e.g.
        ``threshold_correction_factor=1.2`` or ``discard_border=True``.

    Returns
    -------
    list of dict
        The rows of ``labels.csv``.

    Raises
    ------
    CellmixerError
        For an unknown method or option, a bad option value, missing or unreadable images, or
        results that exist already (unless ``overwrite``); all checked before anything is written.

    Examples
    --------
    >>> import tempfile, pathlib, tifffile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> yy, xx = np.mgrid[:64, :64]
    >>> image = np.where((yy - 30) ** 2 + (xx - 30) ** 2 < 100, 5000, 500).astype(np.uint16)
    >>> tifffile.imwrite(folder / "nuclei.tif", image)
    >>> rows = label_nuclei(folder / "nuclei.tif", folder / "labels", progress=False)
    >>> rows[0]["objects"], sorted(p.name for p in (folder / "labels").iterdir())
    (1, ['coco_dataset.json', 'labels.csv', 'labels.json', 'nuclei.geojson', 'nuclei_labels.tif', 'nuclei_objects.csv', 'nuclei_overlay.png', 'nuclei_rois.zip'])
    """
    _check_options(method, diameter_range, options)
    consensus = method == "consensus"
    out = prepare_output_dir(output)
    found = _plan(inputs, pattern, out, project, pixel_size)
    writer = InstanceWriter(out, category="nucleus", overlays=overlays, overwrite=overwrite)
    planned = [out / SUMMARY_FILE, out / SETTINGS_FILE, *(out / name for name in writer.run_outputs)]
    for item in found:
        planned += [out / name for name in writer.outputs(item.stem)]
        planned += [out / f"{item.stem}_ignore.tif"] if consensus else []
    check_overwrite(planned, overwrite=overwrite)

    rows = []
    for item in progress_bar(found, desc="labelling nuclei", unit="image", enabled=progress):
        image = item.read(channel)
        labels, ignore = classical_labels(image, method=method, diameter_range=diameter_range, **options)
        written = writer.write(item, image, labels)
        writer.gather(written)
        row = {"file": item.key, **item.where, **{k: v for k, v in written.items() if not k.startswith("_")}}
        if consensus:
            write_labels(out / f"{item.stem}_ignore.tif", ignore.astype(np.uint8),
                         pixel_size=item.plane.image.pixel_size, overwrite=overwrite)
            row["ignored_fraction"] = round(float(ignore.mean()), 6) if ignore.size else 0.0
        rows.append(row)
    writer.finish()

    summary_fields = ["file", *(["plane"] if any(item.where for item in found) else []), "objects",
                      "foreground_fraction", "mean_area"] + (["ignored_fraction"] if consensus else [])
    write_csv(out / SUMMARY_FILE, rows, fieldnames=summary_fields, overwrite=overwrite)
    configurations = CLASSICAL_CONFIGURATIONS[:3] if consensus else [tuple(method.split("/"))]
    write_json(out / SETTINGS_FILE, {
        "method": method,
        "configurations": [{"declump": d, "dividing_lines": w} for d, w in configurations],
        "consensus_reference": "/".join(CLASSICAL_CONFIGURATIONS[0]) if consensus else None,
        "diameter_range": [float(d) for d in diameter_range],
        "options": options,
        "channel": channel,
        "project": project,
        "pattern": pattern,
        "images": len(rows),
        "cellmixer_version": __version__,
    }, overwrite=overwrite)
    return rows
