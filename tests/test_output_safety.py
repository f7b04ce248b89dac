"""The files a run writes: readable by the user's group (the umask applies), one run per output folder
(a lock with the process id; a lock whose process died is taken over), temporary files of a killed run
removed by the next, checkpoints put in place as one unit, ``--resume`` of the predict commands."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch

from cellmixer._errors import CellmixerError
from cellmixer.engine import SegmentationModel, run_images
from cellmixer.engine._checkpoint import (
    NEW,
    OLD,
    read_checkpoint_meta,
    recover_checkpoint,
    save_checkpoint,
)
from cellmixer.io import LOCK_FILE, lock_folder, output_locks, prepare_output_dir, unlock_folder, write_text, write_tiff


@pytest.fixture
def umask():
    """Set the process's umask for a test."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_umask(mask):
        os.umask(mask)

    yield set_umask
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o007, 0o077])
def test_files_get_the_permissions_of_the_umask(tmp_path, umask, mask):
    umask(mask)
    write_tiff(tmp_path / "labels.tif", np.zeros((4, 4), np.uint8))
    write_text(tmp_path / "notes.txt", "x")
    model = SegmentationModel.new(["a", "b"], width=2, depth=1)
    model.save(tmp_path / "model")
    network = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path / "checkpoint", network=network, optimizer=torch.optim.SGD(network.parameters(), 0.1),
                    rng=np.random.default_rng(0), iteration=0, history=[], meta={"training": {}})
    files = [tmp_path / "labels.tif", tmp_path / "notes.txt", tmp_path / "model" / "config.json",
             tmp_path / "model" / "weights.safetensors", *sorted((tmp_path / "checkpoint").iterdir())]
    assert {str(f.name): mode(f) for f in files} == {str(f.name): 0o666 & ~mask for f in files}
    assert mode(tmp_path / "checkpoint") == 0o777 & ~mask and mode(tmp_path / "model") == 0o777 & ~mask


def test_a_folder_is_locked_once(tmp_path):
    fd = lock_folder(tmp_path)
    info = json.loads((tmp_path / LOCK_FILE).read_text())
    assert info["pid"] == os.getpid() and info["host"] and info["started"]
    with pytest.raises(CellmixerError, match=f"--output {tmp_path}: in use by process {os.getpid()} on"):
        lock_folder(tmp_path)
    unlock_folder(tmp_path, fd)
    assert not (tmp_path / LOCK_FILE).exists()
    unlock_folder(tmp_path, lock_folder(tmp_path))  # free again


def test_a_command_holds_the_lock_of_each_folder_it_prepares(tmp_path):
    with output_locks():
        prepare_output_dir(tmp_path / "a")
        prepare_output_dir(tmp_path / "a")  # again in the same command: the lock it holds
        prepare_output_dir(tmp_path / "b")
        assert (tmp_path / "a" / LOCK_FILE).exists() and (tmp_path / "b" / LOCK_FILE).exists()
        with pytest.raises(CellmixerError, match="in use by process"):
            lock_folder(tmp_path / "a")
    assert not (tmp_path / "a" / LOCK_FILE).exists() and not (tmp_path / "b" / LOCK_FILE).exists()
    prepare_output_dir(tmp_path / "c")  # outside a command: no lock
    assert not (tmp_path / "c" / LOCK_FILE).exists()


def test_the_lock_of_a_process_that_died_is_taken_over_with_its_temporary_files(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "here", "command": "cellmixer predict",
                                                  "started": "then"}))
    left = [tmp_path / ".field_labels.1a2b3c4d.part.tif", tmp_path / "sub" / ".mixture.abcdefgh.part.png"]
    kept = [tmp_path / ".notes.txt", tmp_path / "my.part.tif", tmp_path / "field_labels.tif"]
    for path in left + kept:
        path.parent.mkdir(exist_ok=True)
        path.write_text("x")
    with output_locks():
        prepare_output_dir(tmp_path)
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not any(p.exists() for p in left) and all(p.exists() for p in kept)


