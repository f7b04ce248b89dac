"""Unsupervised foreground extraction and the pseudolabel command (cellmixer.pseudolabels)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage as ndi

from cellmixer._errors import CellmixerError
from cellmixer.io import read_image
from cellmixer.methods.cellmixer import pseudolabel
from cellmixer.ops import ForegroundParams, extract_foreground, gradient_map
from cellmixer.ops._foreground import _running_min, _sobel_magnitude, _threshold_value


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def textured_cell_image(shape=(160, 160), centre=(80, 80), radius=25, seed=0):
    """A flat, slightly noisy background with one strongly textured round cell."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 2, shape).astype(np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cell = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2
    image[cell] += rng.normal(0, 30, cell.sum()).astype(np.float32)
    return image, cell


# ------------------------------------------------------------------------------------------ fast filters
@pytest.mark.parametrize("shape", [(17, 23), (31, 9), (64, 65)])
@pytest.mark.parametrize("size", [1, 3, 5, 7, 9, 15, 21])
def test_running_min_equals_scipy_minimum_filter(shape, size):
    x = np.random.default_rng(size * 100 + shape[0]).normal(size=shape).astype(np.float32)
    for axis in (0, 1):
        expected = ndi.minimum_filter1d(x, size, axis=axis, mode="nearest")
        np.testing.assert_array_equal(_running_min(x, size, axis), expected)
    both = _running_min(_running_min(x, size, 0), size, 1)
    np.testing.assert_array_equal(both, ndi.minimum_filter(x, size=size, mode="nearest"))


def test_running_min_window_wider_than_image():
    x = np.random.default_rng(0).normal(size=(5, 7))
    np.testing.assert_array_equal(_running_min(_running_min(x, 11, 0), 11, 1),
                                  ndi.minimum_filter(x, size=11, mode="nearest"))


@pytest.mark.parametrize("shape", [(17, 23), (33, 8), (1, 5), (64, 65)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sobel_magnitude_equals_hypot_of_scipy_sobel(shape, dtype):
    x = np.random.default_rng(shape[0]).normal(size=shape).astype(dtype)
    expected = np.hypot(ndi.sobel(x, axis=0), ndi.sobel(x, axis=1))
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(_sobel_magnitude(x), expected, rtol=tolerance, atol=tolerance)


def test_gradient_map_follows_the_recipe():
    image, _ = textured_cell_image(shape=(41, 57))
    # The recipe spelled out with scipy: normalize, smooth, Sobel magnitude, smooth, erode, log.
    lo, hi = np.percentile(image, [1, 99])
    x = (image - lo) / (hi - lo)
    x = ndi.gaussian_filter(x, 1.5, truncate=3.0)
    g = np.hypot(ndi.sobel(x, axis=0), ndi.sobel(x, axis=1))
    g = ndi.gaussian_filter(g, 2.0, truncate=3.0)
    g = ndi.minimum_filter(g, size=9, mode="nearest")
    expected = np.log(g + 1e-3)
    np.testing.assert_allclose(gradient_map(image), expected, rtol=1e-4, atol=1e-4)
    # An even erosion size is rounded up to odd.
    np.testing.assert_array_equal(gradient_map(image, erosion_size=8), gradient_map(image, erosion_size=9))


# ------------------------------------------------------------------------------------------ extract_foreground
def test_finds_a_textured_cell_on_a_flat_background():
    image, cell = textured_cell_image()
    mask = extract_foreground(image)
    assert mask.dtype == bool and mask.shape == image.shape
    assert iou(mask, cell) > 0.85


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float64])
def test_any_dtype_and_scale(dtype):
    image, cell = textured_cell_image()
    scaled = image - image.min()
    scaled = scaled / scaled.max() * (250 if dtype == np.uint8 else 60000 if dtype == np.uint16 else 1e-3)
    assert iou(extract_foreground(scaled.astype(dtype)), cell) > 0.85


@pytest.mark.parametrize("threshold", ["li", "otsu", "triangle"])
def test_global_threshold_methods(threshold):
    image, cell = textured_cell_image()
    assert iou(extract_foreground(image, threshold=threshold), cell) > 0.8


def test_constant_image_has_no_foreground():
    for value in (0.0, 7.5):
        mask = extract_foreground(np.full((40, 50), value, np.float32))
        assert mask.shape == (40, 50) and mask.dtype == bool and not mask.any()


