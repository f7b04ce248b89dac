"""Classical nucleus labels (CellProfiler's IdentifyPrimaryObjects), consensus and 3-class targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.filters
from scipy import ndimage as ndi

from cellmixer._errors import CellmixerError
from cellmixer.metrics import object_jaccard
from cellmixer.ops import (
    CLASSICAL_CONFIGURATIONS,
    IGNORE,
    cellprofiler_threshold,
    consensus_labels,
    identify_primary_objects,
    minimum_cross_entropy_threshold,
    three_class_targets,
)

BBBC039 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bbbc039"

SINGLES = [(20, 20, 9), (20, 70, 8), (70, 20, 10)]
PAIRS = [(70, 60, 9), (70, 75, 9), (110, 20, 8), (124, 28, 8), (115, 80, 10), (115, 98, 10)]  # 3 touching pairs


def nuclei(shape, discs, *, seed=0, peak=20000, noise=200):
    """uint16 image of discs (cy, cx, radius), brightest at the centre, on a dim noisy background."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = np.zeros(shape)
    for cy, cx, r in discs:
        d2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / r ** 2
        img = np.maximum(img, np.where(d2 <= 1, 1.0 - 0.5 * d2, 0))
    rng = np.random.default_rng(seed)
    return (1000 + peak * img + rng.normal(0, noise, shape)).clip(0, 65535).astype(np.uint16)


