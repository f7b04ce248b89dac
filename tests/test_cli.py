"""The ``cellmixer`` command line: every subcommand's happy path, help, and bad input.

Bad input must end with exit status 2 and exactly one line on stderr that names the file or
option, never a traceback, and must leave existing files alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from cellmixer._version import __version__
from cellmixer.cli import main
from cellmixer.engine import SegmentationModel

SUBCOMMANDS = ["pseudolabel", "mix", "train", "predict", "evaluate", "demo"]
TINY_TRAIN = ["--iterations", "4", "--batch-size", "2", "--crop-size", "32", "--width", "4", "--depth", "2",
              "--threads", "1", "--threshold", "otsu", "--sigma-pre", "1", "--sigma-post", "1", "--quiet"]


def run_cli(capsys, *args):
    """``main([...])`` in-process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err, *needles):
    assert status == 2, err
    assert "Traceback" not in err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("cellmixer ") and ": error: " in lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def data(culture_dir, tmp_path):
    """A private copy of the training cultures, free to spoil."""
    copy = tmp_path / "data"
    shutil.copytree(culture_dir, copy)
    return copy


@pytest.fixture
def image_file(tmp_path):
    from cellmixer.demo import synthetic_culture

    image, _, _ = synthetic_culture(["roundcell", "spindle"], shape=(90, 110), seed=8)
    path = tmp_path / "field.tif"
    tifffile.imwrite(path, image)
    return path


# ------------------------------------------------------------------------------------------ help
def test_top_level_help_and_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in SUBCOMMANDS:
        assert command in out
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and __version__ in capsys.readouterr().out


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: cellmixer {command}") and "--overwrite" in out


def test_help_lists_foreground_and_training_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for option in ("--mode", "--lam", "--iterations", "--batch-size", "--crop-size", "--learning-rate",
                   "--momentum", "--tversky-alpha", "--tversky-beta", "--resume", "--checkpoint-every",
                   "--sigma-pre", "--erosion-size", "--threshold", "--min-object-area", "--max-hole-area",
                   "--channel", "--pattern", "--classes", "--seed"):
        assert option in out, option


def test_no_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


# ------------------------------------------------------------------------------------------ happy paths
def test_pseudolabel(capsys, culture_dir, tmp_path):
    status, out, err = run_cli(capsys, "pseudolabel", culture_dir, "-o", tmp_path / "pl", "--quiet",
                               "--threshold", "otsu", "--sigma-pre", "1")
    assert status == 0, err
    assert "pseudo-labelled 6 images" in out and err == ""
    masks = sorted((tmp_path / "pl").rglob("*_masks.tif"))
    assert len(masks) == 6 and len(list((tmp_path / "pl").rglob("*_qc.png"))) == 6
    mask = tifffile.imread(tmp_path / "pl" / "spindle" / "spindle_0_masks.tif")
    assert set(np.unique(mask)) == {0, 3}  # spindle is the third class


def test_pseudolabel_options_reach_the_function(capsys, culture_dir, tmp_path):
    import json

    status, _, err = run_cli(capsys, "pseudolabel", culture_dir, "-o", tmp_path / "pl", "--quiet", "--no-overlays",
                             "--classes", "spindle", "roundcell", "--threshold", "0.5", "--no-log-gradient",
                             "--min-object-area", "7", "--max-hole-area", "9", "--erosion-size", "3")
    assert status == 0, err
    settings = json.loads((tmp_path / "pl" / "pseudolabels.json").read_text())
    assert settings["classes"] == ["spindle", "roundcell"]
    assert settings["foreground"] == {**settings["foreground"], "threshold": 0.5, "log_gradient": False,
                                      "min_object_area": 7, "max_hole_area": 9, "erosion_size": 3}
    assert not list((tmp_path / "pl").rglob("*_qc.png"))
    assert not (tmp_path / "pl" / "epithelial").exists()


@pytest.mark.parametrize("kind", ["blend", "mosaic"])
def test_mix(capsys, culture_dir, tmp_path, kind):
    status, out, err = run_cli(capsys, "mix", culture_dir, "-o", tmp_path / "mix", "-n", "2", "--crop-size", "48",
                               "--kind", kind, "--quiet")
    assert status == 0, err
    assert "wrote 2 mixtures" in out
    for i in range(2):
        for suffix in (".tif", "_masks.tif", ".png"):
            assert (tmp_path / "mix" / f"mixture_{i:03d}{suffix}").is_file()
    assert (tmp_path / "mix" / "mixtures.csv").is_file()


