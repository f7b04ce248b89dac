"""Microscope files in (axes, channel names, pixel size, planes; CZI and OME-Zarr through bioio), safe discovery of
inputs, and the field's formats out (cell table, Fiji ROIs, QuPath GeoJSON, COCO dataset). Real files, written here."""

from __future__ import annotations

import csv
import json
import sys
import zipfile

import jsonschema
import numpy as np
import pytest
import roifile
import tifffile
from PIL import Image
from pycocotools.coco import COCO
from skimage.draw import disk, polygon
from skimage.measure import regionprops_table

from cellmixer._errors import CellmixerError
from cellmixer.cli import main
from cellmixer.engine import InstanceWriter
from cellmixer.io import (
    collect_inputs,
    describe_images,
    discover_dataset,
    image_planes,
    list_images,
    open_image,
    read_image,
    skipped_reason,
)
from cellmixer.methods.centroids import label_centroids, weak_labels
from cellmixer.methods.nuclei import label_nuclei
from cellmixer.methods.nuclei._train import nucleus_targets

PIXEL = 0.65


def nuclei_image(seed=0, shape=(96, 112), n=6, radius=7) -> tuple[np.ndarray, np.ndarray]:
    """Bright disks (nuclei) on a noisy background, uint16, and their labels."""
    rng = np.random.default_rng(seed)
    image = rng.normal(400, 20, shape)
    labels = np.zeros(shape, np.int32)
    centres = [(18 + 28 * (i // 4), 16 + 26 * (i % 4)) for i in range(n)]
    for k, (y, x) in enumerate(centres, start=1):
        rr, cc = disk((y, x), radius, shape=shape)
        image[rr, cc] += 3000 + 200 * k
        labels[rr, cc] = k
    return image.clip(0, 65535).astype(np.uint16), labels


def write_ome(path, channels, names, pixel=PIXEL):
    tifffile.imwrite(path, np.stack(channels), metadata={
        "axes": "CYX", "Channel": {"Name": list(names)}, "PhysicalSizeX": pixel, "PhysicalSizeY": pixel,
        "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"})


def run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- reading: axes and metadata from the file -------------------------------------------------------------


def test_imagej_z_stack_is_five_planes_not_five_channels(tmp_path):
    stack = np.stack([nuclei_image(seed=z)[0] for z in range(5)])
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, imagej=True, resolution=(1 / PIXEL, 1 / PIXEL),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 2.0})
    image = open_image(path)
    assert image.sizes == {"T": 1, "C": 1, "Z": 5, "Y": 96, "X": 112}
    assert image.pixel_size == pytest.approx((PIXEL, PIXEL)) and image.z_spacing == 2.0
    # Today's bug: --channel 2 silently segmented z-plane 2. Now it is an error naming the file and option.
    with pytest.raises(CellmixerError) as info:
        read_image(path, channel=2)
    assert "stack.tif" in str(info.value) and "5 z-planes" in str(info.value) and "\n" not in str(info.value)
    np.testing.assert_array_equal(read_image(path, project="max"), stack.max(axis=0))
    planes = image_planes(path)
    assert [p.suffix for p in planes] == [f"_z{z:03d}" for z in range(5)]
    np.testing.assert_array_equal(planes[3].read(), stack[3])
    assert [p.suffix for p in image_planes(path, project="max")] == [""]


def test_imagej_hyperstack_planes_are_read_by_index(tmp_path):
    data = np.random.default_rng(1).integers(0, 1000, (2, 3, 2, 16, 20)).astype(np.uint16)
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZCYX"})
    image = open_image(path)
    assert image.sizes == {"T": 2, "C": 2, "Z": 3, "Y": 16, "X": 20}
    for t in range(2):
        for z in range(3):
            for c in range(2):
                np.testing.assert_array_equal(image.plane(c, t=t, z=z), data[t, z, c])
    assert [p.suffix for p in image_planes(path)][:4] == ["_t000_z000", "_t000_z001", "_t000_z002", "_t001_z000"]


def test_ome_tiff_channel_names_and_pixel_size(tmp_path):
    dapi, _ = nuclei_image()
    gfp = np.full_like(dapi, 7)
    path = tmp_path / "two.ome.tif"
    write_ome(path, [dapi, gfp], ["DAPI", "GFP"])
    image = open_image(path)
    assert image.channel_names == ("DAPI", "GFP") and image.pixel_size == pytest.approx((PIXEL, PIXEL))
    np.testing.assert_array_equal(read_image(path, channel="DAPI"), dapi)
    np.testing.assert_array_equal(read_image(path, channel="gfp"), gfp)  # names match without case too
    np.testing.assert_array_equal(read_image(path, channel=1), gfp)
    with pytest.raises(CellmixerError) as info:
        read_image(path, channel="CY5")
    message = str(info.value)
    assert "two.ome.tif" in message and "--channel CY5" in message and "DAPI, GFP" in message
    with pytest.raises(CellmixerError, match="--nuclear-channel CY5"):
        read_image(path, channel="CY5", option="--nuclear-channel")
    assert describe_images({"mixed": [path]}) == ["mixed: 1 image, 112x96 (1), 2 channels (DAPI, GFP), 0.65 um/pixel"]


def test_czi_written_by_pylibczirw_is_read_through_bioio(tmp_path):
    pyczi = pytest.importorskip("pylibCZIrw.czi")
    pytest.importorskip("bioio_czi")
    dapi, _ = nuclei_image()
    path = tmp_path / "plate.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as writer:
        for c in range(2):
            for z in range(3):
                writer.write(data=(dapi + 100 * c + 10 * z).astype(np.uint16), plane={"C": c, "Z": z, "T": 0})
        writer.write_metadata(document_name="plate", channel_names={0: "DAPI", 1: "GFP"}, scale_x=PIXEL * 1e-6,
                              scale_y=PIXEL * 1e-6, scale_z=2e-6)
    image = open_image(path)
    assert image.sizes == {"T": 1, "C": 2, "Z": 3, "Y": 96, "X": 112}
    assert image.channel_names == ("DAPI", "GFP") and image.pixel_size == pytest.approx((PIXEL, PIXEL))
    np.testing.assert_array_equal(image.plane("GFP", z=2), dapi + 120)
    # An unreadable CZI: one line naming the file.
    bad = tmp_path / "broken.czi"
    bad.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CellmixerError) as info:
        open_image(bad).plane("DAPI")
    assert "broken.czi" in str(info.value) and "\n" not in str(info.value)


