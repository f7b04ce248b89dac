"""Nothing is lost when a run is killed: SIGKILL at random points of ``train`` and ``predict`` (in a child
process), then every file under its final name reads back, no checkpoint is torn, and ``--resume``
finishes the run with the same results as a run that was never interrupted.

Training is deterministic enough for that on the CPU: one thread (``--threads 1``), float32
(``--precision fp32``) and a fixed ``--seed`` give the same weights bit for bit, because a checkpoint
holds everything the run depends on: the weights (and the best ones), the optimiser's moments, the
random generator that draws crops and augmentations, and the loss history.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from safetensors.torch import load_file

from cellmixer.cli import main
from cellmixer.demo import synthetic_culture
from cellmixer.engine import CHECKPOINT_DIR, SegmentationModel
from cellmixer.engine._checkpoint import read_checkpoint_meta, recover_checkpoint

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the child runs are forked (POSIX)")

TRAIN = ["--iterations", "6", "--checkpoint-every", "1", "--batch-size", "2", "--crop-size", "32", "--width", "4",
         "--depth", "2", "--threads", "1", "--precision", "fp32", "--seed", "0", "--threshold", "otsu", "-q"]
RANDOM = random.Random()  # the points drawn are in each assertion's message


def killed(argv, *, at_call: int | None = None, after: float | None = None) -> int | None:
    """Run ``cellmixer argv`` in a forked child and SIGKILL it just before its ``at_call``-th rename of a
    file or folder into place (``os.replace``, ``os.rename``), or ``after`` seconds. Returns its exit
    status, or None when it was killed."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            if at_call is not None:
                calls = [0]
                for name in ("replace", "rename"):
                    real = getattr(os, name)

                    def hooked(*args, _real=real, **kwargs):
                        calls[0] += 1
                        if calls[0] == at_call:
                            os.kill(os.getpid(), signal.SIGKILL)
                        return _real(*args, **kwargs)

                    setattr(os, name, hooked)
            code = main([str(a) for a in argv])
        finally:
            os._exit(code)
    if after is not None:
        time.sleep(after)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return None if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def assert_files_read_back(folder: Path, where: str) -> None:
    """Every file under a final name (not hidden) is complete: it reads back in its format."""
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".csv":
                with open(path, newline="") as fh:
                    list(csv.DictReader(fh))
            elif path.suffix == ".tif":
                tifffile.imread(path)
            elif path.suffix == ".png":
                with Image.open(path) as im:
                    im.load()
            elif path.suffix == ".safetensors":
                load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - any failure is a torn file
            raise AssertionError(f"{where}: {path} does not read back ({exc})") from exc


def assert_checkpoint_sound(folder: Path, where: str) -> None:
    checkpoint = folder / CHECKPOINT_DIR
    recover_checkpoint(checkpoint)
    if checkpoint.exists():
        try:
            read_checkpoint_meta(checkpoint)
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"{where}: torn checkpoint ({exc})") from exc


def weights(folder: Path) -> dict:
    return load_file(str(folder / "weights.safetensors"))


def assert_same_weights(a: dict, b: dict, where: str) -> None:
    assert a.keys() == b.keys(), where
    for key in a:
        assert torch.equal(a[key], b[key]), f"{where}: {key} differs"


# ------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def uninterrupted(culture_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted") / "model"
    assert main([str(a) for a in ["train", culture_dir, "-o", folder, *TRAIN]]) == 0
    return folder


def finish_and_compare(culture_dir, folder: Path, reference: Path, where: str, extra=()) -> None:
    assert_files_read_back(folder, where)
    assert_checkpoint_sound(folder, where)
    status = main([str(a) for a in ["train", culture_dir, "-o", folder, *TRAIN, *extra, "--resume"]])
    assert status == 0, where
    assert_same_weights(weights(reference), weights(folder), where)
    with open(reference / "training_log.csv") as fh, open(folder / "training_log.csv") as gh:
        assert [r["loss"] for r in csv.DictReader(fh)] == [r["loss"] for r in csv.DictReader(gh)], where
    assert not [p for p in folder.rglob("*") if ".part" in p.name or p.name.startswith(".checkpoint")], where


