"""Sliding-window inference and the predict command (cellmixer.inference)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage as ndi

from cellmixer._errors import CellmixerError
from cellmixer.demo import synthetic_culture
from cellmixer.engine import SegmentationModel, blend_window, tile_starts
from cellmixer.io import collect_inputs
from cellmixer.methods.cellmixer import predict, region_summary

TYPES = ["epithelial", "roundcell", "spindle"]


# ------------------------------------------------------------------------------------------ tiling geometry
@pytest.mark.parametrize("length", [1, 15, 16, 17, 100, 257, 1000])
@pytest.mark.parametrize("tile, stride", [(16, 16), (16, 8), (64, 48), (100, 75), (256, 192)])
def test_tile_starts_cover_the_length(length, tile, stride):
    starts = tile_starts(length, tile, stride)
    assert starts[0] == 0 and starts == sorted(set(starts))
    if length <= tile:
        assert starts == [0]
        return
    assert starts[-1] == length - tile  # the last tile ends exactly at the edge
    assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:]))
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s:s + tile] = True
    assert covered.all()


@pytest.mark.parametrize("shape", [(16, 16), (33, 20), (256, 256)])
def test_blend_window_properties(shape):
    w = blend_window(*shape)
    assert w.shape == shape and w.dtype == np.float32
    assert (w > 0).all() and w.max() <= 1
    np.testing.assert_allclose(w, w[::-1], rtol=1e-6)  # symmetric
    np.testing.assert_allclose(w, w[:, ::-1], rtol=1e-6)
    centre = w[shape[0] // 2, shape[1] // 2]
    assert centre > 0.9 and w[0, 0] < 0.05 * centre  # high in the middle, low at the edges
    row = w[shape[0] // 2]
    half = row[: (shape[1] + 1) // 2]
    assert np.all(np.diff(half) >= 0)  # rises monotonically towards the centre


# ------------------------------------------------------------------------------------------ whole vs tiled
@pytest.fixture(scope="module")
def coculture():
    images = {}
    for shape, seed in (((517, 333), 5), ((700, 900), 6)):
        image, _, _ = synthetic_culture(TYPES, shape=shape, seed=seed)
        images[shape] = image
    return images


@pytest.mark.parametrize("shape", [(517, 333), (700, 900)])
def test_tiled_prediction_equals_whole_image_prediction(trained, coculture, shape):
    model, _ = trained
    image = coculture[shape]
    whole, probs = model.predict(image, tile_size=None, probabilities=True)
    assert whole.shape == shape and probs.shape == (model.num_classes, *shape)
    np.testing.assert_allclose(probs.sum(axis=0), 1, atol=1e-4)
    top2 = np.sort(probs, axis=0)[-2:]
    margin = top2[1] - top2[0]
    assert (margin > 0.5).mean() > 0.5  # a trained model: most pixels are confident
    for tile in (256, 300):  # tiles well above the receptive field; 300 is rounded down to the 16-px grid
        tiled, tiled_probs = model.predict(image, tile_size=tile, overlap=0.25, probabilities=True)
        np.testing.assert_allclose(tiled_probs.sum(axis=0), 1, atol=1e-4)
        np.testing.assert_array_equal(tiled, tiled_probs.argmax(axis=0))
        differ = tiled != whole
        assert differ.mean() <= 0.001, (tile, differ.mean())
        # Where the labels differ, the whole-image prediction was itself a near tie.
        assert (margin[differ] < 0.5).all(), (tile, margin[differ].max())
        assert np.abs(tiled_probs - probs).mean() < 0.01


@pytest.mark.parametrize("shape", [(610, 90), (75, 530)])
def test_tiled_prediction_of_thin_images(trained, shape):
    """Images narrower than a tile on one side: tiles shrink to the image on that side."""
    model, _ = trained
    image, _, _ = synthetic_culture(TYPES, shape=shape, seed=12)
    whole, probs = model.predict(image, tile_size=None, probabilities=True)
    top2 = np.sort(probs, axis=0)[-2:]
    margin = top2[1] - top2[0]
    tiled = model.predict(image, tile_size=256)
    differ = tiled != whole
    assert differ.mean() <= 0.001 and (margin[differ] < 0.5).all()


def test_overlap_and_batch_size_do_not_change_much(trained, coculture):
    model, _ = trained
    image = coculture[(517, 333)]
    reference = model.predict(image, tile_size=128, overlap=0.25, batch_size=4)
    np.testing.assert_array_equal(model.predict(image, tile_size=128, overlap=0.25, batch_size=1), reference)
    assert (model.predict(image, tile_size=128, overlap=0.5) == reference).mean() > 0.995


def test_test_time_augmentation_is_flip_and_rotation_equivariant(trained, coculture):
    """With augment=True the prediction of a flipped or rotated image is the flipped or rotated prediction."""
    model, _ = trained
    image = coculture[(517, 333)][:256, :256]  # square, on the pooling grid: the 8 views see the same pixels
    labels, probs = model.predict(image, tile_size=None, augment=True, probabilities=True)
    np.testing.assert_allclose(probs.sum(axis=0), 1, atol=1e-4)
    for view, undo in ((lambda a: a[..., ::-1], lambda a: a[..., ::-1]),
                       (lambda a: np.rot90(a, 1, axes=(-2, -1)), lambda a: np.rot90(a, -1, axes=(-2, -1)))):
        _, view_probs = model.predict(np.ascontiguousarray(view(image)), tile_size=None, augment=True,
                                      probabilities=True)
        np.testing.assert_allclose(undo(view_probs), probs, atol=1e-4)
    plain = model.predict(image, tile_size=None)
    assert (plain == labels).mean() > 0.9  # averaging changes a few pixels, not the picture


def test_prediction_from_a_memory_mapped_image(trained, coculture, tmp_path):
    model, _ = trained
    image = coculture[(517, 333)]
    path = tmp_path / "image.npy"
    np.save(path, image)
    mapped = np.load(path, mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    expected, expected_probs = model.predict(image, tile_size=128, probabilities=True)
    np.testing.assert_array_equal(model.predict(mapped, tile_size=128), expected)
    # Probabilities can stream into a memory-mapped array as well.
    out = np.lib.format.open_memmap(tmp_path / "probs.npy", mode="w+", dtype=np.float32,
                                    shape=(model.num_classes, *image.shape))
    labels = model.predict(mapped, tile_size=128, probabilities=out)
    out.flush()
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_allclose(np.load(tmp_path / "probs.npy"), expected_probs, atol=1e-6)


def test_any_dtype_and_small_images(trained):
    model, _ = trained
    image, _, _ = synthetic_culture("roundcell", shape=(90, 70), seed=9)
    labels = model.predict(image)
    np.testing.assert_array_equal(model.predict(image.astype(np.float64)), labels)
    np.testing.assert_array_equal(model.predict(image.astype(np.int32)), labels)
    for shape in ((1, 1), (3, 40), (17, 5)):
        tiny_image = np.random.default_rng(0).normal(100, 5, shape)
        assert model.predict(tiny_image, tile_size=16).shape == shape


def test_labels_are_class_indices(trained):
    model, _ = trained
    image, _, _ = synthetic_culture(TYPES, shape=(128, 128), seed=4)
    labels = model.predict(image)
    assert labels.dtype == np.uint8 and labels.max() < model.num_classes


# ------------------------------------------------------------------------------------------ predict command
@pytest.fixture(scope="module")
def input_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "sub").mkdir()
    a, _, _ = synthetic_culture(TYPES, shape=(150, 130), seed=21)
    b, _, _ = synthetic_culture(["roundcell"], shape=(100, 120), seed=22)
    tifffile.imwrite(folder / "a.tif", a)
    Image.fromarray(b).save(folder / "sub" / "b.png")
    return folder


def test_predict_writes_labels_overlay_and_summary(trained, input_images, tmp_path):
    model, folder = trained
    out = tmp_path / "out"
    rows = predict(folder, input_images, out, probabilities=True, tile_size=64, progress=False)
    assert len(rows) == 2
    names = {p.name for p in out.iterdir() if not p.name.startswith(".")}  # and the hidden record of the run
    assert names == {"a_labels.tif", "a_overlay.png", "a_probabilities.tif", "sub__b_labels.tif",
                     "sub__b_overlay.png", "sub__b_probabilities.tif", "predictions.csv"}
    labels = tifffile.imread(out / "a_labels.tif")
    assert labels.shape == (150, 130) and labels.dtype == np.uint8
    image = tifffile.imread(input_images / "a.tif")
    np.testing.assert_array_equal(labels, model.predict(image, tile_size=64))
    probs = tifffile.imread(out / "a_probabilities.tif")
    assert probs.shape == (model.num_classes, 150, 130) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1, atol=1e-4)
    np.testing.assert_array_equal(probs.argmax(axis=0), labels)
    with Image.open(out / "a_overlay.png") as overlay:
        assert overlay.format == "PNG" and overlay.mode == "RGB"
        assert overlay.size[0] == 130 and overlay.size[1] > 150  # the legend sits under the image
    with open(out / "predictions.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [r["image"] for r in table] == ["a.tif", "sub/b.png"]  # keyed by the path relative to the input folder
    for row, stem in zip(table, ("a", "sub__b")):
        labels = tifffile.imread(out / f"{stem}_labels.tif")
        assert int(row["height"]) == labels.shape[0] and int(row["width"]) == labels.shape[1]
        for k, name in enumerate(model.classes, start=1):
            assert float(row[f"{name}_fraction"]) == pytest.approx((labels == k).mean(), abs=1e-6)
            regions = ndi.label(labels == k, np.ones((3, 3)))[1]
            assert int(row[f"{name}_regions"]) == regions


def test_predict_without_optional_files(trained, input_images, tmp_path):
    model, _ = trained
    rows = predict(model, input_images / "a.tif", tmp_path, overlays=False, progress=False)
    assert len(rows) == 1
    assert {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")} == {"a_labels.tif", "predictions.csv"}


def test_predict_refuses_to_overwrite(trained, input_images, tmp_path, snapshot):
    model, _ = trained
    out = tmp_path / "out"
    predict(model, input_images / "a.tif", out, probabilities=True, progress=False)
    before = snapshot(out)
    with pytest.raises(CellmixerError, match="already exists.*--overwrite"):
        predict(model, input_images / "a.tif", out, probabilities=True, progress=False)
    assert snapshot(out) == before
    # A partial clash is refused too, before anything is written.
    (out / "predictions.csv").unlink()
    before = snapshot(out)
    with pytest.raises(CellmixerError, match="a_labels.tif"):
        predict(model, input_images / "a.tif", out, progress=False)
    assert snapshot(out) == before
    predict(model, input_images / "a.tif", out, probabilities=True, overwrite=True, progress=False)
    assert (out / "predictions.csv").exists()


def test_predict_bad_arguments(trained, input_images, tmp_path):
    model, _ = trained
    with pytest.raises(CellmixerError, match="--tile-size 8"):
        predict(model, input_images, tmp_path, tile_size=8, progress=False)
    with pytest.raises(CellmixerError, match="--overlap 0.95"):
        predict(model, input_images, tmp_path, overlap=0.95, progress=False)
    with pytest.raises(CellmixerError, match="missing.tif: no such file"):
        predict(model, tmp_path / "missing.tif", tmp_path, progress=False)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CellmixerError, match="notes.txt: not an image"):
        predict(model, tmp_path / "notes.txt", tmp_path, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CellmixerError, match="empty: no images"):
        predict(model, tmp_path / "empty", tmp_path, progress=False)
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.full((40, 40), 3, np.uint16))
    with pytest.raises(CellmixerError, match="flat.tif: image is constant"):
        predict(model, flat, tmp_path / "o", progress=False)
    with pytest.raises(CellmixerError, match="no such model folder"):
        predict(tmp_path / "no_model", flat, tmp_path / "o", progress=False)


def test_collect_inputs_avoids_name_clashes(tmp_path):
    for rel in ("x/a.tif", "y/a.tif"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(tmp_path / rel, np.zeros((4, 4), np.uint8))
    found = collect_inputs(tmp_path)
    assert [stem for _, stem in found] == ["x__a", "y__a"]
    with pytest.raises(CellmixerError, match="a_labels.tif"):
        collect_inputs([tmp_path / "x" / "a.tif", tmp_path / "y" / "a.tif"])


def test_region_summary():
    labels = np.zeros((10, 10), np.uint8)
    labels[0:2, 0:2] = 1
    labels[5:7, 5:7] = 1
    labels[3, 3] = 1  # a single pixel, not touching the others: its own region
    labels[8:10, 0:10] = 2
    row = region_summary(labels, ["a", "b", "c"])
    assert row == {"a_fraction": 0.09, "a_regions": 3, "b_fraction": 0.2, "b_regions": 1,
                   "c_fraction": 0.0, "c_regions": 0}
    labels[2, 2] = 1  # diagonal neighbours join (8-connected)
    assert region_summary(labels, ["a", "b", "c"])["a_regions"] == 2


def test_predict_uses_the_models_channel(trained, tmp_path):
    model, folder = trained
    image, _, _ = synthetic_culture(["spindle"], shape=(64, 80), seed=3)
    stack = np.stack([np.zeros_like(image), image])  # (C, H, W): the cells are in channel 1
    tifffile.imwrite(tmp_path / "two.tif", stack, photometric="minisblack")
    with pytest.raises(CellmixerError, match="--channel"):
        predict(model, tmp_path / "two.tif", tmp_path / "o1", progress=False)
    predict(model, tmp_path / "two.tif", tmp_path / "o2", channel=1, progress=False)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o2" / "two_labels.tif"), model.predict(image))
    config = dict(model.config, channel=1)
    with_channel = SegmentationModel(model.network, config)
    predict(with_channel, tmp_path / "two.tif", tmp_path / "o3", progress=False)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o3" / "two_labels.tif"), model.predict(image))
