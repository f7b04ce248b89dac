"""Plate mode: the images of a run on a dask cluster, one task per image (``--scheduler ADDRESS``): the same
files, tables and COCO files as the loop in one process, ``--resume`` after an interrupted run, a worker
killed mid-run, and a scheduler address that does not answer.

Light: tiny models (``model_kinds``), 96x96 fields, one LocalCluster of two single-threaded worker
processes for the module.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from cellmixer.cli import main
from cellmixer.demo import synthetic_culture
from cellmixer.engine import RunRecord

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 worker processes, 1 thread each, and a client to watch its tasks."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as local, distributed.Client(local) as client:
        yield local.scheduler_address, client


@pytest.fixture(scope="module")
def plate(tmp_path_factory) -> Path:
    """Two wells of three fields each (mixed cultures: cells and nuclei for every kind of model)."""
    root = tmp_path_factory.mktemp("plate")
    rng = np.random.default_rng(5)
    for well in ("A1", "B2"):
        (root / well).mkdir()
        for i in range(3):
            image, _, _ = synthetic_culture(["roundcell", "spindle"], shape=(96, 96), rng=rng)
            tifffile.imwrite(root / well / f"field_{i}.tif", image)
    return root


COMMANDS = {"cellmixer": ["predict"], "nuclei": ["nuclei", "predict"], "typed": ["typed", "predict"],
            "centroids": ["centroids", "predict"]}


def argv(kind, model_kinds, plate, out, *options):
    return [*COMMANDS[kind], str(model_kinds[kind]), str(plate), "-o", str(out), "-q", *options]


def assert_same_outputs(reference: Path, folder: Path) -> None:
    """The same files (the run's record aside: its lines come in the order images finish), with the same
    contents: TIFFs to the pixel, every other file (tables, COCO, GeoJSON, ROIs, PNGs) to the byte."""
    names = sorted(p.name for p in reference.iterdir() if not p.name.startswith("."))
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == names
    for name in names:
        if name.endswith(".tif"):
            np.testing.assert_array_equal(tifffile.imread(reference / name), tifffile.imread(folder / name), name)
        else:
            assert (reference / name).read_bytes() == (folder / name).read_bytes(), name


def image_tasks(client, run) -> int:
    """How many image tasks the cluster's workers finished while ``run()`` ran."""
    with distributed.get_task_stream(client) as stream:
        assert run() == 0
    return len({t["key"] for t in stream.data if str(t["key"]).startswith("image-")})


@pytest.fixture(scope="module")
def sequential(model_kinds, plate, tmp_path_factory) -> dict:
    """Each command's outputs on the plate, images one after the other in this process (the default)."""
    root = tmp_path_factory.mktemp("sequential")
    for kind in COMMANDS:
        assert main(argv(kind, model_kinds, plate, root / kind)) == 0
    return {kind: root / kind for kind in COMMANDS}


@pytest.mark.parametrize("kind", list(COMMANDS))
def test_a_plate_on_a_cluster_writes_what_the_loop_writes(kind, model_kinds, plate, sequential, cluster, tmp_path):
    """Every image a task on the workers; per-image files, the tables (counts per image and per folder)
    and the COCO files gathered over the run equal those of the loop."""
    address, client = cluster
    out = tmp_path / "out"
    assert image_tasks(client, lambda: main(argv(kind, model_kinds, plate, out, "--scheduler", address))) == 6
    assert_same_outputs(sequential[kind], out)


def test_an_interrupted_plate_run_resumes_on_the_cluster(model_kinds, plate, sequential, cluster, tmp_path,
                                                         monkeypatch):
    """Stopped after two images were recorded (the others being done on workers meanwhile), the run goes
    on with --resume: only the images not recorded go to the workers, and the results are whole."""
    address, client = cluster
    out = tmp_path / "out"
    real, recorded = RunRecord.add, []

    def add_then_stop(record, stem, row):
        if len(recorded) == 2:
            raise KeyboardInterrupt
        recorded.append(stem)
        real(record, stem, row)

    monkeypatch.setattr(RunRecord, "add", add_then_stop)
    assert main(argv("typed", model_kinds, plate, out, "--scheduler", address)) == 130
    monkeypatch.setattr(RunRecord, "add", real)
    # an image task that was running goes on (a cluster outlives its client) until it ends: as after a
    # Ctrl-C, the run is continued once the workers are idle
    while sum(client.run(lambda dask_worker: dask_worker.state.executing_count).values()):
        time.sleep(0.1)
    assert main(argv("typed", model_kinds, plate, out, "--scheduler", address)) == 2  # not over it: refused
    done = {stem: (out / f"{stem}_labels.tif").stat().st_mtime_ns for stem in recorded}
    resumed = lambda: main(argv("typed", model_kinds, plate, out, "--scheduler", address, "--resume"))  # noqa: E731
    assert image_tasks(client, resumed) == 4
    assert {stem: (out / f"{stem}_labels.tif").stat().st_mtime_ns for stem in recorded} == done
    assert_same_outputs(sequential["typed"], out)


class KillOnFirstImage(distributed.WorkerPlugin):
    """The first image task of the cluster writes half of an output file and kills its worker process."""

    name = "kill-on-first-image"

    def __init__(self, flag: str):
        self.flag = flag

    def setup(self, worker):
        from cellmixer.engine import _plate

        self.real = real = _plate.ImageWork.__call__
        flag = self.flag

        def call(work, item):
            try:
                os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return real(work, item)
            (work.folder / work.outputs(item.stem)[0]).write_bytes(b"half")
            os._exit(1)

        _plate.ImageWork.__call__ = call

    def teardown(self, worker):
        from cellmixer.engine import _plate

        _plate.ImageWork.__call__ = self.real


def test_a_worker_killed_mid_run_does_not_stop_the_run(model_kinds, plate, sequential, cluster, tmp_path):
    """Its image is done again by a worker: the half-written file is replaced, never taken as done."""
    address, client = cluster
    flag = tmp_path / "killed"
    client.register_plugin(KillOnFirstImage(str(flag)))
    try:
        assert main(argv("nuclei", model_kinds, plate, tmp_path / "out", "--scheduler", address)) == 0
    finally:
        client.unregister_worker_plugin(KillOnFirstImage.name)
    assert flag.exists()
    assert_same_outputs(sequential["nuclei"], tmp_path / "out")


def test_a_scheduler_that_does_not_answer_is_one_line(model_kinds, plate, tmp_path, capsys):
    assert main(argv("centroids", model_kinds, plate, tmp_path / "out", "--scheduler", "tcp://127.0.0.1:9")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--scheduler tcp://127.0.0.1:9: no dask scheduler answers there" in err
    assert not (tmp_path / "out").exists()  # reached before the output folder is made
