"""Scores (confusion matrix, accuracy, IoU, Table 1) and the evaluate command (cellmixer.metrics)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import tifffile

from cellmixer._errors import CellmixerError
from cellmixer.demo import synthetic_culture
from cellmixer.methods.cellmixer import NOT_ANNOTATED, artificial_mixtures, evaluate, load_evaluation_images
from cellmixer.metrics import confusion_matrix, format_table, segmentation_scores

TYPES = ["epithelial", "roundcell", "spindle"]


# ------------------------------------------------------------------------------------------ scores
def test_confusion_matrix_by_hand():
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, 255]])
    prediction = np.array([[0, 1, 1, 1], [2, 0, 1, 2]])
    expected = np.array([[1, 1, 0],
                         [0, 2, 0],
                         [1, 1, 1]])
    matrix = confusion_matrix(truth, prediction, num_classes=3)
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.dtype == np.int64 and matrix.sum() == 7  # the 255 pixel is not annotated


def test_confusion_matrix_ignore_value_options():
    truth = np.array([0, 1, 9, 9])
    prediction = np.array([0, 1, 1, 0])
    np.testing.assert_array_equal(confusion_matrix(truth, prediction, num_classes=2, ignore_value=9),
                                  [[1, 0], [0, 1]])
    # Without an ignore value, truth outside [0, num_classes) is still skipped.
    np.testing.assert_array_equal(confusion_matrix(truth, prediction, num_classes=2, ignore_value=None),
                                  [[1, 0], [0, 1]])
    # 255 is ignored by default even when the model predicts it (clipped into range).
    np.testing.assert_array_equal(confusion_matrix(np.array([1, 255]), np.array([7, 0]), num_classes=2),
                                  [[0, 0], [0, 1]])
    with pytest.raises(ValueError):
        confusion_matrix(np.zeros(3), np.zeros(4), num_classes=2)


def test_scores_by_hand():
    matrix = np.array([[50, 10, 0],
                       [5, 20, 5],
                       [0, 0, 10]])
    s = segmentation_scores(matrix, ["background", "a", "b"])
    acc = [50 / 60, 20 / 30, 10 / 10]
    iou = [50 / (60 + 55 - 50), 20 / (30 + 30 - 20), 10 / (10 + 15 - 10)]
    for name, a, i in zip(["background", "a", "b"], acc, iou):
        assert s["classes"][name]["accuracy"] == pytest.approx(a)
        assert s["classes"][name]["iou"] == pytest.approx(i)
    assert s["classes"]["a"]["pixels"] == 30
    assert s["mAcc"] == pytest.approx(np.mean(acc))
    assert s["mIoU"] == pytest.approx(np.mean(iou))
    assert s["pixel_accuracy"] == pytest.approx(80 / 100)
    assert s["confusion_matrix"] == matrix.tolist()


def test_absent_classes_are_nan_and_left_out_of_means():
    # Class 2 never occurs nor is predicted; class 3 is predicted but never true.
    matrix = np.array([[8, 0, 0, 2],
                       [0, 5, 0, 0],
                       [0, 0, 0, 0],
                       [0, 0, 0, 0]])
    s = segmentation_scores(matrix)
    assert math.isnan(s["classes"]["2"]["accuracy"]) and math.isnan(s["classes"]["2"]["iou"])
    assert math.isnan(s["classes"]["3"]["accuracy"]) and s["classes"]["3"]["iou"] == 0.0
    assert s["mAcc"] == pytest.approx((0.8 + 1.0) / 2)
    assert s["mIoU"] == pytest.approx((0.8 + 1.0 + 0.0) / 3)
    empty = segmentation_scores(np.zeros((2, 2)))
    assert math.isnan(empty["mIoU"]) and math.isnan(empty["mAcc"]) and math.isnan(empty["pixel_accuracy"])


def test_perfect_scores():
    truth = np.random.default_rng(0).integers(0, 4, (30, 30))
    s = segmentation_scores(confusion_matrix(truth, truth, num_classes=4))
    assert s["mAcc"] == 1.0 and s["mIoU"] == 1.0 and s["pixel_accuracy"] == 1.0


def _scores(acc_iou):
    names = ["background", "a", "b"]
    return {"classes": {n: {"accuracy": a, "iou": i, "pixels": 1} for n, (a, i) in zip(names, acc_iou)},
            "mAcc": float(np.nanmean([a for a, _ in acc_iou])), "mIoU": float(np.nanmean([i for _, i in acc_iou]))}


def test_table_has_the_layout_of_table_1():
    results = {
        "Baseline": {"Unmixed": _scores([(0.9, 0.8), (0.5, 0.4), (0.6, 0.3)]),
                     "Artificial Mix": _scores([(0.7, 0.6), (0.2, 0.1), (float("nan"), float("nan"))])},
        "CellMixer": {"Unmixed": _scores([(0.95, 0.9), (0.8, 0.7), (0.9, 0.8)]),
                      "Artificial Mix": _scores([(0.9, 0.85), (0.75, 0.6), (0.8, 0.7)])},
    }
    lines = format_table(results).splitlines()
    assert lines[0] == ("| Model | Class | Unmixed Acc | Unmixed IoU | Artificial Mix Acc | Artificial Mix IoU |")
    assert lines[1] == "|---|---|---|---|---|---|"
    assert len(lines) == 2 + 2 * (3 + 1)  # per model: one row per class and a mean row
    assert lines[2] == "| Baseline | Backgr. | 90.00 | 80.00 | 70.00 | 60.00 |"
    assert lines[3] == "|  | a | 50.00 | 40.00 | 20.00 | 10.00 |"
    assert lines[4] == "|  | b | 60.00 | 30.00 | - | - |"  # NaN shown as '-'
    assert lines[5].startswith("|  | **mean (mAcc, mIoU)** | **66.67** | **50.00** | **45.00** | **35.00** |")
    assert lines[6].startswith("| CellMixer | Backgr. |")
    assert all(line.count("|") == 7 for line in lines)


# ------------------------------------------------------------------------------------------ evaluate
def test_load_evaluation_images_homogeneous(annotated_dir):
    items = load_evaluation_images(annotated_dir, TYPES)
    assert [i.name for i in items] == [f"{t}/{t}_0" for t in TYPES]
    for k, item in enumerate(items, start=1):
        instances = tifffile.imread(annotated_dir / TYPES[k - 1] / f"{TYPES[k - 1]}_0_masks.tif")
        assert item.class_index == k
        np.testing.assert_array_equal(item.truth, np.where(instances > 0, k, 0))
        assert item.image.shape == item.truth.shape == (80, 96)


def test_artificial_mixtures_follow_the_rule(annotated_dir):
    items = load_evaluation_images(annotated_dir, TYPES)
    mixtures = artificial_mixtures(items, limit=100)
    assert len(mixtures) == 6  # ordered pairs of different classes
    first, second = items[0], items[1]
    mixture = next(m for m in mixtures if m.name == f"{first.name} + {second.name}")
    expected = np.where(second.truth > 0, second.truth, first.truth)
    np.testing.assert_array_equal(mixture.truth, expected)
    assert len(artificial_mixtures(items, limit=2)) == 2


def test_evaluate_homogeneous_folder(trained, annotated_dir, tmp_path):
    model, folder = trained
    out = tmp_path / "eval"
    result = evaluate(folder, annotated_dir, artificial=3, output=out, progress=False)
    scores = result["results"]["model"]
    assert list(scores) == ["Unmixed", "Artificial Mix"]
    assert scores["Unmixed"]["images"] == 3 and scores["Artificial Mix"]["images"] == 3
    for set_scores in scores.values():
        assert set(set_scores["classes"]) == {"background", *TYPES}
        matrix = np.array(set_scores["confusion_matrix"])
        assert matrix.shape == (4, 4)
        assert 0 <= set_scores["mIoU"] <= 1
    assert np.array(scores["Unmixed"]["confusion_matrix"]).sum() == 3 * 80 * 96
    assert scores["Unmixed"]["classes"]["background"]["accuracy"] > 0.5  # a trained model
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["classes"] == ["background", *TYPES] and saved["ignore_value"] is None
    assert saved["results"]["model"]["Unmixed"]["mIoU"] == pytest.approx(scores["Unmixed"]["mIoU"])
    table = (out / "evaluation.md").read_text()
    assert table.strip() == result["table"]
    assert "| model | Backgr. |" in table and "Artificial Mix IoU" in table
    assert len(list(out.glob("*.png"))) == 6  # one picture per image and set
    # Scores match a direct computation.
    items = load_evaluation_images(annotated_dir, TYPES)
    matrix = sum(confusion_matrix(i.truth, model.predict(i.image), num_classes=4) for i in items)
    assert scores["Unmixed"]["confusion_matrix"] == matrix.tolist()


def test_evaluate_refuses_to_overwrite(trained, annotated_dir, tmp_path, snapshot):
    model, _ = trained
    evaluate(model, annotated_dir, artificial=0, output=tmp_path, overlays=False, progress=False)
    before = snapshot(tmp_path)
    with pytest.raises(CellmixerError, match="evaluation.json.*--overwrite"):
        evaluate(model, annotated_dir, artificial=0, output=tmp_path, overlays=False, progress=False)
    assert snapshot(tmp_path) == before


def test_evaluate_two_models_and_ignore_value(trained, annotated_dir, tmp_path):
    model, folder = trained
    data = tmp_path / "data"
    shutil.copytree(annotated_dir, data)
    mask_path = data / "roundcell" / "roundcell_0_masks.tif"
    mask = tifffile.imread(mask_path)
    mask[:40] = 255  # top half not annotated
    tifffile.imwrite(mask_path, mask)
    result = evaluate([model, folder], data, model_names=["A", "B"], artificial=0, ignore_value=255,
                      progress=False)
    assert list(result["results"]) == ["A", "B"]
    a, b = result["results"]["A"]["Unmixed"], result["results"]["B"]["Unmixed"]
    assert a["confusion_matrix"] == b["confusion_matrix"]  # the same model, loaded or not
    assert np.array(a["confusion_matrix"]).sum() == 3 * 80 * 96 - 40 * 96
    assert "Artificial Mix" not in result["results"]["A"]


def test_homogeneous_binary_255_masks_count_as_cells(annotated_dir, tmp_path):
    # ImageJ and many tools save binary masks as 0/255: every such pixel is a cell, not "not annotated".
    data = tmp_path / "data"
    shutil.copytree(annotated_dir, data)
    for mask_path in data.rglob("*_masks.tif"):
        tifffile.imwrite(mask_path, np.where(tifffile.imread(mask_path) > 0, 255, 0).astype(np.uint8))
    binary = load_evaluation_images(data, TYPES)
    original = load_evaluation_images(annotated_dir, TYPES)
    for b, o in zip(binary, original):
        np.testing.assert_array_equal(b.truth, o.truth)
        assert (b.truth > 0).any()
    # With an explicit ignore value, those pixels are left out instead.
    assert all((i.truth == NOT_ANNOTATED).any() for i in load_evaluation_images(data, TYPES, ignore_value=255))


def test_evaluate_mixed_culture_folder(trained, tmp_path):
    model, _ = trained
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(2):
        image, _, classes = synthetic_culture(TYPES, shape=(72, 88), seed=40 + i)
        tifffile.imwrite(folder / f"field{i}.tif", image)
        classes = classes.copy()
        classes[:4] = 255  # a band that is not annotated
        tifffile.imwrite(folder / f"field{i}_masks.tif", classes)
    result = evaluate(model, folder, artificial=5, progress=False)
    scores = result["results"]["model 1"]
    assert list(scores) == ["Unmixed"]  # no artificial mixtures of mixed cultures
    matrix = np.array(scores["Unmixed"]["confusion_matrix"])
    assert matrix.sum() == 2 * (72 - 4) * 88
    items = load_evaluation_images(folder, TYPES)
    assert all(i.class_index is None for i in items)
    assert set(np.unique(items[0].truth)) <= {0, 1, 2, 3, NOT_ANNOTATED}
    assert (items[0].truth[:4] == NOT_ANNOTATED).all()


def test_mask_value_beyond_the_classes(trained, tmp_path):
    model, _ = trained
    tifffile.imwrite(tmp_path / "f.tif", np.random.default_rng(0).integers(0, 1000, (32, 32)).astype(np.uint16))
    mask = np.zeros((32, 32), np.uint8)
    mask[5:10, 5:10] = 7
    tifffile.imwrite(tmp_path / "f_masks.tif", mask)
    with pytest.raises(CellmixerError) as info:
        evaluate(model, tmp_path, progress=False)
    message = str(info.value)
    assert "f_masks.tif" in message and "value 7" in message and "3 classes" in message


def test_missing_mask(trained, annotated_dir, tmp_path):
    model, _ = trained
    data = tmp_path / "data"
    shutil.copytree(annotated_dir, data)
    (data / "spindle" / "spindle_0_masks.tif").unlink()
    with pytest.raises(CellmixerError, match=r"spindle_0\.tif: no ground-truth mask found"):
        evaluate(model, data, progress=False)


def test_mask_of_another_size(trained, annotated_dir, tmp_path):
    model, _ = trained
    data = tmp_path / "data"
    shutil.copytree(annotated_dir, data)
    tifffile.imwrite(data / "spindle" / "spindle_0_masks.tif", np.zeros((10, 10), np.uint8))
    with pytest.raises(CellmixerError, match=r"spindle_0_masks\.tif: mask is 10x10 but its image is 80x96"):
        evaluate(model, data, progress=False)


def test_masks_in_their_own_folder(trained, annotated_dir, tmp_path):
    model, _ = trained
    data, masks = tmp_path / "images", tmp_path / "gt"
    data.mkdir()
    masks.mkdir()
    for t in TYPES:
        shutil.copy(annotated_dir / t / f"{t}_0.tif", data / f"{t}.tif")
        labels = (tifffile.imread(annotated_dir / t / f"{t}_0_masks.tif") > 0) * (TYPES.index(t) + 1)
        tifffile.imwrite(masks / f"{t}.tif", labels.astype(np.uint8))
    result = evaluate(model, data, masks_dir=masks, progress=False)
    assert result["results"]["model 1"]["Unmixed"]["images"] == 3


def test_models_with_other_classes(trained, annotated_dir):
    from cellmixer.engine import SegmentationModel

    model, _ = trained
    other = SegmentationModel.new(["x", "y", "z"], width=4, depth=2)
    with pytest.raises(CellmixerError, match="same classes"):
        evaluate([model, other], annotated_dir, progress=False)


def test_unknown_subfolders(trained, annotated_dir, tmp_path):
    model, _ = trained
    data = tmp_path / "data"
    shutil.copytree(annotated_dir, data)
    shutil.copytree(data / "spindle", data / "hepatocyte")
    with pytest.raises(CellmixerError, match="hepatocyte"):
        evaluate(model, data, progress=False)