def test_a_training_killed_at_any_rename_resumes_to_the_same_weights(culture_dir, uninterrupted, tmp_path):
    # 6 checkpoints of 1-2 renames each (a new one in place, the old one aside), then the model's 4 files
    calls = [2, 3] + RANDOM.sample(range(4, 16), 3)  # 2, 3: either side of the second checkpoint's swap
    for at_call in calls:
        folder = tmp_path / f"killed_at_{at_call}"
        where = f"killed before rename {at_call}"
        assert killed(["train", culture_dir, "-o", folder, *TRAIN], at_call=at_call) is None, where
        finish_and_compare(culture_dir, folder, uninterrupted, where)


def test_a_training_killed_at_a_random_moment_resumes_to_the_same_weights(culture_dir, uninterrupted, tmp_path):
    start = time.perf_counter()
    assert killed(["train", culture_dir, "-o", tmp_path / "timing", *TRAIN]) == 0
    duration = time.perf_counter() - start
    for i in range(3):
        after = RANDOM.uniform(0, duration)
        folder = tmp_path / f"killed_{i}"
        killed(["train", culture_dir, "-o", folder, *TRAIN], after=after)
        finish_and_compare(culture_dir, folder, uninterrupted, f"killed after {after:.2f} s of {duration:.2f} s")


def test_an_overwriting_training_killed_before_its_first_checkpoint(culture_dir, uninterrupted, tmp_path):
    """--overwrite clears the old run as the new one starts: killed then, nothing of the old run is resumed."""
    folder = tmp_path / "model"
    shutil.copytree(uninterrupted, folder)
    other = ["--seed", "3"]
    assert killed(["train", culture_dir, "-o", folder, *TRAIN, *other, "--overwrite"], at_call=1) is None
    assert not (folder / "config.json").exists() and not (folder / CHECKPOINT_DIR).exists()
    reference = tmp_path / "reference"
    assert main([str(a) for a in ["train", culture_dir, "-o", reference, *TRAIN, *other]]) == 0
    finish_and_compare(culture_dir, folder, reference, "overwrite killed", extra=other)


def test_a_nucleus_training_keeps_its_best_weights_through_a_kill(culture_dir, tmp_path):
    images = sorted(culture_dir.rglob("*.tif"))[:3]
    argv = ["nuclei", "train", *images, *TRAIN[:-3], "-q"]  # without the foreground option
    reference = tmp_path / "reference"
    assert main([str(a) for a in [*argv, "-o", reference]]) == 0
    folder = tmp_path / "killed"
    assert killed([*argv, "-o", folder], at_call=5) is None
    assert_checkpoint_sound(folder, "nuclei")
    assert main([str(a) for a in [*argv, "-o", folder, "--resume"]]) == 0
    assert_same_weights(weights(reference), weights(folder), "nuclei")
    selected = [json.loads((f / "config.json").read_text())["training"]["selected_iteration"]
                for f in (reference, folder)]
    assert selected[0] == selected[1]


# ------------------------------------------------------------------------------------------ prediction
@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fields")
    for i in range(6):
        image, _, _ = synthetic_culture(["roundcell", "spindle"], shape=(64, 72), seed=20 + i)
        tifffile.imwrite(folder / f"field_{i}.tif", image)
    return folder


@pytest.fixture(scope="module")
def predicted(trained, fields, tmp_path_factory):
    _, model = trained
    folder = tmp_path_factory.mktemp("predicted") / "out"
    assert main([str(a) for a in ["predict", model, fields, "-o", folder, "-q", "--tile-size", "64"]]) == 0
    return folder


def assert_same_predictions(reference: Path, folder: Path, where: str) -> None:
    names = sorted(p.name for p in reference.iterdir() if not p.name.startswith("."))
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == names, where
    for name in names:
        if name.endswith(".tif"):
            np.testing.assert_array_equal(tifffile.imread(reference / name), tifffile.imread(folder / name), where)
        else:
            assert (reference / name).read_bytes() == (folder / name).read_bytes(), (where, name)