def test_not_2d_is_refused():
    with pytest.raises(ValueError, match="2-D"):
        extract_foreground(np.zeros((3, 10, 10)))
    with pytest.raises(CellmixerError, match="--threshold median: choose one of li"):
        extract_foreground(textured_cell_image()[0], threshold="median")
    for name, value in (("sigma_pre", -1.0), ("erosion_size", 0), ("block_size", 0), ("min_object_area", -5),
                        ("threshold", float("nan"))):
        with pytest.raises(CellmixerError, match=f"--{name.replace('_', '-')} "):
            extract_foreground(textured_cell_image()[0], **{name: value})


def test_numeric_threshold():
    image, cell = textured_cell_image()
    li = _threshold_value(gradient_map(image), "li")
    np.testing.assert_array_equal(extract_foreground(image, threshold=li), extract_foreground(image))
    assert extract_foreground(image, threshold=-1e9).all()
    assert not extract_foreground(image, threshold=1e9).any()
    # The offset lowers the threshold: a bigger offset never shrinks the mask.
    small = extract_foreground(image, threshold=li, min_object_area=0, max_hole_area=0)
    large = extract_foreground(image, threshold=li, threshold_offset=0.5, min_object_area=0, max_hole_area=0)
    assert (large >= small).all() and large.sum() > small.sum()


def test_local_threshold_is_the_documented_rule():
    image, cell = textured_cell_image()
    g = gradient_map(image)
    for block, offset in [(151, 0.0), (51, -0.3)]:
        local_mean = ndi.gaussian_filter(g, (block - 1) / 6.0)
        expected = g > local_mean - offset
        mask = extract_foreground(image, threshold="local", block_size=block, threshold_offset=offset,
                                  min_object_area=0, max_hole_area=0)
        np.testing.assert_array_equal(mask, expected)


def test_local_threshold_finds_the_cell():
    image, cell = textured_cell_image()
    # In flat background the local mean splits noise in half; a small negative offset keeps it out.
    mask = extract_foreground(image, threshold="local", threshold_offset=-0.5)
    assert iou(mask, cell) > 0.85


def _component_areas(mask):
    labels, n = ndi.label(mask)
    return np.bincount(labels.ravel())[1:]


def test_min_object_area_drops_specks():
    rng = np.random.default_rng(3)
    image = rng.normal(100, 2, (160, 160)).astype(np.float32)
    yy, xx = np.mgrid[:160, :160]
    big = (yy - 50) ** 2 + (xx - 50) ** 2 < 22**2
    small = (yy - 120) ** 2 + (xx - 120) ** 2 < 6**2
    for region in (big, small):
        image[region] += rng.normal(0, 30, region.sum()).astype(np.float32)
    kept = extract_foreground(image, min_object_area=0)
    areas = sorted(_component_areas(kept))
    assert len(areas) == 2  # both found when nothing is dropped
    limit = (areas[0] + areas[1]) // 2
    filtered = extract_foreground(image, min_object_area=limit)
    assert len(_component_areas(filtered)) == 1 and filtered[50, 50] and not filtered[120, 120]
    assert _component_areas(filtered).min() >= limit
    # An object of exactly the limit stays (only objects *under* it are dropped).
    assert len(_component_areas(extract_foreground(image, min_object_area=areas[0]))) == 2


def test_max_hole_area_fills_holes_up_to_the_limit():
    rng = np.random.default_rng(4)
    image = rng.normal(100, 2, (160, 160)).astype(np.float32)
    yy, xx = np.mgrid[:160, :160]
    r2 = (yy - 80) ** 2 + (xx - 80) ** 2
    ring = (r2 < 50**2) & (r2 >= 30**2)
    image[ring] += rng.normal(0, 30, ring.sum()).astype(np.float32)
    open_ring = extract_foreground(image, max_hole_area=0)
    assert not open_ring[80, 80]
    holes, n = ndi.label(~open_ring)
    hole = holes == holes[80, 80]
    hole_area = int(hole.sum())
    assert not hole[0].any() and not hole[-1].any()  # an enclosed hole, not the outer background
    np.testing.assert_array_equal(extract_foreground(image, max_hole_area=hole_area - 1), open_ring)
    filled = extract_foreground(image, max_hole_area=hole_area)
    np.testing.assert_array_equal(filled, open_ring | hole)


def test_foreground_params_match_keywords():
    params = ForegroundParams(threshold="otsu", erosion_size=5)
    image, _ = textured_cell_image()
    np.testing.assert_array_equal(extract_foreground(image, **params.to_dict()),
                                  extract_foreground(image, threshold="otsu", erosion_size=5))
    assert set(params.to_dict()) == {"sigma_pre", "sigma_post", "erosion_size", "threshold", "log_gradient",
                                     "block_size", "threshold_offset", "min_object_area", "max_hole_area"}


