"""Artificial mixtures: background normalization, CellMixer mixup, mosaics, the mix command."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from cellmixer._errors import CellmixerError
from cellmixer.methods.cellmixer import mix
from cellmixer.ops import background_stats, mix_labels, mix_pair, mosaic_pair, normalize_by_background


def random_pair(seed, shape=(33, 47)):
    rng = np.random.default_rng(seed)
    i1 = rng.normal(500, 40, shape).astype(np.float32)
    i2 = rng.normal(-3, 2, shape).astype(np.float32)
    m1 = np.where(rng.random(shape) < 0.4, 1, 0).astype(np.uint8)
    m2 = np.where(rng.random(shape) < 0.3, 2, 0).astype(np.uint8)
    return i1, m1, i2, m2


# ------------------------------------------------------------------------------------------ mix_pair
@pytest.mark.parametrize("lam", [0.5, 0.3, 0.9, 0.0, 1.0])
def test_mix_pair_is_the_paper_formula(lam):
    for seed in range(3):
        i1, m1, i2, m2 = random_pair(seed)
        image, labels = mix_pair(i1, m1, i2, m2, lam=lam, normalize=False)
        np.testing.assert_allclose(image, lam * i1.astype(np.float64) + (1 - lam) * i2, rtol=1e-6, atol=1e-4)
        expected = m2.astype(np.int64) + (1 - np.sign(m2.astype(np.int64))) * m1
        np.testing.assert_array_equal(labels, expected)
        assert image.dtype == np.float32 and image.shape == i1.shape


def test_mix_labels_second_on_top_with_many_classes():
    rng = np.random.default_rng(7)
    m1 = rng.integers(0, 5, (20, 20))
    m2 = rng.integers(0, 5, (20, 20)) * (rng.random((20, 20)) < 0.5)
    np.testing.assert_array_equal(mix_labels(m1, m2), m2 + (1 - np.sign(m2)) * m1)


def test_mix_pair_default_lambda_is_half():
    i1, m1, i2, m2 = random_pair(1)
    np.testing.assert_allclose(mix_pair(i1, m1, i2, m2, normalize=False)[0], (i1 + i2) / 2, rtol=1e-6)


def test_mix_pair_shape_mismatch():
    i1, m1, i2, m2 = random_pair(0)
    with pytest.raises(ValueError):
        mix_pair(i1, m1, i2[:-1], m2[:-1])
    with pytest.raises(ValueError):
        mix_pair(i1, m1[:, :-1], i2, m2)


def test_background_normalization():
    i1, m1, i2, m2 = random_pair(2)
    for image, labels in ((i1, m1), (i2, m2)):
        cells = labels > 0
        image = image.copy()
        image[cells] += 1000  # cells far brighter: must not affect the background statistics
        normalized = normalize_by_background(image, cells)
        assert normalized.dtype == np.float32
        assert abs(normalized[~cells].mean()) < 1e-4
        assert abs(normalized[~cells].std() - 1) < 1e-4
        assert normalized[cells].mean() > 10


def test_mix_pair_normalizes_each_image_by_its_own_background():
    i1, m1, i2, m2 = random_pair(3)
    i1[m1 > 0] += 300
    n1, n2 = normalize_by_background(i1, m1 > 0), normalize_by_background(i2, m2 > 0)
    image, _ = mix_pair(i1, m1, i2, m2, lam=0.3)
    np.testing.assert_allclose(image, 0.3 * n1 + 0.7 * n2, rtol=1e-5, atol=1e-5)
    # Brightness and contrast of the inputs no longer matter.
    image_scaled, _ = mix_pair(i1 * 7 + 1000, m1, i2 * 0.01 - 5, m2, lam=0.3)
    np.testing.assert_allclose(image_scaled, image, rtol=1e-3, atol=1e-3)


def test_background_stats_fallbacks():
    image = np.arange(100, dtype=np.float32).reshape(10, 10)
    # Confluent crop (fewer than 64 background pixels): all pixels are used.
    mostly_cells = np.ones((10, 10), bool)
    mostly_cells[0, :5] = False
    mean, std = background_stats(image, mostly_cells)
    assert mean == pytest.approx(image.mean()) and std == pytest.approx(image.std())
    # Flat background: the standard deviation never becomes 0.
    flat = np.zeros((10, 10), np.float32)
    flat[:2] = 50
    cells = flat > 0
    mean, std = background_stats(flat, cells)
    assert mean == 0 and std > 0
    assert np.isfinite(normalize_by_background(flat, cells)).all()
    assert background_stats(np.zeros((10, 10)), np.zeros((10, 10), bool))[1] == 1.0


# ------------------------------------------------------------------------------------------ mosaic_pair
def blob_labels(seed, shape, value, count, radius):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint8)
    for _ in range(count):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = value
    return labels


@pytest.mark.parametrize("margin", [0, 2, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mosaic_pixels_come_from_exactly_one_source(seed, margin):
    shape = (120, 140)
    l1 = blob_labels(seed, shape, 1, 8, 7)
    l2 = blob_labels(seed + 100, shape, 2, 14, 6)
    rng = np.random.default_rng(seed)
    i1 = rng.uniform(-10, -1, shape).astype(np.float32)  # all negative
    i2 = rng.uniform(1, 10, shape).astype(np.float32)  # all positive: the source of a pixel is its sign
    image, labels = mosaic_pair(i1, l1, i2, l2, margin=margin, normalize=False)
    from_1, from_2 = image == i1, image == i2
    assert (from_1 ^ from_2).all()  # every pixel from exactly one image, never blended
    # Labels follow the pixels.
    np.testing.assert_array_equal(labels[from_1], l1[from_1])
    np.testing.assert_array_equal(labels[from_2], l2[from_2])
    # Culture 1's cells are never covered.
    assert from_1[l1 > 0].all()
    # Each cell of culture 2 is pasted whole or not at all; a pasted cell keeps `margin` pixels
    # (and more) away from culture 1's cells; a cell that would collide stays out.
    regions, n = ndi.label(l2 > 0)
    near_1 = ndi.binary_dilation(l1 > 0, np.ones((3, 3), bool), iterations=2 * margin) if margin else l1 > 0
    pasted = 0
    for r in range(1, n + 1):
        cell = regions == r
        taken = from_2[cell]
        assert taken.all() or not taken.any()
        collides = (near_1 & cell).any()
        assert taken.all() == (not collides)
        pasted += taken.all()
    assert pasted > 0  # the test scene has room for some cells
    if margin:
        ring = ndi.binary_dilation(from_2 & (l2 > 0), np.ones((3, 3), bool), iterations=margin)
        assert not (ring & (l1 > 0)).any()


def test_mosaic_without_cells_returns_first_image():
    i1, l1 = np.ones((20, 20), np.float32), np.zeros((20, 20), np.uint8)
    l1[5:8, 5:8] = 1
    image, labels = mosaic_pair(i1, l1, np.zeros((20, 20)), np.zeros((20, 20), np.uint8), normalize=False)
    np.testing.assert_array_equal(image, i1)
    np.testing.assert_array_equal(labels, l1)


def test_mosaic_normalizes_both_images():
    shape = (80, 80)
    l1 = np.zeros(shape, np.uint8)
    l1[5:15, 5:15] = 1
    l2 = np.zeros(shape, np.uint8)
    l2[50:60, 50:60] = 2
    rng = np.random.default_rng(0)
    i1 = rng.normal(1000, 50, shape).astype(np.float32)
    i2 = rng.normal(10, 1, shape).astype(np.float32)
    image, labels = mosaic_pair(i1, l1, i2, l2)
    assert (labels == 2).sum() == 100
    n1 = normalize_by_background(i1, l1 > 0)
    n2 = normalize_by_background(i2, l2 > 0)
    from_2 = labels == 2
    np.testing.assert_allclose(image[from_2], n2[from_2], rtol=1e-6)
    np.testing.assert_allclose(image[l1 > 0], n1[l1 > 0], rtol=1e-6)


# ------------------------------------------------------------------------------------------ mix command
@pytest.mark.parametrize("kind", ["blend", "mosaic"])
def test_mix_command_writes_examples(culture_dir, tmp_path, kind):
    out = tmp_path / kind
    rows = mix(culture_dir, out, number=3, crop_size=48, kind=kind, seed=1, progress=False)
    assert len(rows) == 3
    for i in range(3):
        image = tifffile.imread(out / f"mixture_{i:03d}.tif")
        labels = tifffile.imread(out / f"mixture_{i:03d}_masks.tif")
        assert image.shape == labels.shape == (48, 48) and image.dtype == np.float32
        assert set(np.unique(labels)) <= {0, 1, 2, 3}
        assert (out / f"mixture_{i:03d}.png").stat().st_size > 0
    with open(out / "mixtures.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 3
    for row in table:
        assert row["first_class"] != row["second_class"] and row["kind"] == kind
    # Same seed, same mixtures.
    again = mix(culture_dir, tmp_path / "again", number=3, crop_size=48, kind=kind, seed=1, progress=False)
    assert [r["first_image"] for r in again] == [r["first_image"] for r in rows]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "again" / "mixture_002.tif"),
                                  tifffile.imread(out / "mixture_002.tif"))


def test_mix_command_with_crops_larger_than_the_images(culture_dir, tmp_path):
    rows = mix(culture_dir, tmp_path, number=1, crop_size=512, progress=False)
    assert rows[0]["height"] == rows[0]["width"] == 96  # the images are used whole
    assert tifffile.imread(tmp_path / "mixture_000.tif").shape == (96, 96)


def test_mix_command_blend_labels_follow_the_rule(culture_dir, tmp_path):
    from cellmixer.demo import DEMO_FOREGROUND
    from cellmixer.io import discover_dataset
    from cellmixer.methods.cellmixer import load_pseudolabelled

    rows = mix(culture_dir, tmp_path, number=2, crop_size=40, seed=3, foreground=DEMO_FOREGROUND, progress=False)
    items = {str(i.path): i for i in load_pseudolabelled(discover_dataset(culture_dir), foreground=DEMO_FOREGROUND,
                                                          progress=False)}
    for i, row in enumerate(rows):
        a, b = items[row["first_image"]], items[row["second_image"]]
        la = a.labels[row["first_y"]:row["first_y"] + 40, row["first_x"]:row["first_x"] + 40]
        lb = b.labels[row["second_y"]:row["second_y"] + 40, row["second_x"]:row["second_x"] + 40]
        np.testing.assert_array_equal(tifffile.imread(tmp_path / f"mixture_{i:03d}_masks.tif"), mix_labels(la, lb))


def test_mix_command_bad_options(culture_dir, tmp_path):
    with pytest.raises(CellmixerError, match="--lam 1.5"):
        mix(culture_dir, tmp_path, lam=1.5, progress=False)
    with pytest.raises(CellmixerError, match="--kind cut"):
        mix(culture_dir, tmp_path, kind="cut", progress=False)
    with pytest.raises(CellmixerError, match="--number 0"):
        mix(culture_dir, tmp_path, number=0, progress=False)
    with pytest.raises(CellmixerError, match="at least 2"):
        mix(culture_dir, tmp_path, classes=["spindle"], progress=False)
