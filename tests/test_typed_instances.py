"""Typed cells: type assignment, COCO round trips and AP, GeoJSON, the files written, bad COCO input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from skimage.draw import polygon as draw_polygon

from cellmixer._errors import CellmixerError
from cellmixer.io import instance_features
from cellmixer.methods.typed import (
    ClassSource,
    TypedInstances,
    annotation_mask,
    encode_mask,
    evaluate_typed,
    ground_truth,
    instance_labels,
    label_annotations,
    read_coco,
    typed_instances,
    write_typed,
)
from cellmixer.metrics import coco_evaluate
from cellmixer.ops import split_foreground


def blobs(shape=(60, 80), centres=((15, 15), (15, 45), (42, 25), (40, 62)), radius=8) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    labels = np.zeros(shape, np.int32)
    for k, (y, x) in enumerate(centres, start=1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2] = k
    return labels


def square_polygon(y0, x0, y1, x1) -> list:
    """COCO polygon of the pixels [y0, y1) x [x0, x1) (pixel corners)."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def coco_file(tmp_path, *, images=None, annotations=None, categories=None, name="ann.json", write_images=True):
    images = images if images is not None else [{"id": 1, "file_name": "A_1.tif", "height": 40, "width": 50}]
    categories = categories if categories is not None else [{"id": 1, "name": "cell"}]
    annotations = annotations if annotations is not None else [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": square_polygon(5, 5, 15, 15), "iscrowd": 0}]
    if write_images:
        rng = np.random.default_rng(0)
        for im in images:
            tifffile.imwrite(tmp_path / im["file_name"], rng.integers(0, 255, (im["height"], im["width"]), np.uint8))
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


# ------------------------------------------------------------------------------- type assignment
def test_each_cell_takes_the_type_with_the_highest_mean_probability():
    labels = blobs()
    probs = np.zeros((4, *labels.shape), np.float32)
    probs[0] = 1.0
    # Cell 1 is mostly type 0 but has a few pixels strongly of type 2: the mean decides, not the peak.
    cell = labels == 1
    probs[:, cell] = np.array([0.1, 0.6, 0.1, 0.2])[:, None]
    few = cell & (np.cumsum(cell.ravel()).reshape(cell.shape) <= 5)
    probs[:, few] = np.array([0.0, 0.0, 0.0, 1.0])[:, None]
    for k, t in ((2, 1), (3, 2), (4, 0)):
        probs[:, labels == k] = np.eye(4)[t + 1][:, None] * 0.8 + np.array([0.2, 0, 0, 0])[:, None]
    result = typed_instances(probs, labels * 7, type_names=["a", "b", "c"])  # any numbering
    assert [result.type_names[t] for t in result.types] == ["a", "b", "c", "a"]
    assert result.labels.max() == 4 and set(np.unique(result.labels)) == {0, 1, 2, 3, 4}
    n1 = cell.sum()
    assert result.scores[0] == pytest.approx(((n1 - 5) * 0.6) / n1, abs=1e-6)
    assert result.objectness[1] == pytest.approx(0.8)
    np.testing.assert_allclose(result.type_probabilities.sum(axis=1), result.objectness, atol=1e-6)
    assert result.counts() == {"a": 2, "b": 1, "c": 1}
    assert set(np.unique(result.type_map())) == {0, 1, 2, 3}


def test_no_instances_gives_empty_result_and_bad_shapes_are_errors():
    probs = np.full((3, 10, 12), 1 / 3, np.float32)
    empty = typed_instances(probs, np.zeros((10, 12), int), type_names=["a", "b"])
    assert len(empty) == 0 and empty.counts() == {"a": 0, "b": 0} and not empty.type_map().any()
    with pytest.raises(CellmixerError, match="does not fit"):
        typed_instances(probs, np.zeros((10, 11), int))
    with pytest.raises(CellmixerError, match="2 names for 1"):
        typed_instances(probs[:2], np.zeros((10, 12), int), type_names=["a", "b"])


def test_watershed_splits_touching_cells():
    touching = blobs(centres=((20, 20), (20, 35)), radius=9) > 0
    from scipy import ndimage as ndi

    assert ndi.label(touching)[1] == 1
    labels = split_foreground(touching, min_distance=5)
    assert labels.max() == 2
    assert split_foreground(np.zeros((5, 5), bool)).max() == 0


# ------------------------------------------------------------------------------- COCO round trips
def test_rle_round_trip_through_pycocotools():
    labels = blobs()
    for k in range(1, 5):
        ann = {"segmentation": encode_mask(labels == k)}
        assert np.array_equal(annotation_mask(ann, *labels.shape), labels == k)
    json.dumps(encode_mask(labels == 1))  # JSON-ready


def test_identical_masks_score_ap_1_class_aware_and_agnostic():
    labels = blobs()
    categories = [1, 2, 1, 2]
    truth = {"images": [{"id": 7, "file_name": "a.tif", "height": 60, "width": 80}],
             "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
             "annotations": label_annotations(labels, image_id=7, category_ids=categories)}
    results = json.loads(json.dumps(label_annotations(labels, image_id=7, category_ids=categories,
                                                      scores=[0.9, 0.8, 0.7, 0.6])))
    aware = coco_evaluate(truth, results)
    assert aware["mAP"] == aware["AP50"] == aware["AP75"] == 100.0
    assert aware["per_class"] == {"a": 100.0, "b": 100.0}
    agnostic = coco_evaluate(truth, results, class_aware=False)
    assert agnostic["mAP"] == 100.0
    # Every cell typed wrongly: class-aware AP 0, class-agnostic AP still 1.
    swapped = [dict(r, category_id=3 - r["category_id"]) for r in results]
    assert coco_evaluate(truth, swapped)["mAP"] == 0.0
    assert coco_evaluate(truth, swapped, class_aware=False)["mAP"] == 100.0
    assert coco_evaluate(truth, [])["mAP"] == 0.0  # no detections at all


def test_hand_made_ap_values():
    labels = blobs()
    truth = {"images": [{"id": 1, "file_name": "a.tif", "height": 60, "width": 80}],
             "categories": [{"id": 1, "name": "cell"}],
             "annotations": label_annotations(labels, image_id=1, category_ids=[1] * 4)}
    # Half of the cells found (perfect masks): precision 1 up to recall 0.5, then nothing -> AP 0.5
    # (101-point interpolation: 51 of 101 recall points reach precision 1).
    half = np.where(labels <= 2, labels, 0)
    found = label_annotations(half, image_id=1, category_ids=[1, 1], scores=[0.9, 0.8])
    assert coco_evaluate(truth, found, class_aware=False)["mAP"] == pytest.approx(100 * 51 / 101, abs=1e-3)
    # All four found plus one false positive ranked first: precision 4/5 at every recall -> AP 0.8.
    extra = np.zeros_like(labels)
    extra[50:58, 2:10] = 1
    fp = label_annotations(extra, image_id=1, category_ids=[1], scores=[0.99])
    all4 = label_annotations(labels, image_id=1, category_ids=[1] * 4, scores=[0.9, 0.8, 0.7, 0.6])
    assert coco_evaluate(truth, fp + all4, class_aware=False)["mAP"] == pytest.approx(80.0, abs=1e-3)
    # The same false positive ranked last costs nothing.
    assert coco_evaluate(truth, all4 + [dict(fp[0], score=0.1)], class_aware=False)["mAP"] == pytest.approx(100.0)
    # A cell shifted by 3 pixels (IoU 0.61) matches at IoU 0.50-0.60 only; above, it is a false positive
    # ranked first and its cell is missed: precision 1/2, 2/3, 3/4 at recall 1/4, 2/4, 3/4, then nothing.
    shifted = np.where(labels == 1, 0, labels)
    shifted[np.roll(labels == 1, 3, axis=1)] = 1
    iou = ((labels == 1) & (shifted == 1)).sum() / ((labels == 1) | (shifted == 1)).sum()
    assert 0.60 < iou < 0.65
    res = label_annotations(shifted, image_id=1, category_ids=[1] * 4, scores=[0.9, 0.8, 0.7, 0.6])
    score = coco_evaluate(truth, res, class_aware=False)
    recall = np.linspace(0, 1, 101)
    missed = np.where(recall <= 0.75, 3 / 4, 0).mean() * 100  # COCO interpolates: best precision at >= recall
    assert score["AP50"] == pytest.approx(100.0) and score["AP75"] == pytest.approx(missed, abs=1e-3)
    assert score["mAP"] == pytest.approx(np.mean([100.0] * 3 + [missed] * 7), abs=1e-3)


def test_max_detections_limit_matters_for_crowded_images():
    yy, xx = np.mgrid[:120, :120]
    labels = ((yy // 8) * 15 + xx // 8 + 1).astype(np.int32)  # 225 cells of 8x8
    labels[(yy % 8 == 7) | (xx % 8 == 7)] = 0
    n = int(labels.max())
    truth = {"images": [{"id": 1, "file_name": "a.tif", "height": 120, "width": 120}],
             "categories": [{"id": 1, "name": "cell"}],
             "annotations": label_annotations(labels, image_id=1, category_ids=[1] * n)}
    results = label_annotations(labels, image_id=1, category_ids=[1] * n, scores=np.linspace(1, 0.5, n))
    assert coco_evaluate(truth, results, class_aware=False)["mAP"] == pytest.approx(100.0)
    capped = coco_evaluate(truth, results, class_aware=False, max_detections=(1, 10, 100))
    assert capped["mAP"] < 50.0  # COCO's 100 detections miss more than half of this field


# ------------------------------------------------------------------------------- reading COCO
def test_read_coco_polygons_and_livecell_style_dict(tmp_path):
    anns = {"1": {"id": 1, "image_id": 1, "category_id": 1, "segmentation": square_polygon(5, 5, 15, 15)},
            "2": {"id": 2, "image_id": 1, "category_id": 1, "segmentation": encode_mask(blobs((40, 50), ((30, 35),), 5) > 0)}}
    path = coco_file(tmp_path, annotations=anns)
    dataset = read_coco(path)
    [image] = dataset.images
    assert image.path == tmp_path / "A_1.tif" and len(image.annotations) == 2
    labels = instance_labels(image)
    assert labels.max() == 2 and (labels == 1).sum() == 100
    truth = ground_truth(dataset, ClassSource("prefix"))
    assert truth["categories"] == [{"id": 1, "name": "A"}] and len(truth["annotations"]) == 2


@pytest.mark.parametrize("case, needle", [
    ("missing image", "not in"),
    ("out of bounds", "outside the 50x40 image"),
    ("empty segmentation", "empty or malformed segmentation"),
    ("two points", "at least 3"),
    ("unknown category", "not in \"categories\""),
    ("unknown image", "refers to image id 9"),
    ("wrong rle size", "RLE of size"),
    ("not json", "not valid JSON"),
])
def test_bad_coco_files_are_one_line_errors(tmp_path, case, needle):
    ann = {"id": 1, "image_id": 1, "category_id": 1, "segmentation": square_polygon(5, 5, 15, 15)}
    kwargs = {}
    if case == "missing image":
        kwargs["write_images"] = False
    elif case == "out of bounds":
        ann["segmentation"] = [[5, 5, 80, 5, 80, 15, 5, 15]]
    elif case == "empty segmentation":
        ann["segmentation"] = []
    elif case == "two points":
        ann["segmentation"] = [[1, 1, 4, 4]]
    elif case == "unknown category":
        ann["category_id"] = 5
    elif case == "unknown image":
        ann["image_id"] = 9
    elif case == "wrong rle size":
        ann["segmentation"] = encode_mask(np.ones((10, 10), bool))
    path = coco_file(tmp_path, annotations=[ann], **kwargs)
    if case == "not json":
        path.write_text("{not json")
    with pytest.raises(CellmixerError) as info:
        read_coco(path)
    message = str(info.value)
    assert needle in message and "\n" not in message and str(path) in message


def test_polygon_slightly_outside_is_clipped_not_refused(tmp_path):
    ann = {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[-1, -1, 51, -1, 51, 41, -1, 41]]}
    [image] = read_coco(coco_file(tmp_path, annotations=[ann])).images
    assert instance_labels(image).all()


def test_images_without_cells_and_unknown_classes_in_evaluation(tmp_path):
    images = [{"id": 1, "file_name": "A_1.tif", "height": 40, "width": 50},
              {"id": 2, "file_name": "B_1.tif", "height": 40, "width": 50}]  # B_1 has no cells
    path = coco_file(tmp_path, images=images)
    truth = ground_truth(read_coco(path), ClassSource("prefix"))
    assert [c["name"] for c in truth["categories"]] == ["A", "B"]
    labels = np.zeros((40, 50), np.int32)
    labels[5:15, 5:15] = 1
    results = label_annotations(labels, image_id=1, category_ids=[1], scores=[0.9],
                                extra={"category_name": ["A"], "file_name": ["A_1.tif"]})
    report = evaluate_typed(results, path, class_from="prefix")
    assert report["class_aware"]["per_class"] == {"A": 100.0, "B": None}
    assert report["counts"][1] == {"image": "B_1.tif", "true": 0, "predicted": 0, "error": 0}
    # A predicted type the annotations do not have: those cells are false positives, named in the report.
    strange = [dict(results[0], category_name="Z")]
    report = evaluate_typed(strange, path, class_from="prefix")
    assert report["class_aware"]["mAP"] == 0.0 and report["class_aware"]["types_without_ground_truth"] == ["Z"]
    assert report["class_agnostic"]["mAP"] == 100.0
    with pytest.raises(CellmixerError, match="not one of"):
        ground_truth(read_coco(path), ClassSource("prefix"), classes=["A"])


def test_class_table_and_prefix_errors(tmp_path):
    table = tmp_path / "classes.csv"
    table.write_text("image,class\nsub/x.tif,hela\n")
    assert ClassSource(table).image_class("x.tif") == "hela"
    with pytest.raises(CellmixerError, match="not in the class table"):
        ClassSource(table).image_class("y.tif")
    with pytest.raises(CellmixerError, match="no '_'"):
        ClassSource("prefix").image_class("plain.tif")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,kind\nx.tif,a\n")
    with pytest.raises(CellmixerError, match="needs the columns"):
        ClassSource(bad)


# ------------------------------------------------------------------------------- GeoJSON and files
def test_geojson_is_valid_and_rasterizes_back_to_the_cells():
    labels = blobs()
    labels[38:44, 60:64] = 0  # a hole in cell 4
    collection = instance_features(labels, names=["a", "b", "a", "b"], colors={"a": (1, 2, 3)},
                                   properties={"score": np.array([0.5, 0.6, 0.7, 0.8])})
    json.loads(json.dumps(collection))
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 4
    for feature in collection["features"]:
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        props = feature["properties"]
        assert props["objectType"] == "detection" and props["classification"]["name"] in ("a", "b")
        rings = feature["geometry"]["coordinates"]
        for i, ring in enumerate(rings):
            ring = np.asarray(ring)
            assert len(ring) >= 4 and np.array_equal(ring[0], ring[-1])
            area = 0.5 * np.sum(ring[:-1, 0] * ring[1:, 1] - ring[1:, 0] * ring[:-1, 1])
            assert (area > 0) if i == 0 else (area < 0)  # RFC 7946: exterior counter-clockwise, holes clockwise
        exterior = np.asarray(rings[0])
        mask = np.zeros(labels.shape, bool)
        rr, cc = draw_polygon(exterior[:, 1] - 0.5, exterior[:, 0] - 0.5, labels.shape)
        mask[rr, cc] = True
        for hole in rings[1:]:
            hole = np.asarray(hole)
            rr, cc = draw_polygon(hole[:, 1] - 0.5, hole[:, 0] - 0.5, labels.shape)
            mask[rr, cc] = False
        cell = labels == feature["properties"]["label"]
        assert (mask & cell).sum() / (mask | cell).sum() > 0.9
    assert len(collection["features"][3]["geometry"]["coordinates"]) == 2  # the hole is kept
    assert collection["features"][0]["properties"]["classification"]["color"] == [1, 2, 3]
    assert collection["features"][3]["properties"]["score"] == 0.8


def test_write_typed_files(tmp_path):
    import csv

    from PIL import Image

    labels = blobs()
    n = 4
    cells = TypedInstances(labels, np.array([0, 1, 1, 0]), np.full(n, 0.7), np.full(n, 0.9),
                           np.tile([0.7, 0.2], (n, 1)), ["a", "b"])
    image = np.random.default_rng(0).normal(100, 10, labels.shape)
    row = write_typed(tmp_path, "img", image, cells)
    assert {k: v for k, v in row.items() if not k.startswith("_")} == {"cells": 4, "a": 2, "b": 2}
    assert len(row["_coco_dataset"]["annotations"]) == 4
    assert np.array_equal(tifffile.imread(tmp_path / "img_labels.tif"), labels)
    assert set(np.unique(tifffile.imread(tmp_path / "img_types.tif"))) == {0, 1, 2}
    with open(tmp_path / "img_cells.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:4] == ["label", "type", "score", "objectness"] and "mean_intensity" in rows[0]
    assert [r["type"] for r in rows] == ["a", "b", "b", "a"]
    assert json.loads((tmp_path / "img.geojson").read_text())["type"] == "FeatureCollection"
    overlay = np.asarray(Image.open(tmp_path / "img_overlay.png"))
    assert overlay.shape[0] > labels.shape[0] and overlay.shape[1] == labels.shape[1]  # legend strip below
    with pytest.raises(CellmixerError, match="already exists"):
        write_typed(tmp_path, "img", image, cells)
