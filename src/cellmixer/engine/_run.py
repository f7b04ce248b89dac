"""The outline of every file-in/file-out prediction command, written once: inputs, outputs, loop, summary."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .._progress import progress_bar
from ..io import (
    InputImage,
    check_overwrite,
    collect_inputs,
    prepare_output_dir,
    write_csv,
    write_json,
)


def run_images(inputs, output, *, outputs: Callable[[str], Sequence[str]], process: Callable[[InputImage, str], dict],
               summary_file: str, summary_fields: Sequence[str] | None = None, settings_file: str | None = None,
               settings: dict | None = None, extra_files: Sequence[str] = (),
               on_inputs: Callable[[list], None] | None = None,
               before_work: Callable[[list, Path], None] | None = None, pattern: str = "*", project: str | None = None,
               pixel_size=None, overwrite: bool = False, progress: bool = True, bar_for_one: bool = True,
               desc: str = "images") -> list[dict]:
    """Run ``process`` on every 2-D plane of every input image and write the table of its results.

    1. Collect the images (:func:`cellmixer.io.collect_inputs`: files and folders, each image with
       a unique stem; files in ``output``, when it lies inside an input folder, are not inputs),
       split stacks into their planes (:meth:`cellmixer.io.InputImage.planes`: every z-plane and
       frame, ``<stem>_t003_z002``, or with ``project`` the projection over z) and pass them to
       ``on_inputs``, if given.
    2. Make the output folder and refuse, before any work, to replace any file the run will write
       unless ``overwrite``.
    3. ``process(item, item.stem)`` each plane (which writes its own files into ``output``; it
       reads its pixels with ``item.read(channel)`` or :func:`cellmixer.io.read_image`), with a
       progress bar over images.
    4. Write the rows it returned to ``summary_file`` (CSV; first column ``image``, the path
       relative to the input folder, then ``plane`` for planes of stacks) and ``settings`` to
       ``settings_file`` (JSON), if given.

    Parameters
    ----------
    inputs : path or list of paths
        Image files and/or folders (searched recursively).
    output : str or Path
        The output folder.
    outputs : callable
        ``outputs(stem)``: the names of the files ``process`` writes for the image ``stem``.
    process : callable
        ``process(path, stem) -> dict``: the work on one image; returns its row of the summary.
    summary_file : str
        Name of the summary CSV (one row per image).
    summary_fields : sequence of str, optional
        Its columns (default: the keys of the first row).
    settings_file, settings : str and dict, optional
        Name and content of a JSON file of the run's settings.
    extra_files : sequence of str
        Names of other files of the whole run that the caller writes: checked with the rest.
    on_inputs : callable, optional
        ``on_inputs(found)`` with the list of :class:`cellmixer.io.InputImage` found, before the
        output folder is made: to refuse or index the inputs before any work.
    before_work : callable, optional
        ``before_work(found, output)`` once the output folder is ready and checked, before the
        first image: work on all inputs at once (e.g. adapting the model to them).
    pattern : str
        Only files in input folders whose name matches this glob pattern.
    project : {'max', 'mean'}, optional
        Process the projection over z of each frame instead of each z-plane.
    pixel_size : float, optional
        Micrometres per pixel of every input, replacing the files' calibration.
    overwrite, progress : bool
    bar_for_one : bool
        Show the bar over images for a single image too (False: when ``process`` shows its own).
    desc : str
        Label of the progress bar.

    Returns
    -------
    list of dict
        The rows of the summary.
    """
    found = [plane for item in collect_inputs(inputs, pattern=pattern, exclude=[output])
             for plane in item.planes(project=project, pixel_size=pixel_size)]
    if on_inputs is not None:
        on_inputs(found)
    out = prepare_output_dir(output)
    names = [*extra_files, summary_file, *([settings_file] if settings_file else [])]
    names += [name for item in found for name in outputs(item.stem)]
    check_overwrite([out / name for name in names], overwrite=overwrite)
    if before_work is not None:
        before_work(found, out)
    bar = progress_bar(found, desc=desc, unit="image", enabled=progress and (bar_for_one or len(found) > 1))
    rows = []
    for item in bar:
        row = process(item, item.stem)
        rows.append({"image": item.key, **item.where, **{k: v for k, v in row.items() if k != "image"}})
    if summary_fields is not None and any(item.where for item in found):
        summary_fields = ["image", "plane", *[f for f in summary_fields if f not in ("image", "plane")]]
    elif rows and any(item.where for item in found):
        summary_fields = list(dict.fromkeys(k for row in rows for k in row))
    write_csv(out / summary_file, rows, overwrite=overwrite, fieldnames=summary_fields)
    if settings_file:
        write_json(out / settings_file, settings, overwrite=overwrite)
    return rows