def test_train_then_resume(capsys, culture_dir, tmp_path):
    model_dir = tmp_path / "model"
    status, out, err = run_cli(capsys, "train", culture_dir, "-o", model_dir, *TINY_TRAIN)
    assert status == 0, err
    assert "trained cellmixer model for epithelial, roundcell, spindle (4 iterations" in out
    for name in ("config.json", "weights.safetensors", "training_log.csv", "training_curve.png"):
        assert (model_dir / name).is_file()
    model = SegmentationModel.load(model_dir)
    assert model.config["architecture"]["width"] == 4 and model.config["training"]["crop_size"] == 32
    # Extend the run with --resume.
    status, out, err = run_cli(capsys, "train", culture_dir, "-o", model_dir, "--resume",
                               *TINY_TRAIN[:-1], "--iterations", "6", "--quiet")
    assert status == 0, err
    assert SegmentationModel.load(model_dir).config["training"]["iterations"] == 6


def test_train_baseline_mode(capsys, culture_dir, tmp_path):
    status, out, err = run_cli(capsys, "train", culture_dir, "-o", tmp_path / "m", "--mode", "baseline",
                               "--optimizer", "adam", "--lr-schedule", "poly", *TINY_TRAIN)
    assert status == 0, err
    training = SegmentationModel.load(tmp_path / "m").config["training"]
    assert training["mode"] == "baseline" and training["optimizer"] == "adam" and training["lr_schedule"] == "poly"


def test_predict(capsys, trained, image_file, tmp_path):
    _, model_dir = trained
    out_dir = tmp_path / "pred"
    status, out, err = run_cli(capsys, "predict", model_dir, image_file, "-o", out_dir, "--probabilities",
                               "--tile-size", "64", "--quiet")
    assert status == 0, err
    assert "predicted 1 images" in out
    labels = tifffile.imread(out_dir / "field_labels.tif")
    assert labels.shape == (90, 110)
    assert tifffile.imread(out_dir / "field_probabilities.tif").shape == (4, 90, 110)
    assert (out_dir / "field_overlay.png").is_file() and (out_dir / "predictions.csv").is_file()


@pytest.mark.parametrize("command", [["predict"], ["nuclei", "predict"], ["typed", "predict"],
                                     ["centroids", "predict"]])
def test_every_predict_command_takes_threads(capsys, trained, image_file, tmp_path, command, monkeypatch):
    import torch

    before = torch.get_num_threads()
    taken = []
    monkeypatch.setattr(torch, "set_num_threads", taken.append)
    _, model_dir = trained
    status, _, err = run_cli(capsys, *command, model_dir, image_file, "-o", tmp_path / "out", "--threads", "1", "-q")
    assert taken == [1], err  # taken once, before the run (whether it then succeeds is another test's matter)
    assert torch.get_num_threads() == before
    with pytest.raises(SystemExit) as stop:  # a usage error of the parser: one line, exit 2
        main([*command, str(model_dir), str(image_file), "-o", str(tmp_path / "bad"), "--threads", "0"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--threads" in err and len(err.strip().splitlines()) == 1, err


def test_evaluate_prints_the_table(capsys, trained, annotated_dir, tmp_path):
    _, model_dir = trained
    status, out, err = run_cli(capsys, "evaluate", model_dir, "--data", annotated_dir, "-o", tmp_path / "ev",
                               "--artificial", "2", "--no-overlays", "--names", "CellMixer", "--quiet")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "| Model | Class | Unmixed Acc | Unmixed IoU | Artificial Mix Acc | Artificial Mix IoU |"
    assert lines[2].startswith("| CellMixer | Backgr. |")
    assert any("**mean (mAcc, mIoU)**" in line for line in lines)
    assert (tmp_path / "ev" / "evaluation.json").is_file() and (tmp_path / "ev" / "evaluation.md").is_file()


# ------------------------------------------------------------------------------------------ console script
def test_console_script_help_and_error(console, tmp_path):
    result = console("--help")
    assert result.returncode == 0 and "pseudolabel" in result.stdout
    result = console("predict", tmp_path / "no_model", tmp_path / "x.tif", "-o", tmp_path / "out")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "no_model" in result.stderr


def test_console_script_pseudolabel(console, culture_dir, tmp_path):
    result = console("pseudolabel", culture_dir, "-o", tmp_path / "pl", "--quiet")
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "pl").rglob("*_masks.tif"))) == 6


