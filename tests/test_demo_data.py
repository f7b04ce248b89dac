"""Generated cultures for the demo and the tests (cellmixer.demo), without running the demo itself."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage.measure import regionprops

from cellmixer._errors import CellmixerError
from cellmixer.demo import CELL_TYPES, demo, make_demo_data, synthetic_culture


def test_at_least_three_cell_types():
    assert len(CELL_TYPES) >= 3
    assert {"roundcell", "spindle", "epithelial"} <= set(CELL_TYPES)


def test_seeded_and_deterministic():
    a = synthetic_culture("spindle", shape=(96, 128), seed=3)
    b = synthetic_culture("spindle", shape=(96, 128), seed=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = synthetic_culture("spindle", shape=(96, 128), rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a[0], c[0])
    d = synthetic_culture("spindle", shape=(96, 128), seed=4)
    assert not np.array_equal(a[0], d[0])


def test_outputs_are_consistent():
    image, instances, classes = synthetic_culture(["roundcell", "epithelial"], shape=(150, 170), seed=0)
    assert image.shape == instances.shape == classes.shape == (150, 170)
    assert image.dtype == np.uint16 and instances.dtype == np.int32 and classes.dtype == np.uint8
    np.testing.assert_array_equal(instances > 0, classes > 0)
    assert set(np.unique(classes)) == {0, 1, 2}  # a co-culture of both types
    for label in np.unique(instances)[1:]:
        assert len(np.unique(classes[instances == label])) == 1  # one type per cell
    assert image.std() > 0 and image.min() > 0  # a camera image, not clipped to black


def cell_stats(name, seeds=range(3)):
    areas, elongations = [], []
    for seed in seeds:
        _, instances, _ = synthetic_culture(name, shape=(256, 256), seed=seed)
        for region in regionprops(instances):
            if region.area < 20:
                continue  # slivers of cells hidden under others
            areas.append(region.area)
            if region.axis_minor_length > 0:
                elongations.append(region.axis_major_length / region.axis_minor_length)
    return np.mean(areas), np.median(elongations), len(areas)


def test_cell_types_differ_like_real_ones():
    round_area, round_elong, round_count = cell_stats("roundcell")
    epi_area, epi_elong, epi_count = cell_stats("epithelial")
    spindle_area, spindle_elong, spindle_count = cell_stats("spindle")
    assert round_area < 0.6 * epi_area  # small round cells, large epithelial cells
    assert spindle_elong > 2.0 and round_elong < 1.4 and epi_elong < 1.6  # spindles are elongated
    assert round_count > spindle_count  # many small scattered cells per field


def test_epithelial_cells_clump():
    """Colonies: epithelial cells have more neighbours nearby than scattered round cells."""
    def neighbours(name):
        counts = []
        for seed in range(3):
            _, instances, _ = synthetic_culture(name, shape=(256, 256), seed=seed)
            centres = np.array([r.centroid for r in regionprops(instances) if r.area >= 20])
            scale = np.sqrt(np.mean([r.area for r in regionprops(instances) if r.area >= 20]))
            d = np.hypot(*(centres[:, None] - centres[None]).transpose(2, 0, 1))
            counts.append(((d < 3 * scale).sum(axis=1) - 1).mean())
        return np.mean(counts)

    assert neighbours("epithelial") > neighbours("roundcell")


def test_make_demo_data_layout(tmp_path):
    types = ("epithelial", "roundcell", "spindle")
    info = make_demo_data(tmp_path, train_per_class=2, test_per_class=1, mosaics=3, shape=(64, 80), seed=1,
                          progress=False)
    assert info["classes"] == list(types) and info["mosaics"] == 3
    for name in types:
        train = sorted(p.name for p in (tmp_path / "train" / name).iterdir())
        assert train == [f"{name}_00.tif", f"{name}_01.tif"]  # images only: no masks to train on
        test = sorted(p.name for p in (tmp_path / "test" / name).iterdir())
        assert test == [f"{name}_00.tif", f"{name}_00_masks.tif"]
        image = tifffile.imread(tmp_path / "train" / name / f"{name}_00.tif")
        assert image.shape == (64, 80) and image.dtype == np.uint16
    mosaic = sorted(p.name for p in (tmp_path / "mosaic").iterdir())
    assert mosaic == [f"mosaic_{i:02d}{s}" for i in range(3) for s in (".tif", "_masks.tif")]
    for i in range(3):
        labels = tifffile.imread(tmp_path / "mosaic" / f"mosaic_{i:02d}_masks.tif")
        image = tifffile.imread(tmp_path / "mosaic" / f"mosaic_{i:02d}.tif")
        assert labels.shape == image.shape == (64, 80)
        assert set(np.unique(labels)) <= {0, 1, 2, 3}
    # Seeded: the same call writes the same files.
    make_demo_data(tmp_path / "again", train_per_class=2, test_per_class=1, mosaics=3, shape=(64, 80), seed=1,
                   progress=False)
    for path in tmp_path.rglob("*.tif"):
        if "again" not in path.parts:
            assert (tmp_path / "again" / path.relative_to(tmp_path)).read_bytes() == path.read_bytes()


def test_demo_data_works_with_discovery(tmp_path):
    from cellmixer.io import discover_dataset

    make_demo_data(tmp_path, train_per_class=1, test_per_class=1, mosaics=1, shape=(48, 48), progress=False)
    assert discover_dataset(tmp_path / "train").classes == ["epithelial", "roundcell", "spindle"]
    test = discover_dataset(tmp_path / "test")
    assert len(test) == 3  # masks are not images


def test_demo_refuses_existing_output(tmp_path, snapshot):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(CellmixerError, match="--overwrite"):
        demo(tmp_path, iterations=1, progress=False)
    assert snapshot(tmp_path) == before