def test_ome_zarr_is_read_through_bioio(tmp_path):
    writers = pytest.importorskip("bioio_ome_zarr.writers")
    data = np.random.default_rng(2).integers(0, 500, (1, 2, 1, 24, 32)).astype(np.uint16)
    path = tmp_path / "field.ome.zarr"
    writer = writers.OMEZarrWriter(str(path), level_shapes=data.shape, dtype=data.dtype,
                                   channels=[writers.Channel(label="DAPI", color="0000FF"),
                                             writers.Channel(label="GFP", color="00FF00")],
                                   physical_pixel_size=[1.0, 1.0, 1.0, PIXEL, PIXEL])
    writer.write_full_volume(data)
    image = open_image(path)
    assert image.sizes == {"T": 1, "C": 2, "Z": 1, "Y": 24, "X": 32}
    assert image.channel_names == ("DAPI", "GFP") and image.pixel_size == pytest.approx((PIXEL, PIXEL))
    np.testing.assert_array_equal(read_image(path, channel="GFP"), data[0, 1, 0])
    assert [p.name for p in list_images(tmp_path)] == ["field.ome.zarr"]  # a folder that is one image


def test_missing_extra_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bioio", None)  # as if cellmixer[formats] were not installed
    path = tmp_path / "plate.czi"
    path.write_bytes(b"ZISRAWFILE" + bytes(100))
    with pytest.raises(CellmixerError, match=r"plate\.czi: .*pip install 'cellmixer\[formats\]'"):
        open_image(path)
    code, _, err = run_cli(["nuclei", "label", str(path), "-o", str(tmp_path / "out"), "-q"], capsys)
    assert code == 2 and "cellmixer[formats]" in err and len(err.strip().splitlines()) == 1


# --- Z and T: every plane written with its index, or a projection -----------------------------------------


