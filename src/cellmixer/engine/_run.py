"""The outline of every file-in/file-out prediction command, written once: inputs, outputs, loop, summary,
and the record of the images done, from which ``--resume`` continues an interrupted run."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from .._errors import CellmixerError
from .._progress import notes_held, progress_bar
from ..io import (
    InputImage,
    check_overwrite,
    collect_inputs,
    output_locks,
    prepare_output_dir,
    write_csv,
    write_json,
)
from ._chunked import ChunkedRun
from ._plate import ImageWork, process_on_workers

# One JSON line per image whose outputs are all written, after a first line with the run's settings.
RUN_RECORD = ".cellmixer-run.jsonl"


def _plain(value):
    """numpy scalars and other values of a summary row, as JSON."""
    return value.item() if hasattr(value, "item") else str(value)


class RunRecord:
    """``<output>/.cellmixer-run.jsonl``: the settings of a prediction run, then one line per image whose
    outputs are complete (written after them). A run killed at any point leaves a record whose lines
    name only complete images (a torn last line is ignored)."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / RUN_RECORD

    def read(self) -> tuple[dict | None, dict]:
        """The settings of the recorded run (None: no record) and ``{stem: row}`` of its images done."""
        if not self.path.is_file():
            return None, {}
        lines = self.path.read_text(errors="replace").splitlines()
        try:
            settings = json.loads(lines[0])["settings"]
        except (IndexError, ValueError, KeyError, TypeError):
            return None, {}
        done = {}
        for line in lines[1:]:
            try:
                entry = json.loads(line)
                done[entry["stem"]] = entry["row"]
            except (ValueError, KeyError, TypeError):
                continue  # the line being written when the run was killed
        return settings, done

    def start(self, settings: dict, done: dict) -> None:
        """A new record with ``settings`` and the images already ``done``."""
        lines = [json.dumps({"settings": settings}, default=_plain)]
        lines += [json.dumps({"stem": stem, "row": row}, default=_plain) for stem, row in done.items()]
        tmp = self.path.with_name(self.path.name + ".new")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)

    def add(self, stem: str, row: dict) -> None:
        """Note that every output of ``stem`` is written (one line, one write)."""
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"stem": stem, "row": row}, default=_plain) + "\n")


def _differences(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new), key=str)
    changed = [f"{k} {json.dumps(old.get(k), default=_plain)} -> {json.dumps(new.get(k), default=_plain)}"
               for k in keys if json.dumps(old.get(k), default=_plain) != json.dumps(new.get(k), default=_plain)]
    return ", ".join(changed[:3]) + (" ..." if len(changed) > 3 else "")


def _resumable(out: Path, record: RunRecord, settings: dict, stems, outputs) -> dict:
    """``{stem: row}`` of the inputs whose outputs an earlier run with the same ``settings`` completed;
    the partial outputs of the others are removed. Refuses a folder of another run."""
    stored, done = record.read()
    if stored is None:
        existing = [out / name for stem in stems for name in outputs(stem) if (out / name).exists()]
        if existing:
            raise CellmixerError(f"--resume: {out} has outputs ({existing[0].name}) but no record of the run that "
                                 f"wrote them ({RUN_RECORD}); pass --overwrite to redo them all.")
        return {}
    plain = json.loads(json.dumps(settings, default=_plain))
    if stored != plain:
        raise CellmixerError(f"--resume: {out} holds the results of a run with other settings "
                             f"({_differences(stored, plain)}); give the same options to continue it, or pass "
                             "--overwrite to redo them all.")
    complete = {}
    for stem in stems:
        files = [out / name for name in outputs(stem)]
        if stem in done and all(f.is_file() for f in files):
            complete[stem] = done[stem]
        else:
            for f in files:  # of the image being written when the run stopped: done again
                f.unlink(missing_ok=True)
    return complete


