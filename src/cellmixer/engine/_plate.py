"""The images of a plate on a dask cluster: one task per image, the command's work sent once to each worker.

:func:`cellmixer.engine.run_images` calls :func:`process_on_workers` when ``--scheduler`` names a cluster
(``local`` or an address): the command's ``process`` (with its model) is scattered to every worker
once, each image is a task that calls it there, and the rows come back to the client, which records
each image as it finishes and writes the run's tables. A worker that dies has its image done again
by another: the files of an image are written under temporary names and renamed, and an image
counts as done only when its task returns, so no half-written image is taken as done.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import CancelledError
from pathlib import Path

import torch

from .._errors import CellmixerError, out_of_memory
from ..io import InputImage

# How often the command's work is sent again when every worker holding it has died.
RESEND = 3


@dataclasses.dataclass
class ImageWork:
    """What a worker does to an image: ``process(item, stem)`` writes its files into ``folder`` and
    returns its row. ``clear``: an image's outputs found when its task starts were left by an attempt
    that died in this run (the run checked that none existed), and are removed first."""

    process: Callable
    outputs: Callable
    folder: Path
    clear: bool

    def __call__(self, item: InputImage) -> dict:
        if threading.current_thread() is not threading.main_thread():
            torch.set_num_threads(1)  # one core per dask worker thread
        if self.clear:
            for name in self.outputs(item.stem):
                (self.folder / name).unlink(missing_ok=True)
        with out_of_memory(str(item), "give a smaller --tile-size or --batch-size, or split the image"):
            return self.process(item, item.stem)


def _run_work(work: ImageWork, item: InputImage) -> dict:
    return work(item)


def process_on_workers(client, items: list[InputImage], work: ImageWork, *, on_done: Callable,
                       between: Callable[[Callable], None] | None = None) -> None:
    """``work`` on every item, one dask task per item on ``client``'s workers.

    ``on_done(item, row)`` is called here as each image finishes (in any order). ``between(drain)``,
    if given, runs while the images are on the workers (the large images the client does itself);
    it calls ``drain()`` to take the images finished meanwhile.
    """
    from distributed import as_completed  # optional: cellmixer[distributed]
    from distributed.scheduler import KilledWorker

    left = list(items)
    for attempt in range(RESEND + 1):
        # hash=False: the work holds the model; broadcast: each worker receives it once
        shared = client.scatter(work, broadcast=True, hash=False)
        run = uuid.uuid4().hex[:8]
        futures = {client.submit(_run_work, shared, item, key=f"image-{run}-{i}", pure=False): item
                   for i, item in enumerate(left)}
        pending = as_completed(futures)
        lost = []

        def take(future):
            item = futures[future]
            try:
                row = future.result()
            except KilledWorker:
                raise CellmixerError(f"{item}: the worker processes that took this image died (out of memory?); "
                                     "give workers more memory, or a smaller --tile-size or --batch-size.") from None
            except CancelledError:  # the work sent once was lost with every worker that held it
                lost.append(item)
                return
            on_done(item, row)

        def drain():
            if pending.has_ready():
                for future in pending.next_batch(block=False):
                    take(future)

        try:
            if between is not None and attempt == 0:
                between(drain)
            for future in pending:
                take(future)
        finally:
            client.cancel(list(futures))
            client.cancel(shared)
        if not lost:
            return
        left = lost
    raise CellmixerError(f"{left[0]}: the workers were lost {RESEND + 1} times; check the cluster "
                         "(its workers' logs) and run the same command with --resume.")
