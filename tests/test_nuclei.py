"""Nuclei from classical labels: log-Dice loss, samplers, training with validation selection,
instance prediction, evaluation, and the `cellmixer nuclei` commands."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import tifffile
import torch

from cellmixer._errors import CellmixerError
from cellmixer.cli import main
from cellmixer.engine import LabelledImage, SegmentationModel, TileSampler, validation_tiles
from cellmixer.methods.nuclei import (
    evaluate_nuclei,
    nucleus_targets,
    predict_nuclei,
    segment_nuclei,
    summarize_instance_scores,
    train_nuclei,
)
from cellmixer.ops import IGNORE, log_dice_loss

from .test_cli import assert_one_line_error


def synthetic_nuclei(shape=(128, 128), count=14, seed=0):
    """Bright blurred discs (some touching) on a dark noisy background, with their true labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    labels = np.zeros(shape, np.int32)
    k = 0
    for _ in range(count * 5):
        r = rng.uniform(6, 10)
        cy, cx = rng.uniform(r, shape[0] - r), rng.uniform(r, shape[1] - r)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if (labels[disc] > 0).mean() > 0.05:
            continue
        k += 1
        labels[disc & (labels == 0)] = k
        if k == count:
            break
    from scipy import ndimage as ndi

    image = ndi.gaussian_filter((labels > 0).astype(float), 1.5) * 3000 + 400
    image = image + rng.normal(0, 40, shape)
    return np.clip(image, 0, 65535).astype(np.uint16), labels


@pytest.fixture(scope="module")
def nuclei_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("nuclei")
    (root / "images").mkdir()
    (root / "truth").mkdir()
    for i in range(4):
        image, labels = synthetic_nuclei(seed=i)
        tifffile.imwrite(root / "images" / f"n{i}.tif", image)
        tifffile.imwrite(root / "truth" / f"n{i}.tif", labels.astype(np.uint16))
    return root


@pytest.fixture(scope="module")
def nucleus_model(nuclei_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("nucleus_model") / "model"
    model = train_nuclei(nuclei_dir / "images", folder, model_options={"width": 8, "depth": 3}, iterations=120,
                         batch_size=4, crop_size=64, learning_rate=3e-3, checkpoint_every=30,
                         diameter_range=(8, 30), threads=1, progress=False)
    return model, folder


# ----------------------------------------------------------------------------- loss
def one_hot_logits(target, num_classes, scale=30.0):
    return scale * torch.nn.functional.one_hot(target, num_classes).permute(0, 3, 1, 2).float()


def test_log_dice_matches_the_paper_formula():
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(2, 3, 5, 6)).astype(np.float32))
    target = torch.from_numpy(rng.integers(0, 3, (2, 5, 6)))
    p = torch.softmax(logits, 1).numpy()
    y = np.eye(3)[target.numpy()].transpose(0, 3, 1, 2)
    d = [(2 * (y[:, c] * p[:, c]).sum() + 1) / (y[:, c].sum() + p[:, c].sum() + 1) for c in range(3)]
    expected = -(0.2 * math.log(d[0]) + 0.4 * math.log(d[1]) + 0.4 * math.log(d[2]))
    assert float(log_dice_loss(logits, target)) == pytest.approx(expected, rel=1e-5)


def test_log_dice_ignores_ignored_pixels_and_weighs_classes():
    target = torch.tensor([[[0, 1, 2, 1]]])
    logits = one_hot_logits(target, 3)
    assert float(log_dice_loss(logits, target)) < 1e-6
    spoiled = logits.clone()
    spoiled[0, :, 0, 3] = torch.tensor([30.0, 0, 0])  # a nucleus pixel called background
    ignored = target.clone()
    ignored[0, 0, 3] = IGNORE
    assert float(log_dice_loss(spoiled, target)) > 0.1
    assert float(log_dice_loss(spoiled, ignored)) < 1e-6
    # All weight on background: the error on a nucleus pixel still costs (background Dice drops).
    assert float(log_dice_loss(spoiled, target, weights=(0, 0, 1))) < 1e-6
    with pytest.raises(ValueError):
        log_dice_loss(logits, target, weights=(1, 1))