def run_images(inputs, output, *, outputs: Callable[[str], Sequence[str]], process: Callable[[InputImage, str], dict],
               summary_file: str, summary_fields: Sequence[str] | None = None, settings_file: str | None = None,
               settings: dict | None = None, extra_files: Sequence[str] = (),
               on_inputs: Callable[[list], None] | None = None,
               before_work: Callable[[list, Path], None] | None = None, pattern: str = "*", project: str | None = None,
               pixel_size=None, overwrite: bool = False, resume: bool = False,
               gather: Callable[[dict], None] | None = None, cluster: ChunkedRun | None = None,
               progress: bool = True, bar_for_one: bool = True, desc: str = "images") -> list[dict]:
    """Run ``process`` on every 2-D plane of every input image and write the table of its results.

    1. Collect the images (:func:`cellmixer.io.collect_inputs`: files and folders, each image with
       a unique stem; files in ``output``, when it lies inside an input folder, are not inputs),
       split stacks into their planes (:meth:`cellmixer.io.InputImage.planes`: every z-plane and
       frame, ``<stem>_t003_z002``, or with ``project`` the projection over z) and pass them to
       ``on_inputs``, if given.
    2. Make and lock the output folder (:func:`cellmixer.io.prepare_output_dir`) and refuse, before
       any work, to replace any file the run will write unless ``overwrite``; with ``resume``, keep
       the planes an interrupted run with the same ``settings`` completed instead.
    3. ``process(item, item.stem)`` each plane (which writes its own files into ``output``; it
       reads its pixels with ``item.read(channel)`` or :func:`cellmixer.io.read_image`), with a
       progress bar over images; each plane done is recorded (:class:`RunRecord`). One after the
       other in this process, or, when ``cluster`` has a scheduler with worker processes (a plate
       on a cluster), one dask task per plane on its workers (see :mod:`cellmixer.engine._plate`),
       the large images excepted (this process does them, their chunks on the same workers).
    4. ``gather(row)`` every row, in the order of the inputs, and write them to ``summary_file``
       (CSV; first column ``image``, the path relative to the input folder, then ``plane`` for
       planes of stacks; keys starting with ``_`` are recorded for ``resume`` but left out of the
       table: what a command gathers over the run) and ``settings`` to ``settings_file`` (JSON),
       if given.

    ``process`` must change nothing outside its files (it may run on a worker, with a copy of what
    it refers to): what a command gathers over the run goes into the rows and is taken by ``gather``.

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
        Name and content of a JSON file of the run's settings. ``settings`` also identify the run
        for ``resume``: give every option that changes the outputs.
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
    overwrite : bool
        Replace the outputs of an earlier run.
    resume : bool
        Continue an interrupted run in ``output``: planes whose outputs it completed are skipped
        (their rows are taken from its record), the others done again.
    gather : callable, optional
        ``gather(row)`` with the row of every plane, in the order of the inputs, whether it was done
        here, on a worker, or by the interrupted run ``resume`` continues: for what a command gathers
        over the run (e.g. :meth:`InstanceWriter.gather`).
    cluster : ChunkedRun, optional
        The command's dask scheduler and its large images: with ``--scheduler local`` or an
        address, the planes go to its workers (the work of ``process`` is sent once to each).
    progress : bool
    bar_for_one : bool
        Show the bar over images for a single image too (False: when ``process`` shows its own).
    desc : str
        Label of the progress bar.

    Returns
    -------
    list of dict
        The rows of the summary (without the keys starting with ``_``).
    """
    if resume and overwrite:
        raise CellmixerError("--resume and --overwrite: give one (continue the run in the folder, or redo it).")
    settings = {} if settings is None else settings
    with output_locks():
        with notes_held():  # said once the inputs and the folder are checked: a refusal is one line
            found = [plane for item in collect_inputs(inputs, pattern=pattern, exclude=[output])
                     for plane in item.planes(project=project, pixel_size=pixel_size)]
            if on_inputs is not None:
                on_inputs(found)
            stems = [item.stem for item in found]
            # the cluster is reached before the output folder is made: an address that does not answer
            # changes nothing on disk
            client = cluster.image_client() if cluster is not None and found else None
            out = prepare_output_dir(output)
            record = RunRecord(out)
            run_files = [*extra_files, summary_file, *([settings_file] if settings_file else [])]
            if resume:
                done = _resumable(out, record, settings, stems, outputs)
                for name in run_files:  # written again at the end, with every image
                    (out / name).unlink(missing_ok=True)
            else:
                done = {}
                check_overwrite([out / name for name in run_files + [n for stem in stems for n in outputs(stem)]],
                                overwrite=overwrite)
            record.start(settings, done)
        pending = [item for item in found if item.stem not in done]
        if before_work is not None:
            before_work(found, out)
        bar = progress_bar(total=len(found), initial=len(found) - len(pending), desc=desc, unit="image",
                           enabled=progress and (bar_for_one or len(found) > 1))

        def finished(item, row):
            done[item.stem] = {"image": item.key, **item.where, **{k: v for k, v in row.items() if k != "image"}}
            record.add(item.stem, done[item.stem])
            bar.update(1)

        work = ImageWork(process, outputs, out, clear=not overwrite)
        if client is None or not pending:
            for item in pending:
                finished(item, work(item))
        else:
            large = [item for item in pending if cluster.open(item) is not None]
            stems = {item.stem for item in large}

            def here(drain):  # large images: their chunks go to the same workers
                for item in large:
                    finished(item, work(item))
                    drain()

            process_on_workers(client, [item for item in pending if item.stem not in stems], work,
                               on_done=finished, between=here)
        bar.close()
        rows = [done[item.stem] for item in found]
        for row in rows if gather is not None else ():
            gather(row)
        table = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
        if summary_fields is not None and any(item.where for item in found):
            summary_fields = ["image", "plane", *[f for f in summary_fields if f not in ("image", "plane")]]
        elif table and any(item.where for item in found):
            summary_fields = list(dict.fromkeys(k for row in table for k in row))
        write_csv(out / summary_file, table, overwrite=overwrite, fieldnames=summary_fields)
        if settings_file:
            write_json(out / settings_file, settings, overwrite=overwrite)
    return table