def test_python_dash_m(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cellmixer", "mix", "--help"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "usage: cellmixer mix" in result.stdout


# ------------------------------------------------------------------------------------------ bad input
def test_corrupt_image(capsys, data, tmp_path):
    good = (data / "spindle" / "spindle_0.tif").read_bytes()
    (data / "spindle" / "spindle_0.tif").write_bytes(good[: len(good) // 3])
    status, _, err = run_cli(capsys, "pseudolabel", data, "-o", tmp_path / "out", "-q")
    assert_one_line_error(status, err, "spindle_0.tif", "cannot read")
    status, _, err = run_cli(capsys, "train", data, "-o", tmp_path / "m", *TINY_TRAIN)
    assert_one_line_error(status, err, "spindle_0.tif")


def test_corrupt_image_to_predict(capsys, trained, tmp_path):
    _, model_dir = trained
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    status, _, err = run_cli(capsys, "predict", model_dir, bad, "-o", tmp_path / "out", "-q")
    assert_one_line_error(status, err, "scan.png")


def test_empty_class_folder(capsys, data, tmp_path):
    (data / "hepatocyte").mkdir()
    for command in (["train", data, "-o", tmp_path / "m", *TINY_TRAIN], ["pseudolabel", data, "-o", tmp_path / "o"],
                    ["mix", data, "-o", tmp_path / "x"]):
        status, _, err = run_cli(capsys, *command)
        assert_one_line_error(status, err, "hepatocyte", "holds no images")


def test_only_one_class(capsys, data, tmp_path):
    for name in ("epithelial", "roundcell"):
        shutil.rmtree(data / name)
    status, _, err = run_cli(capsys, "train", data, "-o", tmp_path / "m", *TINY_TRAIN)
    assert_one_line_error(status, err, str(data), "spindle", "at least 2")
    status, _, err = run_cli(capsys, "mix", data, "-o", tmp_path / "x", "-q")
    assert_one_line_error(status, err, "at least 2")


def test_image_smaller_than_the_crop(capsys, data, tmp_path):
    tifffile.imwrite(data / "roundcell" / "tiny.tif", np.random.default_rng(0).integers(0, 999, (20, 300),
                                                                                         dtype=np.uint16))
    status, _, err = run_cli(capsys, "train", data, "-o", tmp_path / "m", *TINY_TRAIN)
    assert_one_line_error(status, err, "tiny.tif", "smaller than the crop size 32", "--crop-size")
    assert not (tmp_path / "m" / "config.json").exists()


def test_constant_image(capsys, data, tmp_path):
    tifffile.imwrite(data / "epithelial" / "blank.tif", np.full((96, 96), 1234, np.uint16))
    status, _, err = run_cli(capsys, "train", data, "-o", tmp_path / "m", *TINY_TRAIN)
    assert_one_line_error(status, err, "blank.tif", "constant")
    status, _, err = run_cli(capsys, "pseudolabel", data, "-o", tmp_path / "pl", "-q")
    assert_one_line_error(status, err, "blank.tif", "constant")


def test_nan_image(capsys, data, tmp_path):
    image = np.random.default_rng(0).normal(100, 5, (96, 96)).astype(np.float32)
    image[50:52, 10:20] = np.nan
    tifffile.imwrite(data / "epithelial" / "holes.tif", image)
    status, _, err = run_cli(capsys, "pseudolabel", data, "-o", tmp_path / "pl", "-q")
    assert_one_line_error(status, err, "holes.tif", "NaN")
    status, _, err = run_cli(capsys, "train", data, "-o", tmp_path / "m", *TINY_TRAIN)
    assert_one_line_error(status, err, "holes.tif", "NaN")


def test_channel_out_of_range(capsys, culture_dir, trained, image_file, tmp_path):
    status, _, err = run_cli(capsys, "pseudolabel", culture_dir, "-o", tmp_path / "pl", "--channel", "2", "-q")
    assert_one_line_error(status, err, "--channel 2", "out of range", ".tif")
    _, model_dir = trained
    status, _, err = run_cli(capsys, "predict", model_dir, image_file, "-o", tmp_path / "p", "--channel", "5", "-q")
    assert_one_line_error(status, err, "field.tif", "--channel 5")


def test_output_under_a_file_is_unwritable(capsys, culture_dir, trained, image_file, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    status, _, err = run_cli(capsys, "pseudolabel", culture_dir, "-o", blocker / "out", "-q")
    assert_one_line_error(status, err, "--output", "blocker")
    _, model_dir = trained
    status, _, err = run_cli(capsys, "predict", model_dir, image_file, "-o", blocker, "-q")
    assert_one_line_error(status, err, "--output", "blocker", "not a folder")
    status, _, err = run_cli(capsys, "train", culture_dir, "-o", blocker / "m", *TINY_TRAIN)
    assert_one_line_error(status, err, "--output", "blocker")


def test_read_only_output_folder(capsys, culture_dir, trained, image_file, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        probe = locked / "probe"
        try:
            probe.write_text("x")
            probe.unlink()
            pytest.skip("running with privileges that ignore folder permissions (root)")
        except PermissionError:
            pass
        status, _, err = run_cli(capsys, "pseudolabel", culture_dir, "-o", locked / "out", "-q")
        assert_one_line_error(status, err, "--output", "locked")
        _, model_dir = trained
        status, _, err = run_cli(capsys, "predict", model_dir, image_file, "-o", locked, "-q")
        assert_one_line_error(status, err, "--output", "locked", "cannot write")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("missing", ["config.json", "weights.safetensors"])
def test_model_folder_with_a_missing_file(capsys, model_copy, image_file, tmp_path, missing):
    (model_copy / missing).unlink()
    status, _, err = run_cli(capsys, "predict", model_copy, image_file, "-o", tmp_path / "p", "-q")
    assert_one_line_error(status, err, missing, "missing")
    status, _, err = run_cli(capsys, "evaluate", model_copy, "--data", tmp_path, "-o", tmp_path / "e", "-q")
    assert_one_line_error(status, err, missing)


def test_model_folder_with_mismatched_weights(capsys, model_copy, image_file, tmp_path):
    other = SegmentationModel.new(["epithelial", "roundcell", "spindle"], width=4, depth=3)
    other.save(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "weights.safetensors", model_copy / "weights.safetensors")
    status, _, err = run_cli(capsys, "predict", model_copy, image_file, "-o", tmp_path / "p", "-q")
    assert_one_line_error(status, err, "weights.safetensors", "does not match")


def test_model_folder_with_damaged_files(capsys, model_copy, image_file, tmp_path):
    weights = model_copy / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    status, _, err = run_cli(capsys, "predict", model_copy, image_file, "-o", tmp_path / "p", "-q")
    assert_one_line_error(status, err, "weights.safetensors", "corrupt")
    (model_copy / "config.json").write_text("{not json")
    status, _, err = run_cli(capsys, "predict", model_copy, image_file, "-o", tmp_path / "p", "-q")
    assert_one_line_error(status, err, "config.json", "not valid JSON")


def test_not_a_model_folder(capsys, culture_dir, image_file, tmp_path):
    status, _, err = run_cli(capsys, "predict", tmp_path / "nowhere", image_file, "-o", tmp_path / "p", "-q")
    assert_one_line_error(status, err, "nowhere", "no such model folder")
    status, _, err = run_cli(capsys, "predict", culture_dir, image_file, "-o", tmp_path / "p", "-q")
    assert_one_line_error(status, err, "config.json", "missing")


def test_existing_predictions_are_kept(capsys, trained, image_file, tmp_path, snapshot):
    _, model_dir = trained
    out_dir = tmp_path / "pred"
    status, _, err = run_cli(capsys, "predict", model_dir, image_file, "-o", out_dir, "-q")
    assert status == 0, err
    before = snapshot(out_dir)
    status, _, err = run_cli(capsys, "predict", model_dir, image_file, "-o", out_dir, "-q", "--tile-size", "32")
    assert_one_line_error(status, err, "already exists", "--overwrite")
    assert snapshot(out_dir) == before
    status, _, err = run_cli(capsys, "predict", model_dir, image_file, "-o", out_dir, "-q", "--overwrite")
    assert status == 0, err


def test_existing_outputs_of_other_commands_are_kept(capsys, culture_dir, annotated_dir, trained, tmp_path,
                                                     snapshot):
    _, model_dir = trained
    commands = {
        "pl": ["pseudolabel", culture_dir, "--no-overlays"],
        "mix": ["mix", culture_dir, "-n", "1", "--crop-size", "32"],
        "ev": ["evaluate", model_dir, "--data", annotated_dir, "--artificial", "0", "--no-overlays"],
        "model": ["train", culture_dir, *TINY_TRAIN],
    }
    for folder, command in commands.items():
        status, _, err = run_cli(capsys, *command, "-o", tmp_path / folder, "-q")
        assert status == 0, err
        before = snapshot(tmp_path / folder)
        status, _, err = run_cli(capsys, *command, "-o", tmp_path / folder, "-q")
        assert_one_line_error(status, err, "--overwrite")
        assert snapshot(tmp_path / folder) == before, folder


@pytest.mark.parametrize("option, value", [("--lam", "1.5"), ("--iterations", "0"), ("--crop-size", "8"),
                                           ("--mix-probability", "-0.5"), ("--learning-rate", "0")])
def test_bad_training_option(capsys, culture_dir, tmp_path, option, value):
    status, _, err = run_cli(capsys, "train", culture_dir, "-o", tmp_path / "m", *TINY_TRAIN, option, value)
    assert_one_line_error(status, err, f"{option} {value}")


def test_bad_architecture_option(capsys, culture_dir, tmp_path):
    status, _, err = run_cli(capsys, "train", culture_dir, "-o", tmp_path / "m", *TINY_TRAIN, "--width", "0")
    assert_one_line_error(status, err, "width")
    status, _, err = run_cli(capsys, "train", culture_dir, "-o", tmp_path / "m", *TINY_TRAIN, "--model", "vit")
    assert_one_line_error(status, err, "--model vit")


def test_bad_mix_and_predict_options(capsys, culture_dir, trained, image_file, tmp_path):
    status, _, err = run_cli(capsys, "mix", culture_dir, "-o", tmp_path / "x", "--lam", "0", "-q")
    assert_one_line_error(status, err, "--lam 0")
    _, model_dir = trained
    status, _, err = run_cli(capsys, "predict", model_dir, image_file, "-o", tmp_path / "p", "--overlap", "1.5")
    assert_one_line_error(status, err, "--overlap 1.5")
    status, _, err = run_cli(capsys, "predict", model_dir, image_file, "-o", tmp_path / "p", "--tile-size", "4")
    assert_one_line_error(status, err, "--tile-size 4")


def test_resume_without_a_checkpoint(capsys, culture_dir, tmp_path):
    status, _, err = run_cli(capsys, "train", culture_dir, "-o", tmp_path / "m", *TINY_TRAIN)
    assert status == 0, err
    shutil.rmtree(tmp_path / "m" / "checkpoint")
    status, _, err = run_cli(capsys, "train", culture_dir, "-o", tmp_path / "m", "--resume", *TINY_TRAIN)
    assert_one_line_error(status, err, "--resume", "no checkpoint", "--overwrite")


def test_evaluate_bad_masks(capsys, trained, tmp_path):
    _, model_dir = trained
    tifffile.imwrite(tmp_path / "f.tif", np.random.default_rng(0).integers(0, 999, (32, 32), dtype=np.uint16))
    status, _, err = run_cli(capsys, "evaluate", model_dir, "--data", tmp_path, "-o", tmp_path / "e", "-q")
    assert_one_line_error(status, err, "f.tif", "no ground-truth mask")
    tifffile.imwrite(tmp_path / "f_masks.tif", np.full((32, 32), 9, np.uint8))
    status, _, err = run_cli(capsys, "evaluate", model_dir, "--data", tmp_path, "-o", tmp_path / "e2", "-q")
    assert_one_line_error(status, err, "f_masks.tif", "value 9")


def test_permission_error_while_writing_is_one_line(capsys, trained, image_file, tmp_path, monkeypatch):
    """An OSError during writing (e.g. disk full) ends in one line naming the file, not a traceback."""
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("field_labels.tif"):
            raise OSError(28, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    _, model_dir = trained
    status, _, err = run_cli(capsys, "predict", model_dir, image_file, "-o", tmp_path / "p", "-q")
    assert_one_line_error(status, err, "No space left on device", "field_labels.tif")
    # no temporary file, no result, no lock left behind: only the (hidden) record of the run, with no image done
    assert [p.name for p in (tmp_path / "p").iterdir()] == [".cellmixer-run.jsonl"]
