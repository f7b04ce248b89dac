"""Typed cells end to end on generated cultures: route 1 (CellMixer model + instance source), route 2
(COCO-trained two-head model), the files written, evaluation, and the ``cellmixer typed`` commands."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile

from cellmixer._errors import CellmixerError
from cellmixer.cli import main
from cellmixer.demo import synthetic_culture
from cellmixer.engine import SegmentationModel
from cellmixer.methods.typed import label_annotations, predict_typed, segment_typed, train_typed

TINY_TYPED = dict(model_options={"width": 4, "depth": 2}, crop_size=32, batch_size=2, iterations=4, threads=1,
                  checkpoint_every=2, progress=False)


def write_coco(folder, *, types=("roundcell", "spindle"), per_type=2, shape=(64, 72), seed=0, annotate=True):
    """``<type>_<i>.tif`` images and ``annotations.json`` (RLE, one category 'cell')."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for name in types:
        for i in range(per_type):
            image, instances, _ = synthetic_culture(name, shape=shape, rng=rng)
            file_name = f"{name}_{i}.tif"
            tifffile.imwrite(folder / file_name, image)
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": file_name, "height": shape[0], "width": shape[1]})
            if annotate:
                from cellmixer.io import relabel_consecutive

                labels = relabel_consecutive(instances)
                annotations += label_annotations(labels, image_id=image_id, category_ids=[1] * int(labels.max()),
                                                 first_id=len(annotations) + 1)
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "cell"}]}))
    return path


@pytest.fixture(scope="module")
def coco_data(tmp_path_factory):
    return write_coco(tmp_path_factory.mktemp("typed_coco"))


@pytest.fixture(scope="module")
def typed_model(coco_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("typed_model") / "model"
    model = train_typed(coco_data, folder, class_from="prefix", validation_fraction=0.25, **TINY_TYPED)
    return model, folder


# ------------------------------------------------------------------------------- route 1
def test_route1_types_cells_of_any_instance_source(trained):
    model, _ = trained
    image, instances, _ = synthetic_culture(["roundcell", "spindle"], shape=(96, 112), seed=4)
    default = segment_typed(model, image)
    assert default.type_names == model.classes and default.labels.shape == image.shape
    assert len(default) > 0 and set(default.types) <= set(range(len(model.classes)))
    assert np.all((default.scores > 0) & (default.scores <= 1))
    given = segment_typed(model, image, instances=instances)
    assert len(given) == len(np.unique(instances)) - 1
    called = segment_typed(model, image, instances=lambda img, stem, probs: (probs[0] < 0.5).astype(int))
    assert called.labels.max() == 1
    components = segment_typed(model, image, instances="components")
    assert len(components) <= len(default)  # the watershed only splits
    blank = segment_typed(model, np.full((40, 40), 7, np.uint16))
    assert len(blank) == 0 and blank.counts() == dict.fromkeys(model.classes, 0)
    with pytest.raises(CellmixerError, match="instances"):
        segment_typed(model, image, instances="nonsense-source")


def test_route1_predict_writes_every_output(trained, tmp_path):
    model, folder = trained
    image, _, _ = synthetic_culture(["roundcell", "spindle"], shape=(80, 90), seed=5)
    tifffile.imwrite(tmp_path / "mix.tif", image)
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros((50, 60), np.uint16))  # no cells: empty outputs
    rows = predict_typed(folder, [tmp_path / "mix.tif", tmp_path / "empty.tif"], tmp_path / "out", progress=False)
    out = tmp_path / "out"
    assert [r["cells"] > 0 for r in rows] == [True, False]
    for stem in ("mix", "empty"):
        for suffix in ("_labels.tif", "_types.tif", "_cells.csv", ".geojson", "_overlay.png"):
            assert (out / f"{stem}{suffix}").is_file()
    assert json.loads((out / "empty.geojson").read_text())["features"] == []
    with open(out / "counts.csv") as fh:
        counts = list(csv.DictReader(fh))
    assert list(counts[0]) == ["image", "cells", *model.classes]
    assert int(counts[0]["cells"]) == sum(int(counts[0][c]) for c in model.classes)
    results = json.loads((out / "coco_results.json").read_text())
    assert len(results) == rows[0]["cells"] and {r["file_name"] for r in results} == {"mix.tif"}
    assert {r["category_name"] for r in results} <= set(model.classes)
    settings = json.loads((out / "typed.json").read_text())
    assert settings["instance_source"] == "watershed" and "score" in settings