def test_every_plane_of_a_stack_is_labelled_and_written_with_its_index(tmp_path, capsys):
    planes = [nuclei_image(seed=z)[0] for z in range(3)]
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "stack.tif", np.stack(planes), imagej=True, resolution=(1 / PIXEL, 1 / PIXEL),
                     metadata={"axes": "ZYX", "unit": "um"})
    out = tmp_path / "out"
    code, _, err = run_cli(["nuclei", "label", str(folder), "-o", str(out), "-q"], capsys)
    assert code == 0, err
    for z in range(3):
        labels = tifffile.imread(out / f"stack_z{z:03d}_labels.tif")
        assert labels.max() == 6
        assert open_image(out / f"stack_z{z:03d}_labels.tif").pixel_size == pytest.approx((PIXEL, PIXEL))
    with open(out / "labels.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["file"], r["plane"]) for r in rows] == [("stack.tif", f"z{z:03d}") for z in range(3)]
    projected = tmp_path / "projected"
    code, _, err = run_cli(["nuclei", "label", str(folder), "-o", str(projected), "--project", "max", "-q"], capsys)
    assert code == 0, err
    assert (projected / "stack_labels.tif").is_file() and not list(projected.glob("stack_z*"))


# --- writing what the field reads -------------------------------------------------------------------------

# QuPath's GeoJSON objects as its documentation describes them (0.4+: "Exporting and importing objects as
# GeoJSON"): a FeatureCollection of Features with a UUID id, a Polygon or MultiPolygon in image pixels, and
# properties objectType, classification {name, color [r, g, b]}, isLocked and measurements {name: number}.
_RING = {"type": "array", "minItems": 4, "items": {"type": "array", "minItems": 2, "maxItems": 2,
                                                   "items": {"type": "number"}}}
QUPATH_SCHEMA = {
    "type": "object", "required": ["type", "features"],
    "properties": {"type": {"const": "FeatureCollection"}, "features": {"type": "array", "items": {
        "type": "object", "required": ["type", "id", "geometry", "properties"],
        "properties": {
            "type": {"const": "Feature"},
            "id": {"type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"},
            "geometry": {"oneOf": [
                {"type": "object", "required": ["type", "coordinates"], "properties": {
                    "type": {"const": "Polygon"}, "coordinates": {"type": "array", "minItems": 1, "items": _RING}}},
                {"type": "object", "required": ["type", "coordinates"], "properties": {
                    "type": {"const": "MultiPolygon"}, "coordinates": {"type": "array", "items": {
                        "type": "array", "minItems": 1, "items": _RING}}}}]},
            "properties": {
                "type": "object", "required": ["objectType", "classification"],
                "properties": {
                    "objectType": {"enum": ["detection", "annotation", "cell", "tile"]},
                    "name": {"type": "string"},
                    "isLocked": {"type": "boolean"},
                    "classification": {"type": "object", "required": ["name"], "properties": {
                        "name": {"type": "string"},
                        "color": {"type": "array", "minItems": 3, "maxItems": 3,
                                  "items": {"type": "integer", "minimum": 0, "maximum": 255}}}},
                    "measurements": {"type": "object", "additionalProperties": {"type": "number"}}}}}}}}}


def _mask_of_polygon(xy, shape):
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    mask = np.zeros(shape, bool)
    # Pixel (r, c) covers [c, c + 1] x [r, r + 1]: its centre (c + 0.5, r + 0.5) decides.
    rr, cc = polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape)
    mask[rr, cc] = True
    return mask


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools on numpy 2
def test_instance_writer_tables_rois_geojson_and_coco(tmp_path):
    dapi, labels = nuclei_image(radius=8)
    gfp = (labels * 10 + 5).astype(np.uint16)
    folder = tmp_path / "images"
    folder.mkdir()
    write_ome(folder / "field.ome.tif", [dapi, gfp], ["DAPI", "GFP"])
    [item] = collect_inputs(folder)[0].planes()
    out = tmp_path / "out"
    out.mkdir()
    types = np.array([0, 1, 1, 0, 1, 0])
    writer = InstanceWriter(out, type_names=["jurkat", "k562"], table_suffix="_cells.csv")
    row = writer.write(item, dapi.astype(np.float32), labels, types=types, scores=np.linspace(0.5, 1, 6))
    writer.gather(row)
    writer.finish()
    assert row["objects"] == 6
    assert sorted(p.name for p in out.iterdir()) == sorted([*writer.outputs("field.ome"), "coco_dataset.json"])

    # The pixel size is in the label TIFF, as Fiji writes it.
    assert open_image(out / "field.ome_labels.tif").pixel_size == pytest.approx((PIXEL, PIXEL))
    with tifffile.TiffFile(out / "field.ome_labels.tif") as tif:
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "um"

    # The cell table: regionprops' values, in pixels and micrometres, every channel by name.
    with open(out / "field.ome_cells.csv") as handle:
        rows = list(csv.DictReader(handle))
    expected = regionprops_table(labels, np.dstack([dapi, gfp]).astype(np.float64), properties=(
        "label", "area", "perimeter", "solidity", "eccentricity", "axis_major_length", "intensity_mean"))
    assert [r["type"] for r in rows] == ["jurkat", "k562", "k562", "jurkat", "k562", "jurkat"]
    for i, r in enumerate(rows):
        assert int(r["label"]) == expected["label"][i] and int(r["area"]) == expected["area"][i]
        assert float(r["area_um2"]) == pytest.approx(expected["area"][i] * PIXEL**2)
        assert float(r["perimeter"]) == pytest.approx(expected["perimeter"][i], rel=1e-5)
        assert float(r["perimeter_um"]) == pytest.approx(expected["perimeter"][i] * PIXEL, rel=1e-5)
        assert float(r["solidity"]) == pytest.approx(expected["solidity"][i], rel=1e-5)
        assert float(r["major_axis_length_um"]) == pytest.approx(expected["axis_major_length"][i] * PIXEL, rel=1e-5)
        assert float(r["mean_DAPI"]) == pytest.approx(expected["intensity_mean-0"][i], rel=1e-5)
        assert float(r["mean_GFP"]) == pytest.approx(10 * (i + 1) + 5) and float(r["std_GFP"]) == 0

    # Fiji's ROI Manager: one named polygon per cell, type in the name and the group, outline on the cell.
    assert zipfile.is_zipfile(out / "field.ome_rois.zip")
    rois = roifile.roiread(out / "field.ome_rois.zip")
    assert [r.name for r in rois] == [f"{t}-{k:04d}" for k, t in enumerate(
        ["jurkat", "k562", "k562", "jurkat", "k562", "jurkat"], start=1)]
    assert [r.group for r in rois] == [1, 2, 2, 1, 2, 1]
    for k, roi in enumerate(rois, start=1):
        assert _iou(_mask_of_polygon(roi.coordinates(), labels.shape), labels == k) > 0.85

    # QuPath: the structure of its objects, classification with colours, measurements as numbers.
    collection = json.loads((out / "field.ome.geojson").read_text())
    jsonschema.validate(collection, QUPATH_SCHEMA)
    features = collection["features"]
    assert len({f["id"] for f in features}) == 6
    assert {f["properties"]["classification"]["name"] for f in features} == {"jurkat", "k562"}
    assert features[0]["properties"]["measurements"]["area_um2"] == pytest.approx(expected["area"][0] * PIXEL**2)
    for k, feature in enumerate(features, start=1):
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1]
        assert _iou(_mask_of_polygon(ring, labels.shape), labels == k) > 0.85

    # A complete COCO dataset: pycocotools reads it, the polygons cover the cells, images by relative path.
    coco = COCO(str(out / "coco_dataset.json"))
    assert [im["file_name"] for im in coco.dataset["images"]] == ["field.ome.tif"]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["jurkat", "k562"]
    anns = coco.loadAnns(coco.getAnnIds())
    assert [a["category_id"] for a in anns] == [1, 2, 2, 1, 2, 1]
    for k, ann in enumerate(anns, start=1):
        assert _iou(coco.annToMask(ann).astype(bool), labels == k) > 0.85
        assert ann["area"] == int((labels == k).sum()) and ann["iscrowd"] == 0


