"""Prediction settings declared once (:class:`cellmixer.engine.Tiling`): one range check with one-line
messages for every function and command, the defaults in every signature, the one file-in/file-out
outline (:func:`cellmixer.engine.run_images`), and tile-by-tile prediction that matches one pass."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

import cellmixer
from cellmixer._errors import CellmixerError
from cellmixer.cli import main
from cellmixer.demo import synthetic_culture
from cellmixer.engine import SegmentationModel, Tiling, as_tiling, predict_probabilities, run_images, tile_starts
from cellmixer.methods.centroids import CentroidTiling

TYPES = ["epithelial", "roundcell", "spindle"]

# (option, value, the one-line message) of every field that Tiling refuses.
BAD = [
    ("overlap", 1.5, "--overlap 1.5: must be between 0 and 0.9."),
    ("batch_size", 0, "--batch-size 0: must be at least 1."),
    ("tile_size", 8, "--tile-size 8: must be at least 16 pixels, or 'auto' (the model's input size)."),
    ("overlap", float("nan"), "--overlap nan: must be a finite number."),
]
BAD_IDS = ["overlap-1.5", "batch-size-0", "tile-size-8", "overlap-nan"]


def _refuses(call, message):
    with pytest.raises(CellmixerError) as info:
        call()
    assert str(info.value) == message
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------ Tiling itself
@pytest.mark.parametrize("name, value, message", BAD, ids=BAD_IDS)
def test_tiling_refuses_values_out_of_range(name, value, message):
    _refuses(lambda: Tiling(**{name: value}), message)
    _refuses(lambda: as_tiling(Tiling(), **{name: value}), message)  # a changed copy is checked too


def test_tiling_accepts_and_refuses_tile_sizes():
    for size in ("auto", None, 16, 517, np.int64(64)):
        assert Tiling(tile_size=size).tile_size == size
    for size in (15, 0, -16, True, 64.0, "big"):
        with pytest.raises(CellmixerError, match=r"^--tile-size .*: must be at least 16 pixels, or 'auto'"):
            Tiling(tile_size=size)
    for name, value, need in (("precision", "fp64", "choose one of auto, bf16, fp16, fp32"),
                              ("augment", "yes", "give true or false"), ("overlap", -0.1, "must be between 0 and 0.9")):
        with pytest.raises(CellmixerError, match=f"^--{name} {value}: {need}"):
            Tiling(**{name: value})


def test_tiling_is_frozen_and_as_tiling_changes_a_copy():
    tiling = Tiling(batch_size=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiling.overlap = 0.5
    changed = as_tiling(tiling, overlap=0.5)
    assert (changed.batch_size, changed.overlap, tiling.overlap) == (8, 0.5, 0.25)
    assert as_tiling(tiling) is tiling and as_tiling() == Tiling()
    with pytest.raises(TypeError):
        as_tiling(overlapp=0.5)
    with pytest.raises(TypeError, match="expected a Tiling"):
        as_tiling({"overlap": 0.5})


# ------------------------------------------------------------------------------------------ signatures
TILING_FUNCTIONS = [cellmixer.predict, cellmixer.evaluate, cellmixer.predict_nuclei, cellmixer.segment_nuclei,
                    cellmixer.predict_typed, cellmixer.segment_typed, SegmentationModel.predict]


def test_signature_defaults_come_from_tiling():
    assert inspect.signature(cellmixer.predict).parameters["overlap"].default == 0.25
    for function in TILING_FUNCTIONS:
        assert function.settings_classes[0] is Tiling, function.__name__
        parameters = inspect.signature(function).parameters
        assert parameters["tiling"].default is None
        for field in dataclasses.fields(Tiling):
            parameter = parameters[field.name]
            assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
            assert parameter.default == field.default, (function.__name__, field.name)
    # The cell-centre detector has its own defaults: tiles of 512, 32 windows per backward pass.
    parameters = inspect.signature(cellmixer.segment_cells).parameters
    assert {n: parameters[n].default for n in ("tile_size", "batch_size", "precision")} == {
        "tile_size": 512, "batch_size": 32, "precision": "fp32"}
    assert CentroidTiling().likelihood == Tiling(tile_size=512)


def test_an_unknown_setting_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="overlapp"):
        cellmixer.predict(tmp_path / "model", tmp_path, tmp_path / "out", overlapp=0.5)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ every function
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained models of each method (their folders too): enough to reach every settings check."""
    root = tmp_path_factory.mktemp("untrained")
    cells = SegmentationModel.new(TYPES, width=4, depth=2)
    nuclei = SegmentationModel.new(["nucleus", "separation line"], width=4, depth=2,
                                   normalization={"method": "tile", "tile_size": 32})
    nuclei.config["task"] = "nuclei"
    detector = SegmentationModel.new([], width=4, depth=2)
    detector.config["task"] = "centroids"
    found = {"cellmixer": cells, "nuclei": nuclei, "centroids": detector}
    for name, model in found.items():
        model.save(root / name)
    return found, root


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    image, _, _ = synthetic_culture(TYPES, shape=(64, 80), seed=41)
    path = tmp_path_factory.mktemp("field") / "field.tif"
    tifffile.imwrite(path, image)
    return path