# ------------------------------------------------------------------------------- route 2
def test_route2_model_has_two_heads_and_predicts_typed_cells(typed_model, coco_data, tmp_path):
    model, folder = typed_model
    assert model.config["task"] == "typed" and model.config["types"] == ["roundcell", "spindle"]
    assert model.network.output_groups == (3, 2)
    info = model.config["training"]
    assert info["train_images"] == 3 and info["validation_images"] == 1 and info["class_from"] == "prefix"
    assert model.config["normalization"] == {"method": "tile", "tile_size": TINY_TYPED["crop_size"]}
    loaded = SegmentationModel.load(folder)
    image = tifffile.imread(coco_data.parent / "roundcell_0.tif")
    _, probs = loaded.predict(image, probabilities=True)
    np.testing.assert_allclose(probs[:3].sum(axis=0), 1, atol=1e-4)  # one softmax per head
    np.testing.assert_allclose(probs[3:].sum(axis=0), 1, atol=1e-4)
    cells = segment_typed(loaded, image)
    assert cells.type_names == ["roundcell", "spindle"]
    rows = predict_typed(folder, coco_data.parent, tmp_path / "pred", coco=coco_data, pattern="*.tif",
                         progress=False)
    assert len(rows) == 4
    ids = {r["image_id"] for r in json.loads((tmp_path / "pred" / "coco_results.json").read_text())}
    assert ids <= {1, 2, 3, 4}


def test_route2_image_normalization_round_trips(coco_data, tmp_path):
    model = train_typed(coco_data, tmp_path / "whole", class_from="prefix", normalization="image", **TINY_TYPED)
    assert model.config["normalization"]["method"] == "percentile"
    image = tifffile.imread(coco_data.parent / "spindle_1.tif")
    _, probs = SegmentationModel.load(tmp_path / "whole").predict(image, probabilities=True)
    np.testing.assert_allclose(probs, model.predict(image, probabilities=True)[1], atol=1e-5)
    np.testing.assert_allclose(probs[:3].sum(axis=0), 1, atol=1e-4)


def test_route2_bad_input(coco_data, tmp_path):
    with pytest.raises(CellmixerError, match="not one of"):
        train_typed(coco_data, tmp_path / "m1", class_from="prefix", classes=["roundcell"], **TINY_TYPED)
    empty = write_coco(tmp_path / "empty", per_type=1, annotate=False)
    with pytest.raises(CellmixerError, match="has no annotations"):
        train_typed(empty, tmp_path / "m2", **TINY_TYPED)
    with pytest.raises(CellmixerError, match="normalization"):
        train_typed(coco_data, tmp_path / "m4", class_from="prefix", normalization="per-cell", **TINY_TYPED)
    with pytest.raises(CellmixerError, match="one image cannot be split"):
        single = write_coco(tmp_path / "single", types=("roundcell",), per_type=1)
        train_typed(single, tmp_path / "m3", **TINY_TYPED)


# ------------------------------------------------------------------------------- command line
def run_cli(capsys, *args):
    capsys.readouterr()
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_round_trip_train_predict_evaluate(coco_data, tmp_path, capsys):
    model = tmp_path / "model"
    status, out, err = run_cli(capsys, "typed", "train", coco_data, "--class-from", "prefix", "--output", model,
                               "--iterations", 3, "--batch-size", 2, "--crop-size", 32, "--width", 4, "--depth", 2,
                               "--threads", 1, "--checkpoint-every", 3, "--validation-fraction", 0, "--quiet")
    assert status == 0, err
    assert "roundcell, spindle" in out and (model / "weights.safetensors").is_file()
    status, out, err = run_cli(capsys, "typed", "predict", model, coco_data.parent, "--pattern", "*.tif",
                               "--output", tmp_path / "pred", "--quiet")
    assert status == 0, err
    assert (tmp_path / "pred" / "coco_results.json").is_file()
    status, out, err = run_cli(capsys, "typed", "evaluate", tmp_path / "pred", "--truth", coco_data,
                               "--class-from", "prefix", "--output", tmp_path / "eval")
    assert status == 0, err
    assert "class-agnostic" in out and "roundcell" in out
    report = json.loads((tmp_path / "eval" / "typed_evaluation.json").read_text())
    assert report["class_agnostic"]["max_detections"] == [100, 500, 2000]
    assert len(report["counts"]) == 4
    # Existing results are not replaced without --overwrite: one line, exit 2.
    status, out, err = run_cli(capsys, "typed", "predict", model, coco_data.parent, "--pattern", "*.tif",
                               "--output", tmp_path / "pred", "--quiet")
    assert status == 2 and "already exists" in err and len(err.strip().splitlines()) == 1


def test_cli_bad_coco_is_one_line_error(coco_data, tmp_path, capsys):
    status, out, err = run_cli(capsys, "typed", "train", coco_data, "--images", tmp_path, "--output",
                               tmp_path / "m", "--quiet")
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "are not in" in err and "--images" in err
    status, out, err = run_cli(capsys, "typed", "evaluate", tmp_path, "--truth", coco_data)
    assert status == 2 and "coco_results.json" in err