def test_temporary_files_are_removed_when_writing_fails(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with output_locks():
            out = prepare_output_dir(tmp_path / "out")
            write_text(out / "a.txt", "done")
            from cellmixer.io import atomic_path

            with atomic_path(out / "b.txt") as tmp:
                tmp.write_text("half")
                1 / 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt"]


# ------------------------------------------------------------------------------------------ checkpoints
def checkpoint_at(folder, iteration):
    torch.manual_seed(iteration)
    network = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(network.parameters(), 0.1)
    history = [{"iteration": i + 1, "loss": 1.0, "learning_rate": 0.1} for i in range(iteration)]
    save_checkpoint(folder, network=network, optimizer=optimizer, rng=np.random.default_rng(iteration),
                    iteration=iteration, history=history, meta={"training": {}})


@pytest.mark.parametrize("state, expected", [
    ("the new one written, not yet in place", 1),
    ("the old one aside, the new one not yet in place", 2),
    ("the new one in place, the old one not yet removed", 2),
    ("the new one half written", 1),
    ("the first one half written", None),
])
def test_a_checkpoint_killed_while_replaced_recovers_the_newest_whole_one(tmp_path, state, expected):
    folder = tmp_path / "checkpoint"
    checkpoint_at(folder, 1)
    checkpoint_at(tmp_path / "second", 2)
    new, old = folder.with_name(NEW), folder.with_name(OLD)
    if state == "the new one written, not yet in place":
        os.rename(tmp_path / "second", new)
        expected = 1  # the old one is still in place: the run redoes the iteration
    elif state == "the old one aside, the new one not yet in place":
        os.rename(tmp_path / "second", new)
        os.rename(folder, old)
    elif state == "the new one in place, the old one not yet removed":
        os.rename(folder, old)
        os.rename(tmp_path / "second", folder)
    elif state == "the new one half written":
        os.rename(tmp_path / "second", new)
        (new / "state.json").unlink()
    else:
        os.rename(folder, new)
        (new / "state.safetensors").write_bytes(b"\x00" * 10)
    recover_checkpoint(folder)
    assert not new.exists() and not old.exists()
    if expected is None:
        assert not folder.exists()
    else:
        assert read_checkpoint_meta(folder)["iteration"] == expected


# ------------------------------------------------------------------------------------------ run_images
def echo_run(tmp_path, inputs, **options):
    done = []

    def process(item, stem):
        done.append(stem)
        write_text(tmp_path / "out" / f"{stem}.txt", item.path.name)
        return {}

    rows = run_images(inputs, tmp_path / "out", outputs=lambda stem: [f"{stem}.txt"], process=process,
                      summary_file="rows.csv", settings={"k": 1}, **options)
    return done, rows


def test_resume_of_a_run_without_its_record_is_refused(tmp_path):
    from cellmixer.demo import synthetic_culture
    import tifffile

    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a", "b"):
        tifffile.imwrite(inputs / f"{name}.tif", synthetic_culture("roundcell", shape=(32, 32), seed=0)[0])
    assert echo_run(tmp_path, inputs, resume=True)[0] == ["a", "b"]  # nothing to resume: all of it
    assert echo_run(tmp_path, inputs, resume=True)[0] == []           # all done
    tifffile.imwrite(inputs / "c.tif", synthetic_culture("roundcell", shape=(32, 32), seed=1)[0])
    done, rows = echo_run(tmp_path, inputs, resume=True)              # an image added: only it
    assert done == ["c"] and [r["image"] for r in rows] == ["a.tif", "b.tif", "c.tif"]
    (tmp_path / "out" / ".cellmixer-run.jsonl").unlink()
    with pytest.raises(CellmixerError, match="--resume: .* has outputs .* but no record of the run"):
        echo_run(tmp_path, inputs, resume=True)