@pytest.mark.parametrize("name, value, message", BAD, ids=BAD_IDS)
def test_every_prediction_function_refuses_bad_settings_before_any_work(models, image_file, annotated_dir,
                                                                       tmp_path, name, value, message):
    found, _ = models
    cells, nuclei = found["cellmixer"], found["nuclei"]
    image = tifffile.imread(image_file)
    bad = {name: value}
    out = tmp_path / "out"
    calls = [
        lambda: cells.predict(image, **bad),
        lambda: cells.predict(image, tiling=Tiling(), **bad),
        lambda: cellmixer.predict(cells, image_file, out, progress=False, **bad),
        lambda: cellmixer.evaluate(cells, annotated_dir, output=out, progress=False, **bad),
        lambda: cellmixer.segment_nuclei(nuclei, image, **bad),
        lambda: cellmixer.predict_nuclei(nuclei, image_file, out, progress=False, **bad),
        lambda: cellmixer.segment_typed(cells, image, **bad),
        lambda: cellmixer.predict_typed(cells, image_file, out, progress=False, **bad),
    ]
    for call in calls:
        _refuses(call, message)
        assert not out.exists()


@pytest.mark.parametrize("name, value, message", [("tile_size", 8, "--tile-size 8: must be at least 16."),
                                                  ("batch_size", 0, "--batch-size 0: must be at least 1."),
                                                  ("precision", "fp64", "--precision fp64: choose one of auto, "
                                                                        "bf16, fp16, fp32.")])
def test_the_detector_refuses_bad_settings_before_any_work(models, image_file, tmp_path, name, value, message):
    found, _ = models
    detector = found["centroids"]
    _refuses(lambda: cellmixer.segment_cells(detector, tifffile.imread(image_file), **{name: value}), message)
    _refuses(lambda: cellmixer.predict_centroids(detector, image_file, tmp_path / "out", progress=False,
                                                 **{name: value}), message)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ every command
def _command_lines(root, image_file, annotated_dir, out):
    """``{command: argv up to the sliding-window options}`` of every command that has them."""
    return {
        "predict": ["predict", root / "cellmixer", image_file, "-o", out],
        "evaluate": ["evaluate", root / "cellmixer", "--data", annotated_dir, "-o", out],
        "nuclei predict": ["nuclei", "predict", root / "nuclei", image_file, "-o", out],
        "typed predict": ["typed", "predict", root / "cellmixer", image_file, "-o", out],
        "centroids predict": ["centroids", "predict", root / "centroids", image_file, "-o", out],
    }