def test_an_image_without_cells_gives_empty_but_valid_files(tmp_path):
    writer = InstanceWriter(tmp_path)
    writer.gather(writer.write("blank", np.zeros((20, 20), np.float32), np.zeros((20, 20), np.int32)))
    writer.finish()
    assert roifile.roiread(tmp_path / "blank_rois.zip") == [] or zipfile.ZipFile(tmp_path / "blank_rois.zip").namelist() == []
    jsonschema.validate(json.loads((tmp_path / "blank.geojson").read_text()), QUPATH_SCHEMA)
    assert COCO(str(tmp_path / "coco_dataset.json")).dataset["annotations"] == []


# --- safe discovery of inputs -----------------------------------------------------------------------------


def _image(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, nuclei_image(seed=seed)[0])


def test_outputs_and_ground_truth_are_never_inputs(tmp_path):
    for name in ["a.tif", "a_labels.tif", "a_t003_z002_labels.tif", "a_types.tif", "a_probabilities.tif", "a_qc.png",
                 "a_masks.tif", "a_cp_masks.png", "feature_0.png", "man_seg000.tif", "b.ome.tif"]:
        _image(tmp_path / name)
    assert [p.name for p in list_images(tmp_path)] == ["a.tif", "b.ome.tif"]
    assert skipped_reason("x_overlay.png") == "output" and skipped_reason("feature_12.png") == "ground truth"


