"""Nucleus instances from 3-class maps (the paper's post-processing), object tables and overlays."""

from __future__ import annotations


import numpy as np
import pytest
from skimage.measure import regionprops

from cellmixer._errors import CellmixerError
from cellmixer.io import instance_colors, instance_overlay
from cellmixer.ops import instances_from_classes, object_table, three_class_targets


def disc_classes(shape, discs, *, line=True):
    """3-class map of discs (cy, cx, r): later discs overwrite earlier ones; with ``line`` the
    pixels where two discs meet are separation lines (as in the training targets)."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    labels = np.zeros(shape, np.int32)
    for k, (cy, cx, r) in enumerate(discs, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
    classes = three_class_targets(labels)
    return classes if line else np.where(classes == 2, 1, classes).astype(np.uint8), labels


# --------------------------------------------------------------------------- instances_from_classes
def test_two_nuclei_separated_by_a_line_are_two_objects():
    classes, truth = disc_classes((60, 80), [(30, 28, 14), (30, 50, 14)])
    assert (classes == 2).any()
    labels = instances_from_classes(classes)
    assert labels.dtype == np.int32 and labels.shape == classes.shape
    assert labels.max() == 2 and set(np.unique(labels)) == {0, 1, 2}
    # Each object lies inside one disc, and no object pixel is a line pixel.
    for k in (1, 2):
        assert len(np.unique(truth[labels == k])) == 1
    assert not (labels[classes == 2]).any()


def test_a_one_pixel_line_that_steps_diagonally_separates():
    classes = np.zeros((40, 40), np.uint8)
    classes[5:35, 5:35] = 1
    for i in range(5, 35):                      # an 8-connected diagonal line across the clump
        classes[i, i] = 2
    assert instances_from_classes(classes).max() == 2


def test_a_line_with_a_small_gap_still_separates():
    # The 3x3 dilation joins line fragments up to two pixels apart, and a line ending one pixel
    # short of the background.
    classes = np.zeros((40, 60), np.uint8)
    classes[8:32, 8:52] = 1
    classes[9:18, 30] = 2                       # stops one pixel short of the top edge of the clump
    classes[20:32, 30] = 2                      # two-pixel gap (rows 18, 19)
    assert instances_from_classes(classes).max() == 2
    classes[20:30, 30] = 1                      # now the line ends inside the clump: no cut
    assert instances_from_classes(classes).max() == 1


def test_a_nucleus_without_lines_is_one_object():
    classes, _ = disc_classes((60, 80), [(30, 28, 14), (30, 50, 14)], line=False)
    assert instances_from_classes(classes).max() == 1
    single, _ = disc_classes((40, 40), [(20, 20, 10)])
    labels = instances_from_classes(single)
    assert labels.max() == 1 and (labels > 0).sum() == (single == 1).sum()   # isolated: nothing cut


def test_touching_nuclei_at_the_image_edge_are_separated_and_can_be_removed():
    # Three nuclei in a row, the outer two cut by the image edge; lines reach the edge.
    classes, _ = disc_classes((50, 60), [(25, 2, 14), (25, 29, 14), (25, 56, 14)])
    labels = instances_from_classes(classes)
    assert labels.max() == 3
    inner = instances_from_classes(classes, remove_border=True)
    assert inner.max() == 1
    np.testing.assert_array_equal(inner > 0, labels == labels[25, 29])


def test_min_area_and_consecutive_numbering():
    classes, _ = disc_classes((60, 90), [(15, 15, 3), (30, 45, 12), (45, 75, 6)])
    areas = np.bincount(instances_from_classes(classes).ravel())[1:]
    assert len(areas) == 3
    labels = instances_from_classes(classes, min_area=int(sorted(areas)[1]))
    assert labels.max() == 2 and set(np.unique(labels)) == {0, 1, 2}
    assert instances_from_classes(classes, min_area=10 ** 6).max() == 0


@pytest.mark.parametrize("fill", [0, 1, 2])
def test_uniform_maps(fill):
    labels = instances_from_classes(np.full((20, 30), fill, np.uint8))
    assert labels.shape == (20, 30) and labels.dtype == np.int32
    # All background or all line: nothing. All nucleus: one object covering the image.
    assert labels.max() == (1 if fill == 1 else 0)


def test_bad_class_maps_are_clear_errors():
    with pytest.raises(CellmixerError, match="255"):
        instances_from_classes(np.array([[0, 1, 255]], np.uint8))
    with pytest.raises(CellmixerError, match="integers"):
        instances_from_classes(np.zeros((4, 4), np.float32))
    with pytest.raises(CellmixerError, match="2-D"):
        instances_from_classes(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(CellmixerError, match="--min-area -1: must be at least 0"):
        instances_from_classes(np.zeros((4, 4), np.uint8), min_area=-1)


def test_a_bbbc039_sized_map_of_many_touching_discs():
    # (its speed is measured by bench/speed.py, not here)
    rng = np.random.default_rng(0)
    discs = [(int(y), int(x), int(r)) for y, x, r in zip(rng.integers(0, 520, 150), rng.integers(0, 696, 150),
                                                            rng.integers(6, 16, 150))]
    classes, _ = disc_classes((520, 696), discs)
    labels = instances_from_classes(classes)
    assert labels.shape == (520, 696)
    assert labels.max() > 50


# ------------------------------------------------------------------------------------ object_table
def random_labels(rng, shape=(48, 64), n=12):
    labels = np.zeros(shape, np.int64)
    for _ in range(n):
        y, x = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        h, w = rng.integers(1, 15, 2)
        labels[y:y + h, x:x + w] = rng.integers(1, 10 ** 6)     # large, non-consecutive labels
    labels[rng.random(shape) < 0.1] = 0                          # holes: objects may be in pieces
    return labels


@pytest.mark.parametrize("seed", range(4))
def test_object_table_agrees_with_regionprops(seed):
    rng = np.random.default_rng(seed)
    labels = random_labels(rng)
    image = rng.normal(100, 20, labels.shape)
    rows = object_table(labels, image, extra={"image": "a.tif"})
    props = regionprops(labels, intensity_image=image)
    assert [r["label"] for r in rows] == [p.label for p in props]
    for row, p in zip(rows, props):
        assert list(row)[:2] == ["image", "label"] and row["image"] == "a.tif"
        assert row["area"] == p.area
        assert (row["centroid_y"], row["centroid_x"]) == pytest.approx(p.centroid)
        assert (row["bbox_min_row"], row["bbox_min_col"], row["bbox_max_row"], row["bbox_max_col"]) == p.bbox
        assert row["mean_intensity"] == pytest.approx(p.intensity_mean)
    assert "mean_intensity" not in object_table(labels)[0]


def test_object_table_of_an_empty_image_and_bad_input():
    assert object_table(np.zeros((5, 5), int)) == []
    assert object_table(np.zeros((5, 5), int), np.ones((5, 5))) == []
    with pytest.raises(CellmixerError, match="shape"):
        object_table(np.ones((5, 5), int), np.ones((4, 5)))
    with pytest.raises(CellmixerError, match="negative"):
        object_table(-np.ones((5, 5), int))


# ------------------------------------------------------------------------------- instance_overlay
def test_overlay_colours_the_outlines_only():
    classes, _ = disc_classes((60, 80), [(30, 28, 14), (30, 50, 14)])
    labels = instances_from_classes(classes)
    image = np.random.default_rng(0).normal(1000, 50, labels.shape)
    rgb = instance_overlay(image, labels)
    assert rgb.shape == (60, 80, 3) and rgb.dtype == np.uint8
    coloured = (rgb != rgb[..., :1]).any(axis=-1)
    assert coloured.any()
    inside = labels > 0
    # Coloured pixels are object pixels on an outline; the centre of an object stays grey.
    assert not coloured[~inside].any() and not coloured[30, 28] and not coloured[30, 50]
    colours = {k: {tuple(c) for c in rgb[coloured & (labels == k)]} for k in (1, 2)}
    assert colours[1] == {tuple(instance_colors([1])[0])} and colours[2] == {tuple(instance_colors([2])[0])}
    np.testing.assert_array_equal(instance_overlay(image, labels), rgb)          # deterministic


def test_overlay_without_objects_is_the_grey_image():
    image = np.arange(100, dtype=float).reshape(10, 10)
    rgb = instance_overlay(image, np.zeros((10, 10), int))
    assert rgb.shape == (10, 10, 3) and rgb.dtype == np.uint8
    assert (rgb == rgb[..., :1]).all() and rgb.max() > rgb.min()
    assert (instance_overlay(np.zeros((10, 10)), np.zeros((10, 10), int)) == 0).all()   # constant image
    with pytest.raises(CellmixerError, match="shape"):
        instance_overlay(np.zeros((10, 10)), np.zeros((10, 11), int))


def test_instance_colors_are_distinct_for_neighbouring_labels():
    colours = instance_colors(np.arange(1, 21))
    assert len({tuple(c) for c in colours}) == 20
    assert (np.abs(colours[1:].astype(int) - colours[:-1]).sum(axis=1) > 60).all()