CLI_CASES = [
    # (command, option, value, the message) for each option that the command has.
    ("predict", "--batch-size", "0", "--batch-size 0: must be at least 1."),
    ("predict", "--overlap", "nan", "--overlap nan: must be a finite number."),
    ("evaluate", "--overlap", "1.5", "--overlap 1.5: must be between 0 and 0.9."),
    ("evaluate", "--tile-size", "8", "--tile-size 8: must be at least 16 pixels"),
    ("evaluate", "--batch-size", "0", "--batch-size 0: must be at least 1."),
    ("nuclei predict", "--overlap", "1.5", "--overlap 1.5: must be between 0 and 0.9."),
    ("nuclei predict", "--batch-size", "0", "--batch-size 0: must be at least 1."),
    ("nuclei predict", "--overlap", "nan", "--overlap nan: must be a finite number."),
    ("typed predict", "--overlap", "1.5", "--overlap 1.5: must be between 0 and 0.9."),
    ("typed predict", "--batch-size", "0", "--batch-size 0: must be at least 1."),
    ("typed predict", "--overlap", "nan", "--overlap nan: must be a finite number."),
    ("centroids predict", "--tile-size", "8", "--tile-size 8: must be at least 16."),
    ("centroids predict", "--batch-size", "0", "--batch-size 0: must be at least 1."),
]


@pytest.mark.parametrize("command, option, value, message", CLI_CASES,
                         ids=[f"{c.replace(' ', '-')}{o}-{v}" for c, o, v, _ in CLI_CASES])
def test_every_command_refuses_bad_settings_in_one_line(capsys, models, image_file, annotated_dir, tmp_path,
                                                        command, option, value, message):
    _, root = models
    out = tmp_path / "out"
    argv = _command_lines(root, image_file, annotated_dir, out)[command] + [option, value, "--quiet"]
    capsys.readouterr()
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith(f"cellmixer {command}: error: {message}"), lines[0]
    assert not out.exists()


# ------------------------------------------------------------------------------------------ one object
def test_a_tiling_object_and_keyword_options_predict_the_same(models):
    found, _ = models
    model = found["cellmixer"]
    image, _, _ = synthetic_culture(TYPES, shape=(72, 100), seed=42)
    by_keywords = model.predict(image, tile_size=32, overlap=0.5, batch_size=3, probabilities=True)
    by_object = model.predict(image, tiling=Tiling(tile_size=32, overlap=0.5, batch_size=3), probabilities=True)
    mixed = model.predict(image, tiling=Tiling(tile_size=32, batch_size=3), overlap=0.5, probabilities=True)
    for labels, probs in (by_object, mixed):
        np.testing.assert_array_equal(labels, by_keywords[0])
        np.testing.assert_array_equal(probs, by_keywords[1])
    # ... and the overlap really is used: another one blends other tiles.
    assert not np.array_equal(model.predict(image, tile_size=32, overlap=0, probabilities=True)[1], by_keywords[1])


# ------------------------------------------------------------------------------------------ run_images
def test_run_images_checks_every_output_before_any_work(tmp_path):
    inputs = tmp_path / "inputs"
    (inputs / "sub").mkdir(parents=True)
    for rel in ("a.tif", "sub/b.tif"):
        tifffile.imwrite(inputs / rel, np.arange(16, dtype=np.uint8).reshape(4, 4))
    out, seen, done, folder_made = tmp_path / "out", [], [], []

    def process(item, stem):  # item: a cellmixer.io.InputImage (path, stem, key, plane)
        (out / f"{stem}_x.txt").write_text(stem)
        done.append(stem)
        return {"image": item.path.name, "stem": stem, "extra": 1}

    def on_inputs(found):
        seen.extend(stem for _, stem in found)
        folder_made.append(out.exists())

    options = dict(outputs=lambda stem: [f"{stem}_x.txt"], process=process, summary_file="table.csv",
                   summary_fields=["image", "stem"], settings_file="run.json", settings={"k": 1},
                   extra_files=["more.json"], on_inputs=on_inputs, progress=False)
    with pytest.raises(ValueError, match="extra"):  # the summary has only the columns asked for
        run_images(inputs, out, **options)
    assert seen == ["a", "sub__b"] and done == ["a", "sub__b"]
    assert folder_made == [False]  # on_inputs ran before the output folder was made
    options["summary_fields"] = ["image", "stem", "extra"]
    rows = run_images(inputs, out, overwrite=True, **options)
    assert [r["stem"] for r in rows] == ["a", "sub__b"]
    with open(out / "table.csv") as handle:
        assert [r["stem"] for r in csv.DictReader(handle)] == ["a", "sub__b"]
    assert json.loads((out / "run.json").read_text()) == {"k": 1}
    # Any file of the run that exists is refused before any image is processed, the extra ones too.
    for existing in ("sub__b_x.txt", "more.json", "table.csv", "run.json"):
        for old in out.iterdir():
            old.unlink()
        (out / existing).write_text("keep")
        done.clear()
        with pytest.raises(CellmixerError, match=f"{existing} already exists; pass --overwrite"):
            run_images(inputs, out, **options)
        assert done == [] and (out / existing).read_text() == "keep"