def test_output_inside_the_input_folder_is_not_read_back(tmp_path, capsys):
    data = tmp_path / "plates"
    for cls in ("jurkat", "k562"):
        for i in range(2):
            _image(data / cls / f"well{i}.tif", seed=i)
    for _ in range(2):  # today the second run makes 'qc' a third cell type
        code, _, err = run_cli(["pseudolabel", str(data), "-o", str(data / "qc"), "-q", "--overwrite"], capsys)
        assert code == 0, err
    assert json.loads((data / "qc" / "pseudolabels.json").read_text())["classes"] == ["jurkat", "k562"]
    # A later command that is not told about that folder refuses it as a class, naming it.
    with pytest.raises(CellmixerError, match=r"qc: class folder holds no images, only outputs or ground truth"):
        discover_dataset(data)
    # Images inside the output folder of the run are not inputs, run after run.
    images = tmp_path / "imgs"
    _image(images / "a.tif")
    for _ in range(2):
        rows = label_nuclei(images, images / "out", progress=False, overwrite=True)
        assert [r["file"] for r in rows] == ["a.tif"]
    assert [i.key for i in collect_inputs(images, exclude=[images / "out"])] == ["a.tif"]


def test_points_are_keyed_by_path_relative_to_the_input_folder(tmp_path):
    """Three fields all named phase.png keep their own points (the data-loss bug of points.csv)."""
    data = tmp_path / "fields"
    counts = {}
    for i, n in enumerate((2, 4, 6)):
        field = data / f"field{i}"
        field.mkdir(parents=True)
        phase, _ = nuclei_image(seed=i)
        Image.fromarray((phase // 64).astype(np.uint8)).save(field / "phase.png")
        nuclear, _ = nuclei_image(seed=i, n=n)
        Image.fromarray((nuclear // 64).astype(np.uint8)).save(field / "nuclear.png")
        counts[f"field{i}/phase.png"] = n
    out = tmp_path / "points"
    label_centroids(data, out, nuclear=("phase", "nuclear"), pattern="phase*", diameter_range=(8, 30), overlays=False,
                    progress=False)
    with open(out / "points.csv") as handle:
        rows = list(csv.DictReader(handle))
    found = {key: sum(r["image"] == key for r in rows) for key in counts}
    assert found == counts
    inputs = collect_inputs(data, pattern="phase*")
    items = weak_labels(inputs, points=out / "points.csv", progress=False)
    assert [len(it.points) for it in items] == [2, 4, 6]
    # A file keyed by file name alone cannot say whose points they are: refused, naming the way out.
    old = tmp_path / "old.csv"
    old.write_text("image,x,y\nphase.png,10,10\n")
    with pytest.raises(CellmixerError, match="several inputs of that name"):
        weak_labels(inputs, points=old, progress=False)


def test_binary_mask_among_inputs_is_reported(tmp_path, capsys):
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:30] = 255
    Image.fromarray(mask).save(tmp_path / "looks_like_a_mask.png")
    label_nuclei(tmp_path / "looks_like_a_mask.png", tmp_path / "out", progress=False)
    assert capsys.readouterr().err == ""  # labelling a mask is allowed; training on one is what is warned
    nucleus_targets([tmp_path / "looks_like_a_mask.png"], progress=False)
    err = capsys.readouterr().err
    assert "looks_like_a_mask.png" in err and "looks like a mask" in err


# --- command line: names of channels, bad input on one line -----------------------------------------------


def test_channel_by_name_on_the_command_line(tmp_path, capsys):
    dapi, _ = nuclei_image()
    write_ome(tmp_path / "two.ome.tif", [np.zeros_like(dapi) + 3, dapi], ["GFP", "DAPI"])
    out = tmp_path / "out"
    code, _, err = run_cli(["nuclei", "label", str(tmp_path / "two.ome.tif"), "--channel", "DAPI", "-o", str(out),
                            "-q"], capsys)
    assert code == 0, err
    assert tifffile.imread(out / "two.ome_labels.tif").max() == 6
    with open(out / "two.ome_objects.csv") as handle:
        header = next(csv.reader(handle))
    assert {"mean_GFP", "mean_DAPI", "area_um2"} <= set(header)
    code, _, err = run_cli(["nuclei", "label", str(tmp_path / "two.ome.tif"), "--channel", "CY5", "-o",
                            str(tmp_path / "out2"), "-q"], capsys)
    assert code == 2 and "--channel CY5" in err and "two.ome.tif" in err and len(err.strip().splitlines()) == 1
