"""Instance scores (cellmixer.metrics._instances): hand-made cases and agreement with stardist."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from cellmixer._errors import CellmixerError
from cellmixer.io import read_labels
from cellmixer.metrics import (
    AP_THRESHOLDS,
    F1_THRESHOLDS,
    average_precision,
    dice_per_class,
    erode_labels,
    instance_overlap,
    instance_scores,
    match_instances,
    mean_f1,
    missed_objects,
    object_jaccard,
    remove_border_objects,
    splits_and_merges,
)

BBBC039 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bbbc039"


def boxes(shape, *items):
    """Label image with rectangles (label, y0, y1, x0, x1); later ones overwrite earlier ones."""
    out = np.zeros(shape, np.int32)
    for lab, y0, y1, x0, x1 in items:
        out[y0:y1, x0:x1] = lab
    return out


# ------------------------------------------------------------------------------ hand-made cases
def test_perfect_match_with_arbitrary_label_values():
    truth = boxes((40, 40), (3, 2, 12, 2, 12), (17, 20, 30, 5, 15), (1000, 25, 35, 25, 38))
    prediction = np.select([truth == 3, truth == 17, truth == 1000], [9, 2, 5], 0).astype(np.uint16)
    for thr in (0.1, 0.5, 0.9, 1.0):
        m = match_instances(truth, prediction, threshold=thr)
        assert (m["tp"], m["fp"], m["fn"]) == (3, 0, 0)
        assert m["f1"] == m["precision"] == m["recall"] == m["average_precision"] == 1.0
        assert m["mean_matched_iou"] == 1.0
    s = instance_scores(truth, prediction)
    assert s["object_jaccard"] == s["mean_f1"] == s["average_precision"] == s["ap_50"] == 1.0
    assert (s["splits"], s["merges"], s["missed_70"], s["matched"]) == (0, 0, 0, 3)


def test_one_split():
    truth = boxes((30, 40), (1, 5, 15, 5, 25))                          # 10 x 20 nucleus
    prediction = boxes((30, 40), (1, 5, 15, 5, 17), (2, 5, 15, 17, 25))   # cut 12 | 8
    m = match_instances(truth, prediction, threshold=0.5)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 0)                       # IoU 0.6 and 0.4
    assert m["mean_matched_iou"] == pytest.approx(0.6)
    assert m["f1"] == pytest.approx(2 / 3) and m["average_precision"] == pytest.approx(1 / 2)
    assert match_instances(truth, prediction, threshold=0.65)["tp"] == 0
    assert splits_and_merges(truth, prediction) == dict(splits=1, merges=0, split_rate=1.0, merge_rate=0.0)
    # Both eroded parts overlap the eroded nucleus: no 1-to-1 match.
    assert object_jaccard(truth, prediction) == dict(jaccard=0.0, matched=0, n_true=1, n_pred=2)


def test_one_merge():
    truth = boxes((30, 50), (1, 5, 15, 5, 17), (2, 5, 15, 17, 27), (3, 20, 28, 35, 45))
    prediction = boxes((30, 50), (7, 5, 15, 5, 27), (8, 20, 28, 35, 45))
    m = match_instances(truth, prediction, threshold=0.5)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 0, 1)                       # 12/22 merged, 10/22 not
    assert splits_and_merges(truth, prediction) == dict(splits=0, merges=1, split_rate=0.0, merge_rate=0.5)
    jac = object_jaccard(truth, prediction)
    assert (jac["matched"], jac["jaccard"]) == (1, pytest.approx(1 / (3 + 2 - 1)))


def test_empty_prediction_and_empty_truth():
    truth = boxes((20, 20), (1, 2, 8, 2, 8), (2, 10, 18, 10, 18))
    empty = np.zeros_like(truth)
    m = match_instances(truth, empty)
    assert (m["tp"], m["fp"], m["fn"], m["precision"], m["recall"], m["f1"]) == (0, 0, 2, 0.0, 0.0, 0.0)
    m = match_instances(empty, truth)
    assert (m["tp"], m["fp"], m["fn"], m["f1"], m["average_precision"]) == (0, 2, 0, 0.0, 0.0)
    assert object_jaccard(truth, empty)["jaccard"] == object_jaccard(empty, truth)["jaccard"] == 0.0
    assert missed_objects(truth, empty) == 2 and missed_objects(empty, truth) == 0
    # Nothing to find and nothing found is a perfect result (stardist reports 0 here).
    assert match_instances(empty, empty)["f1"] == object_jaccard(empty, empty)["jaccard"] == 1.0
    assert instance_scores(empty, empty)["average_precision"] == 1.0


def test_shifted_objects_match_up_to_their_iou():
    truth = boxes((40, 40), (1, 10, 20, 10, 20))
    prediction = np.roll(truth, 2, axis=1)                                 # IoU 80 / 120
    assert instance_overlap(truth, prediction).iou == pytest.approx([2 / 3])
    assert [m["tp"] for m in match_instances(truth, prediction, threshold=[0.5, 0.65, 0.7])] == [1, 1, 0]
    assert mean_f1(truth, prediction) == pytest.approx(4 / 9)             # 0.50, 0.55, 0.60, 0.65 of 9
    assert average_precision(truth, prediction) == pytest.approx(4 / 10)  # 4 of 10 thresholds
    assert average_precision(truth, prediction, thresholds=[0.5]) == 1.0
    assert object_jaccard(truth, prediction)["jaccard"] == 1.0             # counts, not boundaries
    assert missed_objects(truth, prediction) == 1                          # IoU 0.667 < 0.7


def test_low_threshold_needs_the_optimal_assignment():
    # Truth a overlaps predictions x and y; truth b overlaps only x. Matching a with x first
    # (its best partner) would leave b alone: the optimal matching is a-y, b-x.
    truth = boxes((20, 40), (1, 0, 10, 0, 20), (2, 10, 20, 0, 10))
    prediction = boxes((20, 40), (5, 0, 20, 0, 10), (6, 0, 10, 10, 33))
    ov = instance_overlap(truth, prediction)
    iou = ov.dense_iou()
    assert iou[0, 0] > iou[0, 1] > 0.2 and iou[1, 0] > 0.2 and iou[1, 1] == 0
    assert match_instances(truth, prediction, threshold=0.2)["tp"] == 2
    assert match_instances(truth, prediction, threshold=0.5)["tp"] == 1


def test_the_paper_jaccard_uses_eroded_masks():
    # Prediction 1 takes one column of the neighbouring nucleus; erosion removes that contact.
    truth = boxes((14, 30), (1, 2, 12, 2, 12), (2, 2, 12, 12, 22))
    prediction = boxes((14, 30), (1, 2, 12, 2, 13))
    assert object_jaccard(truth, prediction) == dict(jaccard=0.5, matched=1, n_true=2, n_pred=1)
    assert object_jaccard(truth, prediction, erosion=1)["matched"] == 0
    eroded = erode_labels(truth)
    assert set(np.unique(eroded)) == {0, 1, 2} and not (ndi.binary_dilation(eroded == 1) & (eroded == 2)).any()


def test_thresholds_are_the_published_grids():
    assert F1_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
    assert AP_THRESHOLDS == F1_THRESHOLDS + (0.95,)


def test_remove_border_objects_keeps_the_other_labels():
    labels = boxes((20, 20), (4, 0, 5, 5, 9), (7, 8, 12, 8, 12), (9, 10, 20, 15, 20), (11, 2, 6, 14, 17))
    out = remove_border_objects(labels)
    assert set(np.unique(out)) == {0, 7, 11}
    np.testing.assert_array_equal(out[labels == 7], 7)
    assert set(np.unique(remove_border_objects(labels, buffer=2))) == {0, 7}   # 11 is 2 px from the top
    s = instance_scores(labels, np.where(labels == 9, 0, labels), exclude_border=True)
    assert s["object_jaccard"] == 1.0 and s["n_true"] == 2


def test_dice_per_class():
    truth = np.array([[0, 0, 1, 1, 2, 255]])
    prediction = np.array([[0, 1, 1, 1, 0, 2]])
    dice = dice_per_class(truth, prediction, num_classes=4)
    np.testing.assert_allclose(dice[:3], [0.5, 0.8, 0.0])
    assert np.isnan(dice[3])                                                 # absent from both
    assert dice_per_class(truth, prediction, ignore_value=None)[2] == 0.0   # 255 now counts as a class


def test_bad_input_is_a_clear_error():
    good = boxes((10, 10), (1, 2, 5, 2, 5))
    with pytest.raises(CellmixerError, match="shape"):
        match_instances(good, good[:5])
    with pytest.raises(CellmixerError, match="whole numbers"):
        object_jaccard(good * 0.5, good)
    with pytest.raises(CellmixerError, match="negative"):
        match_instances(-good, good)
    with pytest.raises(CellmixerError, match="threshold"):
        match_instances(good, good, threshold=0)
    with pytest.raises(CellmixerError, match="integers"):
        match_instances(good.astype(str), good)


# --------------------------------------------------------------------------- against stardist
def _assert_like_stardist(truth, prediction, thresholds):
    stardist_matching = pytest.importorskip("stardist.matching", reason="stardist is not installed")
    ours = match_instances(truth, prediction, threshold=list(thresholds))
    for thr, m in zip(thresholds, ours):
        s = stardist_matching.matching(truth, prediction, thresh=thr)
        assert (m["tp"], m["fp"], m["fn"]) == (s.tp, s.fp, s.fn), thr
        assert m["f1"] == pytest.approx(s.f1) and m["average_precision"] == pytest.approx(s.accuracy)
        assert m["precision"] == pytest.approx(s.precision) and m["recall"] == pytest.approx(s.recall)
        assert m["mean_matched_iou"] == pytest.approx(s.mean_matched_score, abs=1e-6)


def test_agrees_with_stardist_on_random_overlapping_blobs():
    rng = np.random.default_rng(3)

    def blobs(n):
        seeds = np.zeros((96, 96), np.int32)
        seeds[rng.integers(0, 96, n), rng.integers(0, 96, n)] = rng.permutation(np.arange(1, n + 1)) * 7
        grown = ndi.grey_dilation(seeds, size=9)
        return np.where(rng.random((96, 96)) < 0.9, grown, 0)

    for _ in range(3):
        _assert_like_stardist(blobs(40), blobs(35), [0.05, 0.1, 0.2, 0.3, 0.5, 0.7])


@pytest.mark.skipif(not (BBBC039 / "masks").is_dir(), reason="BBBC039 data not present")
def test_agrees_with_stardist_on_bbbc039():
    from PIL import Image

    from cellmixer.ops import identify_primary_objects

    for name in (BBBC039 / "metadata" / "test.txt").read_text().split()[:2]:
        truth = read_labels(BBBC039 / "masks" / name)
        classical = identify_primary_objects(np.asarray(Image.open(BBBC039 / "images" / name)))
        shifted = np.roll(ndi.grey_dilation(truth, size=3), (2, 1), axis=(0, 1))
        for prediction in (classical, shifted):
            _assert_like_stardist(truth, prediction, [0.1, 0.3] + list(F1_THRESHOLDS))