# ----------------------------------------------------------------------------- data
def test_sampler_crops_are_normalized_and_flipped_with_their_targets():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, (40, 50)).astype(np.float32)
    target = (image > 100).astype(np.uint8)
    sampler = TileSampler([LabelledImage(image, target)], crop_size=32)
    images, targets = sampler.batch(np.random.default_rng(1), 6)
    assert images.shape == (6, 1, 32, 32) and targets.shape == (6, 32, 32) and targets.dtype == np.int64
    for x, t in zip(images[:, 0], targets):
        assert abs(x.mean()) < 1e-4 and x.std() == pytest.approx(1, abs=1e-3)
        # Normalization is monotonic, so the target still marks exactly the bright pixels after any flip.
        assert x[t == 1].min() > x[t == 0].max()


def test_sampler_pads_small_images_and_ignores_the_padding():
    image = np.arange(20 * 24, dtype=np.float32).reshape(20, 24)
    target = np.ones((20, 24), np.uint8)
    sampler = TileSampler([LabelledImage(image, target)], crop_size=32, augment=False)
    x, t = sampler.sample(np.random.default_rng(0))
    assert x.shape == (32, 32)
    assert (t[:20, :24] == 1).all() and (t[20:] == IGNORE).all() and (t[:, 24:] == IGNORE).all()


def test_validation_tiles_cover_every_pixel():
    image = np.random.default_rng(0).normal(size=(70, 90)).astype(np.float32)
    target = np.zeros((70, 90), np.uint8)
    target[::7, ::9] = 1
    images, targets = validation_tiles([LabelledImage(image, target)], 32)
    assert images.shape[1:] == (1, 32, 32) and len(images) == 3 * 3
    assert targets.sum() >= target.sum()


def test_targets_from_label_files_and_missing_files(nuclei_dir, tmp_path):
    items = nucleus_targets([nuclei_dir / "images" / "n0.tif"], labels="files", label_dir=nuclei_dir / "truth",
                            label_suffix="", progress=False)
    truth = tifffile.imread(nuclei_dir / "truth" / "n0.tif")
    assert set(np.unique(items[0].target)) <= {0, 1, 2}
    assert np.array_equal(items[0].target > 0, truth > 0)
    with pytest.raises(CellmixerError, match="n0.*no label image.*--label-dir"):
        nucleus_targets([nuclei_dir / "images" / "n0.tif"], labels="files", label_dir=tmp_path, progress=False)


def test_irregular_classical_objects_are_left_out_of_the_loss(nuclei_dir):
    path = [nuclei_dir / "images" / "n0.tif"]
    options = dict(classical_options={"diameter_range": (8, 30)}, progress=False)
    plain = nucleus_targets(path, **options)[0].target
    strict = nucleus_targets(path, min_solidity=0.97, **options)[0].target
    assert not (plain == IGNORE).any()
    ignored = strict == IGNORE
    assert ignored.any() and (plain[ignored] > 0).all()          # whole objects, never background
    assert np.array_equal(strict[~ignored], plain[~ignored])