# ------------------------------------------------------------------------------------------ round trips
class _Pointwise(nn.Module):
    """A network that sees one pixel (1x1 convolutions) on a pooling grid of 8: tiles cannot change it."""

    size_multiple = 8

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 8, 1), nn.ReLU(), nn.Conv2d(8, 3, 1))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.9])
@pytest.mark.parametrize("tile", [16, 24, 40])
def test_tile_by_tile_is_exactly_one_pass_for_a_pointwise_network(tile, overlap):
    """Every tile's prediction of a pixel is the one-pass prediction, so the blend of any tiles is too:
    what remains is float rounding. Catches any tile, stride, band or blend bookkeeping error."""
    network = _Pointwise().eval()
    image = np.random.default_rng(3).normal(100, 20, (8 * 9, 8 * 13)).astype(np.float32)
    options = dict(offset=100.0, scale=20.0, num_classes=3)
    whole = np.empty((3, *image.shape), np.float32)
    tiled = np.empty((3, *image.shape), np.float32)
    whole_labels = predict_probabilities(network, image, tiling=Tiling(tile_size=None), probabilities=whole, **options)
    labels = predict_probabilities(network, image, tiling=Tiling(tile_size=tile, overlap=overlap, batch_size=3),
                                   probabilities=tiled, **options)
    assert len(tile_starts(image.shape[0], tile, tile)) > 1  # several tiles on both axes
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-6)
    top2 = np.sort(whole, axis=0)[-2:]
    clear = top2[1] - top2[0] > 1e-4
    np.testing.assert_array_equal(labels[clear], whole_labels[clear])


@pytest.mark.parametrize("overlap", [0.5, 0.75])
def test_predict_tile_by_tile_matches_one_pass_on_the_grid(trained, tmp_path, overlap):
    """InstanSeg's round trip, through the files of :func:`cellmixer.predict`: an image whose sides are
    multiples of the network's pooling grid, predicted in tiles of 128 (smaller than the U-Net's
    receptive field) with overlap, gives the labels of one pass where one pass is not a near tie."""
    model, folder = trained
    multiple = model.network.size_multiple
    image, _, _ = synthetic_culture(TYPES, shape=(20 * multiple, 28 * multiple), seed=31)
    path = tmp_path / "grid.tif"
    tifffile.imwrite(path, image)
    whole_dir, tiled_dir = tmp_path / "whole", tmp_path / "tiled"
    cellmixer.predict(folder, path, whole_dir, tile_size=None, probabilities=True, overlays=False, progress=False)
    tiling = Tiling(tile_size=128, overlap=overlap)
    cellmixer.predict(folder, path, tiled_dir, tiling=tiling, probabilities=True, overlays=False, progress=False)
    whole, tiled = (tifffile.imread(d / "grid_labels.tif") for d in (whole_dir, tiled_dir))
    probs, tiled_probs = (tifffile.imread(d / "grid_probabilities.tif") for d in (whole_dir, tiled_dir))
    np.testing.assert_array_equal(tiled, model.predict(image, tiling=tiling))
    assert min(len(tile_starts(n, 128, 64)) for n in image.shape) >= 3
    top2 = np.sort(probs, axis=0)[-2:]
    margin = top2[1] - top2[0]
    assert (margin > 0.5).mean() > 0.5  # a trained model: most pixels are confident
    differ = tiled != whole
    # Tiles smaller than the receptive field change a few more pixels than the 256-pixel tiles of
    # test_inference (0.1 %), but, as there, only where the one-pass prediction was itself a near tie.
    assert differ.mean() <= 0.005, differ.mean()
    assert (margin[differ] < 0.5).all(), margin[differ].max()
    assert np.abs(tiled_probs - probs).mean() < 0.01