def test_synthetic_cultures_are_found():
    """On generated phase-contrast-like cultures the unsupervised mask covers the true cells.

    The mask includes the bright halo around each cell (as on real phase contrast), so it is
    larger than the cells: recall is high, IoU moderate (small round cells have the most halo).
    """
    from cellmixer.demo import DEMO_FOREGROUND, synthetic_culture

    for name in ("epithelial", "roundcell", "spindle"):
        image, instances, _ = synthetic_culture(name, shape=(192, 192), seed=11)
        mask = extract_foreground(image, **DEMO_FOREGROUND.to_dict())
        cells = instances > 0
        assert (mask & cells).sum() / cells.sum() > 0.9, name
        assert iou(mask, cells) > 0.5, name


def test_real_phase_images_against_manual_masks(deepcell):
    """DeepCell 2016 validation fields: the default settings agree with the manual cell interiors."""
    for folder in ("3T3", "HeLa", "MCF10A"):
        base = deepcell / "validation_data" / folder
        phase = sorted((base / "RawImages").glob("*hase*"))
        interior = sorted((base / "Validation").glob("*interior*"))
        if not phase or not interior:
            pytest.skip(f"{base}: phase image or interior mask missing")
        mask = extract_foreground(read_image(phase[0]))
        truth = read_image(interior[0]) > 0
        assert iou(mask, truth) > 0.45, folder


# ------------------------------------------------------------------------------------------ pseudolabel command
def test_pseudolabel_writes_masks_qc_and_summary(culture_dir, tmp_path):
    out = tmp_path / "pl"
    rows = pseudolabel(culture_dir, out, foreground={"threshold": "otsu", "sigma_pre": 1.0, "sigma_post": 1.0},
                       progress=False)
    assert len(rows) == 6
    classes = ["epithelial", "roundcell", "spindle"]
    for k, name in enumerate(classes, start=1):
        for i in range(2):
            masks = tifffile.imread(out / name / f"{name}_{i}_masks.tif")
            assert masks.dtype == np.uint8 and masks.shape == (96, 96)
            assert set(np.unique(masks)) <= {0, k} and (masks == k).any()
            qc = np.asarray(Image.open(out / name / f"{name}_{i}_qc.png"))
            assert qc.shape[1] == 2 * 96 and qc.shape[0] > 96 and qc.shape[2] == 3  # side by side + legend
    with open(out / "pseudolabels.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [r["class"] for r in table] == [c for c in classes for _ in range(2)]
    assert all(0 < float(r["foreground_fraction"]) < 1 and int(r["objects"]) >= 1 for r in table)
    settings = json.loads((out / "pseudolabels.json").read_text())
    assert settings["classes"] == classes and settings["foreground"]["threshold"] == "otsu"


def test_pseudolabel_mirrors_nested_folders_and_pattern(culture_dir, tmp_path):
    import shutil

    data = tmp_path / "data"
    for name in ("roundcell", "spindle"):
        shutil.copytree(culture_dir / name, data / name / "plate1")
        (data / name / "plate1" / f"{name}_1.tif").rename(data / name / "plate1" / f"{name}_1_dapi.tif")
    rows = pseudolabel(data, tmp_path / "out", pattern="*_0.tif", overlays=False, progress=False)
    assert len(rows) == 2
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*_masks.tif"))
    assert written == ["roundcell/plate1/roundcell_0_masks.tif", "spindle/plate1/spindle_0_masks.tif"]


def test_pseudolabel_refuses_to_overwrite(culture_dir, tmp_path, snapshot):
    out = tmp_path / "pl"
    pseudolabel(culture_dir, out, overlays=False, progress=False)
    assert not list(out.rglob("*_qc.png"))
    before = snapshot(out)
    with pytest.raises(CellmixerError, match="--overwrite"):
        pseudolabel(culture_dir, out, overlays=False, progress=False)
    assert snapshot(out) == before
    pseudolabel(culture_dir, out, overlays=False, overwrite=True, progress=False)


def test_pseudolabel_constant_image(tmp_path):
    for name, value in (("a", 5), ("b", 9)):
        (tmp_path / "data" / name).mkdir(parents=True)
        tifffile.imwrite(tmp_path / "data" / name / "flat.tif", np.full((32, 32), value, np.uint16))
    with pytest.raises(CellmixerError, match=r"a[/\\]flat\.tif: image is constant"):
        pseudolabel(tmp_path / "data", tmp_path / "out", progress=False)