# ----------------------------------------------------------------------------- training
def test_training_writes_a_nucleus_model_selected_on_validation(nucleus_model):
    model, folder = nucleus_model
    assert {"config.json", "weights.safetensors", "training_log.csv", "training_curve.png", "checkpoint"} <= {
        p.name for p in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    assert config["task"] == "nuclei" and config["classes"] == ["nucleus", "separation line"]
    assert config["normalization"] == {"method": "tile", "tile_size": 64}
    info = config["training"]
    with open(folder / "training_log.csv") as fh:
        log = list(csv.DictReader(fh))
    validated = {int(r["iteration"]): float(r["validation_loss"]) for r in log if r["validation_loss"]}
    assert sorted(validated) == [30, 60, 90, 120]
    best = min(validated, key=validated.get)
    assert info["selected_iteration"] == best
    assert info["validation_loss"] == pytest.approx(validated[best], abs=1e-5)
    assert validated[best] < validated[30]
    assert info["train_images"] == 3 and info["validation_images"] == 1
    # The saved weights are the selected ones, not the last.
    reloaded = SegmentationModel.load(folder)
    for key, value in reloaded.network.state_dict().items():
        assert torch.equal(value, model.network.state_dict()[key])


def test_trained_model_finds_the_nuclei(nucleus_model, nuclei_dir):
    model, _ = nucleus_model
    image = tifffile.imread(nuclei_dir / "images" / "n3.tif")
    truth = tifffile.imread(nuclei_dir / "truth" / "n3.tif")
    labels = segment_nuclei(model, image)
    assert labels.dtype == np.int32
    found, true = labels.max(), truth.max()
    assert abs(int(found) - int(true)) <= 3, (found, true)
    inside = (labels > 0) & (truth > 0)
    assert inside.sum() / max(1, (truth > 0).sum()) > 0.7


def test_segment_nuclei_of_a_blank_image_is_empty(nucleus_model):
    model, _ = nucleus_model
    assert not segment_nuclei(model, np.full((50, 60), 7, np.uint16)).any()
    with pytest.raises(CellmixerError, match="NaN"):
        segment_nuclei(model, np.full((50, 60), np.nan))


def test_resume_extends_the_run(nuclei_dir, tmp_path, trained):
    options = dict(model_options={"width": 4, "depth": 2}, batch_size=2, crop_size=32, checkpoint_every=5,
                   diameter_range=(8, 30), threads=1, progress=False)
    train_nuclei(nuclei_dir / "images", tmp_path / "m", iterations=5, **options)
    model = train_nuclei(nuclei_dir / "images", tmp_path / "m", iterations=10, resume=True, **options)
    with open(tmp_path / "m" / "training_log.csv") as fh:
        assert [int(r["iteration"]) for r in csv.DictReader(fh)] == list(range(1, 11))
    assert model.config["training"]["iterations"] == 10
    from cellmixer.methods.cellmixer import train

    with pytest.raises(CellmixerError, match="nucleus model.*cellmixer nuclei train"):
        train(nuclei_dir, tmp_path / "m", resume=True, progress=False)
    with pytest.raises(CellmixerError, match="cell-type model.*`cellmixer train --resume`"):
        train_nuclei(nuclei_dir / "images", trained[1], iterations=10, resume=True, **options)


def test_training_refuses_bad_settings(nuclei_dir, tmp_path):
    with pytest.raises(CellmixerError, match="--labels watershed"):
        train_nuclei(nuclei_dir / "images", tmp_path / "a", labels="watershed", progress=False)
    with pytest.raises(CellmixerError, match="--labels shape/shape and --label-dir"):
        train_nuclei(nuclei_dir / "images", tmp_path / "b", labels="shape/shape", label_dir=nuclei_dir / "truth",
                     progress=False)
    with pytest.raises(CellmixerError, match="at least 2 images"):
        train_nuclei([nuclei_dir / "images" / "n0.tif"], tmp_path / "c", progress=False)
    with pytest.raises(CellmixerError, match="--dice-weights"):
        train_nuclei(nuclei_dir / "images", tmp_path / "d", dice_weights=(1, 1), progress=False)


# ----------------------------------------------------------------------------- prediction and evaluation
def test_predict_writes_labels_tables_and_overlays(nucleus_model, nuclei_dir, tmp_path):
    _, folder = nucleus_model
    rows = predict_nuclei(folder, nuclei_dir / "images", tmp_path / "out", classes=True, progress=False)
    assert len(rows) == 4
    for row in rows:
        stem = row["image"].rsplit("/", 1)[-1][:-4]
        labels = tifffile.imread(tmp_path / "out" / f"{stem}_labels.tif")
        with open(tmp_path / "out" / f"{stem}_objects.csv") as fh:
            table = list(csv.DictReader(fh))
        assert len(table) == row["objects"] == len(np.unique(labels)) - 1
        assert (tmp_path / "out" / f"{stem}_overlay.png").is_file()
        assert set(np.unique(tifffile.imread(tmp_path / "out" / f"{stem}_classes.tif"))) <= {0, 1, 2}
    before = (tmp_path / "out" / "nuclei.csv").read_bytes()
    with pytest.raises(CellmixerError, match="--overwrite"):
        predict_nuclei(folder, nuclei_dir / "images", tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "nuclei.csv").read_bytes() == before


def test_predict_refuses_a_cell_type_model(trained, nuclei_dir, tmp_path):
    _, folder = trained
    with pytest.raises(CellmixerError, match="not a nucleus model"):
        predict_nuclei(folder, nuclei_dir / "images", tmp_path / "out", progress=False)


def test_evaluate_nuclei_scores_perfect_and_spoiled_predictions(nuclei_dir, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    for i in range(4):
        truth = tifffile.imread(nuclei_dir / "truth" / f"n{i}.tif")
        if i == 0:  # merge two nuclei
            truth = np.where(truth == 2, 1, truth)
        tifffile.imwrite(pred / f"n{i}_labels.tif", truth)
    result = evaluate_nuclei(pred, nuclei_dir / "truth", exclude_border=False, output=tmp_path / "ev")
    per_image = {r["image"]: r for r in result["images"]}
    assert per_image["n1"]["object_jaccard"] == 1.0 and per_image["n0"]["object_jaccard"] < 1.0
    s = result["summary"]
    assert s["n_true"] == s["n_pred"] + 1 and s["matched"] <= s["n_pred"]
    assert json.loads((tmp_path / "ev" / "nuclei_evaluation.json").read_text())["summary"]["images"] == 4
    with pytest.raises(CellmixerError, match="no ground truth"):
        evaluate_nuclei(pred, tmp_path / "ev")
    # Label images in sub-folders (as `nuclei label` mirrors its inputs) are found too.
    (pred / "plate").mkdir()
    (pred / "n1_labels.tif").rename(pred / "plate" / "n1_labels.tif")
    again = evaluate_nuclei(pred, nuclei_dir / "truth", exclude_border=False)
    assert {r["image"] for r in again["images"]} == {"n0", "plate/n1", "n2", "n3"}
    assert again["summary"] == result["summary"]


def test_summary_pools_jaccard_counts():
    rows = [dict(object_jaccard=1.0, matched=10, n_true=10, n_pred=10, f1_50=1.0, mean_f1=1.0, ap_50=1.0,
                 average_precision=1.0, precision_50=1.0, recall_50=1.0, splits=0, merges=0, missed_70=0),
            dict(object_jaccard=0.0, matched=0, n_true=1, n_pred=1, f1_50=0.0, mean_f1=0.0, ap_50=0.0,
                 average_precision=0.0, precision_50=0.0, recall_50=0.0, splits=0, merges=1, missed_70=1)]
    s = summarize_instance_scores(rows)
    assert s["object_jaccard"] == pytest.approx(10 / 12) and s["object_jaccard_mean"] == 0.5 and s["merges"] == 1


# ----------------------------------------------------------------------------- command line
def test_cli_train_predict_evaluate(nuclei_dir, tmp_path, capsys):
    model = tmp_path / "model"
    assert main(["nuclei", "train", str(nuclei_dir / "images"), "--output", str(model), "--iterations", "4",
                 "--crop-size", "32", "--batch-size", "2", "--width", "4", "--depth", "2", "--diameter", "8", "30",
                 "--checkpoint-every", "2", "--threads", "1", "-q"]) == 0
    assert "kept iteration" in capsys.readouterr().out
    assert main(["nuclei", "predict", str(model), str(nuclei_dir / "images"), "-o", str(tmp_path / "pred"),
                 "--classes", "-q"]) == 0
    assert main(["nuclei", "evaluate", str(tmp_path / "pred"), "--truth", str(nuclei_dir / "truth"),
                 "-o", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "Object Jaccard" in out and (tmp_path / "ev" / "nuclei_evaluation.csv").is_file()


@pytest.mark.parametrize("argv, needles", [
    (["nuclei", "train", "{images}/n0.tif", "-o", "{tmp}/m"], ("at least 2 images",)),
    (["nuclei", "train", "{images}", "-o", "{tmp}/m", "--labels", "shape/shape", "--label-dir", "{tmp}"],
     ("--label-dir",)),
    (["nuclei", "train", "{images}", "-o", "{tmp}/m", "--label-dir", "{tmp}"], ("no label image",)),
    (["nuclei", "predict", "{tmp}/missing", "{images}", "-o", "{tmp}/p"], ("missing",)),
    (["nuclei", "evaluate", "{tmp}", "--truth", "{images}"], ("no *_labels.tif",)),
])
def test_cli_errors_are_one_line(argv, needles, nuclei_dir, tmp_path, capsys):
    argv = [a.format(images=nuclei_dir / "images", tmp=tmp_path) for a in argv]
    status = main(argv)
    assert_one_line_error(status, capsys.readouterr().err, *needles)


# ----------------------------------------------------------------------------- bad input
def test_predict_handles_float_16bit_and_multichannel_images(nucleus_model, nuclei_dir, tmp_path):
    _, folder = nucleus_model
    image = tifffile.imread(nuclei_dir / "images" / "n1.tif")
    tifffile.imwrite(tmp_path / "float.tif", image.astype(np.float32) / 65535)
    tifffile.imwrite(tmp_path / "blank.tif", np.zeros((64, 80), np.uint16))
    rows = predict_nuclei(folder, [tmp_path / "float.tif", tmp_path / "blank.tif"], tmp_path / "out",
                          overlays=False, progress=False)
    counts = {r["image"].rsplit("/", 1)[-1]: r["objects"] for r in rows}
    reference = segment_nuclei(folder, image).max()
    assert counts["float.tif"] == reference and counts["blank.tif"] == 0
    with open(tmp_path / "out" / "blank_objects.csv") as fh:
        assert fh.read().startswith("label,area") and len(fh.readlines()) == 0
    tifffile.imwrite(tmp_path / "two.tif", np.stack([image // 2, image]))
    rows = predict_nuclei(folder, [tmp_path / "two.tif"], tmp_path / "out2", channel=1, progress=False)
    assert rows[0]["objects"] > 0


def test_training_names_a_constant_image(nuclei_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("n0.tif", "n1.tif"):
        (images / name).write_bytes((nuclei_dir / "images" / name).read_bytes())
    tifffile.imwrite(images / "flat.tif", np.full((64, 64), 9, np.uint16))
    with pytest.raises(CellmixerError, match="flat.tif.*constant"):
        train_nuclei(images, tmp_path / "m", iterations=2, progress=False)


# ----------------------------------------------------------------------------- large images in chunks
def test_large_image_in_chunks_equals_the_whole_image_nucleus_for_nucleus(nucleus_model, tmp_path):
    """The InstanSeg round trip on the nucleus method: nuclei on and across every chunk border, the same
    nuclei (same pixels, same raster-order numbers) whole and in chunks; the same table."""
    from cellmixer.engine import Chunking, Tiling, dask_scheduler, predict_chunked
    from cellmixer.io import read_ome_zarr_labels
    from cellmixer.methods.nuclei._predict import nuclei_task

    from .test_chunked import as_raster_order

    model, folder = nucleus_model
    image, _ = synthetic_nuclei(shape=(300, 420), count=150, seed=7)
    tiling = Tiling(batch_size=4)
    task = nuclei_task(model, tiling, source=folder, remove_border=True, min_area=5)
    with dask_scheduler("threads"):
        summary = predict_chunked(image, task, tmp_path / "n.ome.zarr", chunking=Chunking(chunk_size=128, halo=60),
                                  progress=False)
    whole = as_raster_order(segment_nuclei(model, image, tiling=tiling, remove_border=True, min_area=5))
    chunked = read_ome_zarr_labels(tmp_path / "n.ome.zarr", "nuclei").compute()
    assert whole.max() > 40 and summary["objects_cut"] == 0
    for border in (128, 256):
        assert len(np.intersect1d(whole[border - 1], whole[border])) > 1
    assert len(np.intersect1d(whole[:, 127], whole[:, 128])) > 1
    np.testing.assert_array_equal(chunked, whole)


def test_predict_writes_large_images_as_ome_zarr(nucleus_model, tmp_path):
    """`nuclei predict` sends TIFFs larger than two chunks to the chunked path: OME-Zarr, table, overlay."""
    _, folder = nucleus_model
    image, _ = synthetic_nuclei(shape=(300, 420), count=150, seed=7)
    tifffile.imwrite(tmp_path / "big.tif", image, tile=(64, 64))
    tifffile.imwrite(tmp_path / "small.tif", image[:100, :100])
    out = tmp_path / "out"
    assert main(["nuclei", "predict", str(folder), str(tmp_path / "big.tif"), str(tmp_path / "small.tif"),
                 "--output", str(out), "--chunk-size", "200", "--halo", "40", "--scheduler", "threads",
                 "--quiet"]) == 0
    assert (out / "big.ome.zarr").is_dir() and not (out / "big_labels.tif").exists()
    assert (out / "small_labels.tif").is_file()
    with open(out / "nuclei.csv") as fh:
        rows = list(csv.DictReader(fh))
    with open(out / "big_objects.csv") as fh:
        objects = list(csv.DictReader(fh))
    assert int(rows[0]["objects"]) == len(objects) > 40
    assert (out / "big_overlay.png").is_file()
