"""The outline of every file-in/file-out prediction command, written once: inputs, outputs, loop, summary."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .._progress import progress_bar
from ..io import (
    check_overwrite,
    collect_inputs,
    prepare_output_dir,
    write_csv,
    write_json,
)


def run_images(inputs, output, *, outputs: Callable[[str], Sequence[str]], process: Callable[[Path, str], dict],
               summary_file: str, summary_fields: Sequence[str] | None = None, settings_file: str | None = None,
               settings: dict | None = None, extra_files: Sequence[str] = (),
               on_inputs: Callable[[list], None] | None = None, pattern: str = "*", overwrite: bool = False,
               progress: bool = True, bar_for_one: bool = True, desc: str = "images") -> list[dict]:
    """Run ``process`` on every input image and write the table of its results.

    1. Collect the images (:func:`cellmixer.io.collect_inputs`: files and folders, each image with
       a unique stem) and pass them to ``on_inputs``, if given.
    2. Make the output folder and refuse, before any work, to replace any file the run will write
       unless ``overwrite``.
    3. ``process(path, stem)`` each image (which writes its own files into ``output``), with a
       progress bar over images.
    4. Write the rows it returned to ``summary_file`` (CSV) and ``settings`` to ``settings_file``
       (JSON), if given.

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
        ``on_inputs(found)`` with the list of ``(path, stem)`` found, before the output folder is
        made: to refuse or index the inputs before any work.
    pattern : str
        Only files in input folders whose name matches this glob pattern.
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
    found = collect_inputs(inputs, pattern=pattern)
    if on_inputs is not None:
        on_inputs(found)
    out = prepare_output_dir(output)
    names = [*extra_files, summary_file, *([settings_file] if settings_file else [])]
    names += [name for _, stem in found for name in outputs(stem)]
    check_overwrite([out / name for name in names], overwrite=overwrite)
    bar = progress_bar(found, desc=desc, unit="image", enabled=progress and (bar_for_one or len(found) > 1))
    rows = [process(path, stem) for path, stem in bar]
    write_csv(out / summary_file, rows, overwrite=overwrite, fieldnames=summary_fields)
    if settings_file:
        write_json(out / settings_file, settings, overwrite=overwrite)
    return rows