def disc_truth(shape, discs):
    """Expected labels: each pixel to the nearest disc centre it lies in (the watershed's answer)."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    d = np.stack([((yy - cy) ** 2 + (xx - cx) ** 2) / r ** 2 for cy, cx, r in discs])
    return np.where(d.min(axis=0) <= 1, d.argmin(axis=0) + 1, 0)


# ----------------------------------------------------------------------------------- declumping
@pytest.mark.parametrize("declump,dividing_lines", CLASSICAL_CONFIGURATIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_declumping_combination_separates_touching_pairs(declump, dividing_lines, seed):
    image = nuclei((140, 120), SINGLES + PAIRS, seed=seed)
    labels = identify_primary_objects(image, declump=declump, dividing_lines=dividing_lines)
    assert labels.dtype == np.int32 and labels.shape == image.shape
    assert labels.max() == 9 and set(np.unique(labels)) == set(range(10))
    # Each object is one disc: a 1-to-1 match for all nine on eroded masks.
    assert object_jaccard(disc_truth(image.shape, SINGLES + PAIRS), labels)["jaccard"] == 1.0


def test_without_declumping_touching_pairs_stay_one_object():
    image = nuclei((140, 120), SINGLES + PAIRS)
    assert identify_primary_objects(image, declump="none").max() == 6
    assert identify_primary_objects(image, dividing_lines="none").max() == 6


def test_larger_minimum_diameter_uses_low_resolution_maxima_and_still_splits():
    discs = [(40, 40, 16), (40, 68, 16), (100, 60, 18)]
    image = nuclei((140, 120), discs)
    for low_res in (True, False):
        for declump, lines in CLASSICAL_CONFIGURATIONS:
            labels = identify_primary_objects(image, diameter_range=(20, 60), declump=declump, dividing_lines=lines,
                                              low_resolution_maxima=low_res)
            assert labels.max() == 3, (declump, lines, low_res)


def test_minimum_distance_between_maxima_merges_close_seeds():
    image = nuclei((80, 80), [(40, 32, 9), (40, 47, 9)])
    assert identify_primary_objects(image).max() == 2
    # Seeds closer than the allowed distance are one seed: the pair stays whole.
    assert identify_primary_objects(image, maxima_distance=20, declump="intensity").max() == 1


# ---------------------------------------------------------------------------------- size filter
def test_diameter_range_discards_small_and_large_objects():
    discs = [(20, 20, 9), (20, 60, 2.5), (90, 70, 32)]        # diameters 18, 5 and 64 (> 50)
    image = nuclei((140, 120), discs, noise=50)
    labels = identify_primary_objects(image)
    assert labels.max() == 1 and labels[20, 20] > 0 and labels[20, 60] == 0 and labels[90, 70] == 0
    assert identify_primary_objects(image, discard_size=False).max() == 3
    assert identify_primary_objects(image, diameter_range=(4, 80)).max() == 3


def test_diameter_is_the_equivalent_diameter_of_the_area():
    # Squares of 9 x 9 = 81 and 8 x 8 = 64 pixels; a 10 px diameter is pi * 25 = 78.5 pixels.
    image = np.full((40, 40), 100, np.uint16)
    image[5:14, 5:14] = 5000
    image[20:28, 20:28] = 5000
    labels = identify_primary_objects(image, threshold_smoothing_scale=0, declump="none")
    assert labels.max() == 1 and np.count_nonzero(labels) == 81


def test_holes_are_filled():
    image = nuclei((60, 60), [(30, 30, 14)], noise=0)
    image[28:32, 28:32] = 1000                               # a dark hole in a bright nucleus
    labels = identify_primary_objects(image, threshold_smoothing_scale=0)
    assert labels.max() == 1 and labels[30, 30] == 1
    assert identify_primary_objects(image, threshold_smoothing_scale=0, fill_holes="never")[30, 30] == 0


def test_discard_border_removes_cut_nuclei():
    image = nuclei((80, 80), [(40, 40, 9), (40, 3, 9)])
    assert identify_primary_objects(image).max() == 2
    labels = identify_primary_objects(image, discard_border=True)
    assert labels.max() == 1 and labels[40, 40] == 1


# ------------------------------------------------------------------------------------ threshold
def test_li_threshold_matches_scikit_image():
    rng = np.random.default_rng(0)
    for values in (rng.gamma(2, 300, 5000).astype(np.uint16), rng.gamma(2.0, 0.1, 5000),
                   nuclei((60, 60), SINGLES).astype(np.float32) / 65535):
        assert minimum_cross_entropy_threshold(values) == pytest.approx(skimage.filters.threshold_li(values), rel=1e-9)


def test_smoothing_scale_is_cellprofilers_sigma_and_zero_means_none():
    image = nuclei((60, 60), SINGLES, seed=2)
    t, raw = cellprofiler_threshold(image, smoothing_scale=0)
    np.testing.assert_array_equal(raw, image >= t)
    t2, smooth = cellprofiler_threshold(image, smoothing_scale=2 * 0.6744 * 1.5)    # sigma 1.5
    assert t2 == t                                                                 # threshold of the raw image
    x = image / 65535.0
    norm = ndi.gaussian_filter(np.ones_like(x), 1.5, mode="constant")
    np.testing.assert_array_equal(smooth, ndi.gaussian_filter(x, 1.5, mode="constant") / norm >= t / 65535)


def test_correction_factor_and_bounds_move_the_threshold():
    image = nuclei((140, 120), SINGLES + PAIRS, seed=4)
    t1, fg1 = cellprofiler_threshold(image)
    t2, fg2 = cellprofiler_threshold(image, correction_factor=1.5)
    assert t2 == pytest.approx(1.5 * t1) and fg2.sum() < fg1.sum()
    # Bounds on CellProfiler's 0-1 scale (16-bit: 65535 is 1).
    assert cellprofiler_threshold(image, bounds=(0.5, 1.0))[0] == pytest.approx(0.5 * 65535)
    assert cellprofiler_threshold(image, bounds=(0.0, 0.01))[0] == pytest.approx(0.01 * 65535)
    assert identify_primary_objects(image, threshold_bounds=(0.5, 1.0)).max() == 0     # above every nucleus
    # The same intensities as float (as read_image gives them) are on the same scale.
    assert cellprofiler_threshold(image.astype(np.float32))[0] == pytest.approx(t1)
    # A high factor loses the dim nucleus only.
    dim = nuclei((60, 100), [(30, 25, 9), (30, 70, 9)], seed=1)
    dim[:, 50:] = (dim[:, 50:].astype(float) - 1000) * 0.3 + 1000
    assert identify_primary_objects(dim).max() == 2
    assert identify_primary_objects(dim, threshold_correction_factor=2.5).max() == 1


def test_float_and_shifted_images_give_the_same_nuclei():
    image = nuclei((140, 120), SINGLES + PAIRS, seed=3)
    labels = identify_primary_objects(image)
    # As read_image returns a 16-bit file: float32 with the same values, on the same 0-1 scale.
    np.testing.assert_array_equal(identify_primary_objects(image.astype(np.float32)), labels)
    # Images entirely below 0 (e.g. background-subtracted) are shifted up, not cut at 0.
    for declump, lines in CLASSICAL_CONFIGURATIONS:
        shifted = identify_primary_objects(image.astype(np.float32) - 30000, declump=declump, dividing_lines=lines)
        assert shifted.max() == 9


# ------------------------------------------------------------------------------------ bad input
def test_empty_and_constant_images_give_empty_labels():
    for image in (np.zeros((50, 60), np.uint16), np.full((50, 60), 7.5), np.zeros((0, 0))):
        labels = identify_primary_objects(image)
        assert labels.dtype == np.int32 and labels.shape == image.shape and not labels.any()
    noise = np.random.default_rng(0).normal(1000, 5, (50, 60))          # nothing nucleus-sized
    assert identify_primary_objects(noise, diameter_range=(20, 40)).max() == 0


@pytest.mark.parametrize("image,options,match", [
    (np.zeros((4, 50, 60)), {}, "2-D"),
    (np.zeros((50, 60, 3)), {}, "channel"),
    (np.full((50, 60), np.nan), {}, "NaN"),
    (np.array([["a", "b"]]), {}, "pixel type"),
    (None, {"declump": "watershed"}, "declump"),
    (None, {"dividing_lines": "propagate"}, "dividing_lines"),
    (None, {"diameter_range": (50, 10)}, "--diameter 50 10: give the smallest and the largest"),
    (None, {"diameter_range": 10}, "--diameter 10: give the smallest"),
    (None, {"fill_holes": "always"}, "fill_holes"),
    (None, {"threshold_bounds": (0.9, 0.1)}, "threshold_bounds"),
    (None, {"threshold_smoothing_scale": -1}, "threshold_smoothing_scale"),
    (None, {"intensity_scale": 0}, "intensity_scale"),
])
def test_bad_input_is_a_one_line_error(image, options, match):
    if image is None:
        image = nuclei((60, 60), SINGLES[:1])
    with pytest.raises(CellmixerError, match=match) as info:
        identify_primary_objects(image, **options)
    assert "\n" not in str(info.value)
    if options:                                            # options are checked even with nothing to find
        with pytest.raises(CellmixerError, match=match):
            identify_primary_objects(np.zeros((20, 20)), **options)


# ------------------------------------------------------------------------------------ consensus
def test_consensus_masks_out_clusters_with_different_counts():
    shape = (40, 60)
    a = np.zeros(shape, np.int32)
    a[5:15, 5:15] = 1                                  # cluster 1: one object in both
    a[20:30, 20:30], a[20:30, 30:40] = 2, 3             # cluster 2: two objects here ...
    b = np.zeros(shape, np.int32)
    b[6:16, 5:15] = 7
    b[20:30, 20:41] = 8                                 # ... one there (and one pixel wider)
    labels, ignore = consensus_labels([a, b])
    np.testing.assert_array_equal(ignore, (a > 0) & (np.arange(60) >= 20) | (b == 8))
    np.testing.assert_array_equal(labels, np.where(a == 1, 1, 0))
    labels_b, ignore_b = consensus_labels([a, b], reference=1)
    np.testing.assert_array_equal(ignore_b, ignore)
    np.testing.assert_array_equal(labels_b, np.where(b == 7, 1, 0))
    # Labellings that agree everywhere keep everything.
    labels, ignore = consensus_labels([a, np.where(a > 0, a + 10, 0), a])
    assert not ignore.any() and labels.max() == 3 and labels.dtype == np.int32


def test_consensus_of_the_classical_configurations():
    image = nuclei((140, 120), SINGLES + PAIRS)
    runs = [identify_primary_objects(image, declump=d, dividing_lines=w) for d, w in CLASSICAL_CONFIGURATIONS[:3]]
    runs.append(identify_primary_objects(image, declump="none"))             # never splits the pairs
    labels, ignore = consensus_labels(runs)
    assert labels.max() == 3                                                 # the three single nuclei
    assert ndi.label(ignore)[1] == 3                                         # the three pairs


# --------------------------------------------------------------------------------- 3-class targets
def test_separation_lines_are_where_touching_objects_meet():
    labels = np.zeros((12, 20), np.int32)
    labels[2:10, 2:9] = 1
    labels[2:10, 9:16] = 2                                # meets object 1 between columns 8 and 9
    target = three_class_targets(labels)
    assert target.dtype == np.uint8
    expected = np.where(labels > 0, 1, 0)
    expected[2:10, 8:10] = 2                              # one column on each side
    np.testing.assert_array_equal(target, expected)
    wide = three_class_targets(labels, line_radius=2)
    np.testing.assert_array_equal(np.flatnonzero((wide == 2).any(axis=0)), [7, 8, 9, 10])


def test_diagonal_contact_and_separate_objects():
    labels = np.zeros((8, 8), np.int32)
    labels[1:4, 1:4] = 1
    labels[4:7, 4:7] = 2                                  # corners touch diagonally
    labels[0, 7] = 3                                      # alone
    target = three_class_targets(labels)
    assert target[3, 3] == target[4, 4] == 2 and (target == 2).sum() == 2
    assert target[0, 7] == 1 and (target[labels == 0] == 0).all()


def test_targets_apply_the_ignore_mask():
    labels = np.zeros((10, 10), np.int32)
    labels[2:8, 2:5], labels[2:8, 5:8] = 1, 2
    ignore = np.zeros((10, 10), bool)
    ignore[:, 6:] = True
    target = three_class_targets(labels, ignore=ignore)
    assert (target[:, 6:] == IGNORE).all() and IGNORE == 255
    assert set(np.unique(target[:, :6])) == {0, 1, 2}
    with pytest.raises(CellmixerError, match="ignore"):
        three_class_targets(labels, ignore=ignore[:5])
    with pytest.raises(CellmixerError, match="integers"):
        three_class_targets(labels.astype(float))


# ----------------------------------------------------------------------------------- real data
@pytest.mark.skipif(not (BBBC039 / "images").is_dir(), reason="BBBC039 data not present")
def test_bbbc039_image_gives_plausible_nuclei():
    from PIL import Image

    name = (BBBC039 / "metadata" / "test.txt").read_text().split()[0]
    image = np.asarray(Image.open(BBBC039 / "images" / name))
    truth = np.asarray(Image.open(BBBC039 / "masks" / name))[..., 0] > 0
    labels = identify_primary_objects(image)
    dice = 2 * np.count_nonzero(truth & (labels > 0)) / (np.count_nonzero(truth) + np.count_nonzero(labels))
    assert dice > 0.85
    areas = np.bincount(labels.ravel())[1:]
    assert areas.min() >= np.pi * 25 and areas.max() <= np.pi * 625