def test_a_prediction_killed_anywhere_resumes_to_the_same_results(trained, fields, predicted, tmp_path):
    _, model = trained
    argv = ["predict", model, fields, "-q", "--tile-size", "64"]
    start = time.perf_counter()
    assert killed([*argv, "-o", tmp_path / "timing"]) == 0
    duration = time.perf_counter() - start
    # the run's record, 6 images of 2 files each, the summary: 14 renames
    points = [("call", n) for n in RANDOM.sample(range(1, 15), 3)] + [("after", RANDOM.uniform(0, duration))
                                                                      for _ in range(2)]
    for i, (kind, point) in enumerate(points):
        folder = tmp_path / f"killed_{i}"
        where = f"killed {'before rename' if kind == 'call' else 'after'} {point}"
        killed([*argv, "-o", folder], **({"at_call": point} if kind == "call" else {"after": point}))
        assert_files_read_back(folder, where)
        if folder.exists() and any(p for p in folder.iterdir() if not p.name.startswith(".")):
            status = main([str(a) for a in [*argv, "-o", folder]])  # without --resume: refused, nothing lost
            assert status == 2, where
        assert main([str(a) for a in [*argv, "-o", folder, "--resume"]]) == 0, where
        assert_same_predictions(predicted, folder, where)
        assert not [p for p in folder.iterdir() if ".part" in p.name or p.name == ".cellmixer.lock"], where


@pytest.fixture(scope="module")
def instance_models(tmp_path_factory):
    """Untrained nucleus and typed-cell models: their outputs are as deterministic as trained ones."""
    root = tmp_path_factory.mktemp("instance_models")
    nuclei = SegmentationModel.new(["nucleus", "separation line"], width=4, depth=2,
                                   normalization={"method": "tile", "tile_size": 32})
    nuclei.config["task"] = "nuclei"
    nuclei.save(root / "nuclei")
    typed = SegmentationModel.new(["cell", "cell boundary", "a", "b"], architecture="typed_unet", width=4, depth=2,
                                  normalization={"method": "tile", "tile_size": 32})
    typed.config.update(task="typed", types=["a", "b"])
    typed.save(root / "typed")
    return root


@pytest.mark.parametrize("command", ["nuclei", "typed"])
def test_an_instance_prediction_killed_resumes_with_the_whole_coco_files(instance_models, fields, tmp_path,
                                                                         command):
    """What a run gathers over its images (the COCO dataset, COCO results) is whole after --resume too."""
    argv = [command, "predict", instance_models / command, fields, "-q"]
    reference = tmp_path / "reference"
    assert main([str(a) for a in [*argv, "-o", reference]]) == 0
    at_call = RANDOM.randrange(8, 28)  # a few images in: 5-6 files an image
    folder = tmp_path / "killed"
    assert killed([*argv, "-o", folder], at_call=at_call) is None
    assert_files_read_back(folder, f"killed before rename {at_call}")
    assert main([str(a) for a in [*argv, "-o", folder, "--resume"]]) == 0
    assert_same_predictions(reference, folder, f"{command} killed before rename {at_call}")


def test_resume_predicts_only_what_is_left(trained, fields, predicted, tmp_path, monkeypatch, capsys):
    _, model = trained
    folder = tmp_path / "out"
    shutil.copytree(predicted, folder)
    (folder / "field_2_overlay.png").unlink()  # as if killed between the two files of field_2
    from cellmixer.io import InputImage

    seen = []
    real = InputImage.read
    monkeypatch.setattr(InputImage, "read", lambda item, *a, **kw: seen.append(item.path.name) or real(item, *a, **kw))
    argv = ["predict", model, fields, "-o", folder, "-q", "--tile-size", "64"]
    assert main([str(a) for a in [*argv, "--resume"]]) == 0
    assert seen == ["field_2.tif"]
    assert_same_predictions(predicted, folder, "resume")
    # other settings are another run: refused, naming what differs
    assert main([str(a) for a in [*argv, "--resume", "--overlap", "0.5"]]) == 2
    assert "other settings (overlap 0.25 -> 0.5)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ the real command
def test_the_command_killed_in_its_own_process(culture_dir, uninterrupted, tmp_path):
    """The same, end to end: ``python -m cellmixer train`` killed by another process during its training."""
    folder = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "cellmixer", "train", str(culture_dir), *TRAIN, "-o",
                                str(folder)], env=env)
    deadline = time.monotonic() + 300
    while not (folder / ".checkpoint.new").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # until it writes its first checkpoint
    after = RANDOM.uniform(0, 0.3)
    time.sleep(after)
    process.kill()
    process.wait()
    finish_and_compare(culture_dir, folder, uninterrupted, f"killed {after:.2f} s into its first checkpoint")
