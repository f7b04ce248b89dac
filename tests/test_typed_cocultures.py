"""Typed cells from a nuclear stain: mosaics of real cells, nuclei of a stain, cells grown from nuclei, the
route of ``typed predict --nuclear-...`` (counts per image and per folder, --adapt) and its bad inputs."""

from __future__ import annotations

import csv
import json
import zipfile

import numpy as np
import pytest
import tifffile
import torch
import yaml
from scipy import ndimage as ndi

from cellmixer._errors import CellmixerError
from cellmixer.demo import DEMO_FOREGROUND, synthetic_culture, synthetic_nuclear_stain
from cellmixer.engine import SegmentationModel, method_of
from cellmixer.export._bioimageio import exported_network
from cellmixer.methods.cellmixer import (
    CropSampler,
    PseudoLabelledImage,
    artificial_mixtures,
    load_evaluation_images,
    training_loss,
)
from cellmixer.methods.typed import AdaptConfig, cells_of_nuclei, predict_typed, segment_typed, typed_instances
from cellmixer.methods.typed._adapt import AdaptTraining
from cellmixer.methods.typed._write import UNCERTAIN_SCORE
from cellmixer.ops import cells_from_nuclei, normalize_nuclear_stain, nuclei_of_stain, territory_mosaic

# ------------------------------------------------------------------------------------------- mosaics


def test_territory_mosaic_takes_each_pixel_from_the_nearest_selected_seed():
    rng = np.random.default_rng(0)
    shape = (40, 50)
    images = [np.full((2, *shape), k, np.float32) for k in range(3)]  # two channels, constant per image
    seeds = []
    for k in range(3):
        s = np.zeros(shape, int)
        for label in range(1, 6):
            y, x = rng.integers(2, 38), rng.integers(2, 48)
            s[y - 1:y + 2, x - 1:x + 2] = label
        seeds.append(s)
    selected = [rng.random(6) < 0.6 for _ in range(3)]
    mosaic, source, owner = territory_mosaic(images, seeds, selected)
    assert mosaic.shape == (2, *shape)
    np.testing.assert_array_equal(mosaic[0], source)  # image k is filled with k
    np.testing.assert_array_equal(mosaic[1], source)
    # every selected seed pixel that no earlier image's seed covers is its own image's
    for k in range(3):
        for label in np.flatnonzero(selected[k][1:]) + 1:
            own = seeds[k] == label
            earlier = np.zeros(shape, bool)
            for j in range(k):
                earlier |= np.asarray(selected[j], bool)[np.minimum(seeds[j], 5)] & (seeds[j] > 0)
            assert (source[own & ~earlier] == k).all()
    # a pixel's owner is a selected seed at the smallest distance
    ys, xs = np.nonzero(owner >= 0)
    assert (owner >= 0).all() and set(np.unique(owner // 2**20)) <= {0, 1, 2}


def test_mosaic_training_samples_keep_both_types_and_their_labels():
    rng = np.random.default_rng(1)
    items = []
    for k, name in enumerate(("epithelial", "spindle"), start=1):
        image, instances, _ = synthetic_culture(name, shape=(192, 192), rng=rng)
        labels = ((instances > 0) * k).astype(np.uint8)
        seeds = nuclei_of_stain(synthetic_nuclear_stain(instances, rng=rng), diameter_range=(3, 20))
        items.append(PseudoLabelledImage((image - image.mean()) / image.std(), labels, k, None, seeds))
    sampler = CropSampler(items, 3, crop_size=96, mixing="mosaic", augment_params=None)
    both = 0
    for _ in range(20):
        image, labels = sampler.sample(rng)
        assert image.shape == labels.shape == (96, 96)
        assert set(np.unique(labels)) <= {0, 1, 2}
        both += {1, 2} <= set(np.unique(labels).tolist())
    assert both >= 5  # mosaics hold cells of both types
    with pytest.raises(ValueError, match="seeds"):
        CropSampler([PseudoLabelledImage(items[0].image, items[0].labels, 1, None)] * 2, 3, crop_size=64,
                    mixing="mosaic")


def test_a_mosaic_exposes_its_second_culture_apart_then_normalizes_the_whole():
    from cellmixer.ops import AugmentParams, normalize_by_background

    rng = np.random.default_rng(2)
    crops = []
    for k, name in enumerate(("epithelial", "spindle"), start=1):
        image, instances, _ = synthetic_culture(name, shape=(192, 192), rng=rng)
        seeds = nuclei_of_stain(synthetic_nuclear_stain(instances, rng=rng), diameter_range=(3, 20))
        labels = ((instances > 0) * k).astype(np.uint8)
        crops.append((normalize_by_background(image, labels > 0), labels, seeds, None))  # no stain input
    ratio, gain = 20.0, np.float32(0.5)  # the second culture at half the exposure
    split = AugmentParams(exposure_split_probability=1.0, exposure_split=(0.5, 0.5))
    exposed = CropSampler([], 3, crop_size=192, mixing="mosaic", augment_params=split)
    plain = CropSampler([], 3, crop_size=192, mixing="mosaic", augment_params=None)
    darker = (crops[1][0] * gain + (gain - 1) * np.float32(ratio), *crops[1][1:])
    both = 0
    for seed in range(6):
        image, labels, _ = exposed.mosaic(np.random.default_rng(seed), crops[0], crops[1], ratio)
        # the same mosaic made by hand: the second crop's gain in normalized units, then one normalization
        draws = np.random.default_rng(seed)
        draws.random(), draws.uniform()  # the two draws of the exposure: whether and which gain
        by_hand, by_hand_labels, _ = plain.mosaic(draws, crops[0], darker)
        np.testing.assert_array_equal(labels, by_hand_labels)
        np.testing.assert_allclose(image, normalize_by_background(by_hand, by_hand_labels != 0), atol=1e-5)
        assert abs(image[labels == 0].mean()) < 1e-4 and abs(image[labels == 0].std() - 1) < 1e-4
        both += {1, 2} <= set(np.unique(labels).tolist())
    assert both >= 2
    # without a background ratio (a flat-field model) no exposure is simulated and no draw is taken
    unchanged, _, _ = exposed.mosaic(np.random.default_rng(7), crops[0], crops[1], 0.0)
    np.testing.assert_array_equal(unchanged, plain.mosaic(np.random.default_rng(7), crops[0], crops[1])[0])


# ------------------------------------------------------------------------------------------- nuclei and cells


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_nuclei_of_stain_finds_bright_and_dim_nuclei_beside_stained_cytoplasm():
    shape = (120, 160)
    stain = np.full(shape, 150.0)
    stain[:, 80:] += 300 * _disc(shape, 60, 120, 35)[:, 80:]       # a glowing cytoplasm around bright nuclei
    centres = [(30, 30, 2500), (90, 40, 400), (60, 110, 2500), (60, 132, 2500)]  # bright and 6x dimmer nuclei
    for cy, cx, level in centres:
        stain += level * _disc(shape, cy, cx, 7)
    stain += np.random.default_rng(0).normal(0, 5, shape)
    labels = nuclei_of_stain(stain, diameter_range=(8, 30))
    assert labels.max() == 4
    for cy, cx, _ in centres:
        assert labels[cy, cx] > 0


def test_nuclei_of_stain_keeps_dim_nuclei_among_many_bright_ones():
    # Dense bright nuclei (a confluent culture beside a dim type) must not raise the bar for the dim
    # ones: a seventh as bright, they stand 60 noise levels above the background and are kept.
    shape = (200, 200)
    rng = np.random.default_rng(1)
    stain = np.full(shape, 150.0)
    for cy in range(15, 200, 26):
        for cx in range(15, 120, 26):
            stain += 2000 * _disc(shape, cy, cx, 11)
    dim = [(40, 165), (100, 165), (160, 165)]
    for cy, cx in dim:
        stain += 300 * _disc(shape, cy, cx, 9)
    stain = ndi.gaussian_filter(stain, 1) + rng.normal(0, 5, shape)
    labels = nuclei_of_stain(stain, diameter_range=(10, 30))
    for cy, cx in dim:
        assert labels[cy, cx] > 0
    assert not nuclei_of_stain(np.full(shape, 150.0) + rng.normal(0, 5, shape)).any()  # noise alone: none


def test_nuclei_of_stain_keeps_objects_above_the_largest_diameter_and_drops_specks():
    # A bright nucleus or clump larger than the diameter range is still a cell to count; a speck is not.
    shape = (100, 140)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    stain = np.full(shape, 150.0)
    stain += 2000 * _disc(shape, 50, 30, 6)                                     # diameter 12
    stain += 2000 * (((yy - 50) / 22) ** 2 + ((xx - 90) / 8) ** 2 <= 1)        # a clump of two, one too large
    stain += 2000 * _disc(shape, 15, 130, 1)                                    # a speck (< 8)
    stain += np.random.default_rng(2).normal(0, 5, shape)
    labels = nuclei_of_stain(stain, diameter_range=(8, 20))
    assert labels[50, 30] > 0
    assert labels[36, 90] > 0 and labels[64, 90] > 0  # both halves of the clump (one is above 20 across)
    assert labels[15, 130] == 0
    assert np.bincount(labels.ravel())[1:].max() > np.pi * 20 ** 2 / 4


def test_cells_grow_from_their_nuclei_and_keep_their_labels():
    shape = (60, 90)
    nuclei = np.zeros(shape, np.int32)
    nuclei[_disc(shape, 30, 20, 5)] = 3
    nuclei[_disc(shape, 30, 60, 5)] = 7
    foreground = np.zeros(shape, np.float32)
    foreground[10:50, 5:85] = 0.9
    image = np.random.default_rng(0).normal(0, 1, shape)
    for method in ("nuclei", "grow", "graphcut"):
        cells = cells_from_nuclei(nuclei, foreground, method=method, image=image, max_distance=25)
        assert set(np.unique(cells).tolist()) == {0, 3, 7}, method
        assert (cells[nuclei > 0] == nuclei[nuclei > 0]).all(), method      # each cell holds its nucleus
        assert not cells[foreground < 0.5].any() or method == "nuclei", method  # and stays in the foreground
        if method != "nuclei":
            assert (cells == 3).sum() > 3 * (nuclei == 3).sum(), method
    far = cells_from_nuclei(nuclei, foreground, method="grow", max_distance=8)
    distance_ok = far[(far > 0)].size <= (nuclei > 0).sum() + 2 * np.pi * 13 * 8 * 2
    assert distance_ok


def test_cells_of_nuclei_pairs_each_cell_with_its_nucleus():
    p = np.zeros((3, 20, 30), np.float32)
    p[1, :, :15] = 0.9
    p[2, :, 15:] = 0.9
    p[0] = 0.1
    nuclei = np.zeros((20, 30), int)
    nuclei[8:12, 5:9] = 2
    nuclei[8:12, 20:24] = 5
    cells = cells_from_nuclei(nuclei, 1 - p[0], method="grow", max_distance=10)
    typed = cells_of_nuclei(p, nuclei, cells, ["a", "b"])
    assert [typed.type_names[t] for t in typed.types] == ["a", "b"]
    for k in (1, 2):
        assert ((typed.nuclei == k) <= (typed.labels == k)).all()
        assert (typed.nuclei == k).sum() == 16


def test_cells_of_nuclei_weighs_the_pixels_by_the_nucleus_more_than_the_far_reaches_of_the_body():
    # One long cell: type a around its nucleus (columns 0-11), type b over the longer far end (12-39),
    # as when a grown body reaches into a neighbour of another type.
    p = np.zeros((3, 10, 40), np.float32)
    p[0] = 0.1
    p[1, :, :12] = 0.9
    p[2, :, 12:] = 0.9
    nuclei = np.zeros((10, 40), int)
    nuclei[3:7, 2:6] = 1
    cells = np.ones((10, 40), int)
    alike = cells_of_nuclei(p, nuclei, cells, ["a", "b"], falloff=0)
    near = cells_of_nuclei(p, nuclei, cells, ["a", "b"])
    assert alike.type_names[alike.types[0]] == "b" and alike.scores[0] == pytest.approx(0.9 * 28 / 40)
    assert near.type_names[near.types[0]] == "a" and near.scores[0] > 0.8
    assert near.objectness[0] == pytest.approx(0.9)  # the plain mean, not weighted
    assert ((near.nuclei > 0) == (nuclei > 0)).all()
    # a cell without a nucleus, hundreds of nucleus diameters from any: still typed by its own pixels
    wide = np.zeros((3, 4, 900), np.float32)
    wide[0], wide[1, :, :450], wide[2, :, 450:] = 0.1, 0.9, 0.9
    small = np.zeros((4, 900), int)
    small[1:3, 1:3] = 1
    two = np.where(np.arange(900) < 450, 1, 2)[None].repeat(4, axis=0)
    far = cells_of_nuclei(wide, small, two, ["a", "b"])
    assert [far.type_names[t] for t in far.types] == ["a", "b"] and np.isfinite(far.scores).all()
    with pytest.raises(CellmixerError, match="falloff"):
        cells_of_nuclei(p, nuclei, cells, ["a", "b"], falloff=-1)
    with pytest.raises(CellmixerError, match="weights"):
        typed_instances(p, cells, weights=np.zeros((10, 40)))
    with pytest.raises(CellmixerError, match="type-falloff"):
        segment_typed(None, np.zeros((10, 40)), nuclear=np.zeros((10, 40)), type_falloff=-1)


# ------------------------------------------------------------------------------------------- the route


@pytest.fixture(scope="module")
def coculture_files(tmp_path_factory):
    """Two co-culture fields (phase + DAPI files) in two well folders, and one 2-channel TIFF."""
    root = tmp_path_factory.mktemp("coculture")
    rng = np.random.default_rng(3)
    for well in ("A1", "B2"):
        (root / well).mkdir()
        image, instances, _ = synthetic_culture(["epithelial", "roundcell"], shape=(160, 160), rng=rng)
        tifffile.imwrite(root / well / "field_phase.tif", image)
        tifffile.imwrite(root / well / "field_DAPI.tif", synthetic_nuclear_stain(instances, rng=rng))
    image, instances, _ = synthetic_culture(["epithelial", "roundcell"], shape=(160, 160), rng=rng)
    both = np.stack([image, synthetic_nuclear_stain(instances, rng=rng)])
    tifffile.imwrite(root / "two_channels.tif", both, imagej=True, metadata={"axes": "CYX"})
    return root


def test_segment_typed_with_a_stain_types_every_nucleus(trained, coculture_files):
    model, _ = trained
    image = tifffile.imread(coculture_files / "A1" / "field_phase.tif").astype(np.float32)
    stain = tifffile.imread(coculture_files / "A1" / "field_DAPI.tif").astype(np.float32)
    nuclei = nuclei_of_stain(stain, diameter_range=(3, 20))
    cells = segment_typed(model, image, nuclear=stain, diameter_range=(3, 20), cells="grow")
    assert len(cells) == nuclei.max() > 3
    assert cells.nuclei is not None and set(np.unique(cells.nuclei)) == set(range(len(cells) + 1))
    assert ((cells.nuclei > 0) <= (cells.labels > 0)).all()
    given = segment_typed(model, image, nuclear=stain, nuclei=nuclei, cells="nuclei")
    assert len(given) == nuclei.max() and (given.labels > 0).sum() == (nuclei > 0).sum()
    with pytest.raises(Exception, match="shape"):
        segment_typed(model, image, nuclear=stain[:50])
    # the model's probabilities, given, are not computed again and type the same cells
    _, probabilities = model.predict(image, nuclear=stain, probabilities=True)
    reused = segment_typed(model, image, nuclear=stain, diameter_range=(3, 20), cells="grow",
                           probabilities=probabilities)
    assert (reused.labels == cells.labels).all() and (reused.types == cells.types).all()
    swapped = segment_typed(model, image, nuclear=stain, diameter_range=(3, 20), cells="grow",
                            probabilities=probabilities[::-1])
    assert not np.array_equal(swapped.types, cells.types)
    with pytest.raises(CellmixerError, match="probabilities of image: shape"):
        segment_typed(model, image, nuclear=stain, probabilities=probabilities[:, :50])


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_typed_predict_with_paired_files_counts_per_image_and_folder(trained, coculture_files, tmp_path, console):
    _, folder = trained
    out = tmp_path / "typed"
    result = console("typed", "predict", str(folder), str(coculture_files), "--pattern", "*phase*",
                     "--nuclear-replace", "phase", "DAPI", "--diameter", "3", "20", "--output", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    counts = _rows(out / "counts.csv")
    assert len(counts) == 2 and all(int(r["cells"]) > 3 for r in counts)
    assert sorted(r["folder"] for r in _rows(out / "counts_per_folder.csv")) == ["A1", "B2"]
    cells = _rows(out / "A1__field_phase_cells.csv")
    assert {"type", "score", "nucleus_area", "nucleus_mean_intensity", "area"} <= set(cells[0])
    assert all(float(r["area"]) >= float(r["nucleus_area"]) for r in cells)
    assert all((r["uncertain"] == "True") == (float(r["score"]) < UNCERTAIN_SCORE) for r in cells)
    settings = json.loads((out / "typed.json").read_text())
    assert settings["instance_source"] == "nuclei of the nuclear stain" and settings["nuclear"] == ["phase", "DAPI"]


def test_counts_per_folder_sums_the_wells(trained, coculture_files, tmp_path):
    _, folder = trained
    out = tmp_path / "plate"
    predict_typed(folder, coculture_files, out, pattern="*phase*", nuclear=("phase", "DAPI"),
                  diameter_range=(3, 20), progress=False)
    per_image = _rows(out / "counts.csv")
    per_folder = {r["folder"]: r for r in _rows(out / "counts_per_folder.csv")}
    assert set(per_folder) == {"A1", "B2"}
    for row in per_image:
        well = row["image"].split("/")[0]
        assert int(per_folder[well]["cells"]) == int(row["cells"])
        fractions = [float(per_folder[well][k]) for k in per_folder[well] if k.endswith("_fraction")]
        assert abs(sum(fractions) - 1) < 1e-3


def test_nuclear_channel_of_the_same_file(trained, coculture_files, tmp_path):
    _, folder = trained
    rows = predict_typed(folder, coculture_files / "two_channels.tif", tmp_path / "o", channel=0, nuclear_channel=1,
                         diameter_range=(3, 20), progress=False)
    assert rows[0]["cells"] > 3


def test_adapt_fine_tunes_a_copy_and_types_with_it(trained, coculture_files, tmp_path, capsys):
    model, folder = trained
    out = tmp_path / "adapted"
    rows = predict_typed(folder, coculture_files, out, pattern="*phase*",
                         nuclear=("phase", "DAPI"), diameter_range=(3, 20), progress=False,
                         adapt={"iterations": 3, "confidence": 0.51, "crop_size": 32, "batch_size": 2})
    adapted = SegmentationModel.load(out / "adapted_model")
    assert method_of(adapted).name == "cellmixer" and adapted.classes == model.classes
    assert adapted.config["training"]["adapt_images"] == 2
    before = dict(model.network.state_dict())
    after = adapted.network.state_dict()
    assert any(not np.allclose(before[k].numpy(), after[k].numpy()) for k in after)
    assert len(rows) == 2 and json.loads((out / "typed.json").read_text())["adapt"]["iterations"] == 3
    assert "--adapt: only 2 images to adapt on" in capsys.readouterr().err  # too few fields: said


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("case", ["other shape", "missing file", "not in name", "both sources"])
def test_bad_nuclear_stain_is_one_line(trained, coculture_files, tmp_path, console, case):
    _, folder = trained
    data = tmp_path / "data"
    data.mkdir()
    phase = tifffile.imread(coculture_files / "A1" / "field_phase.tif")
    tifffile.imwrite(data / "x_phase.tif", phase)
    options = ["--nuclear-replace", "phase", "DAPI"]
    if case == "other shape":
        tifffile.imwrite(data / "x_DAPI.tif", np.zeros((40, 40), np.uint16))
        needle = "x_DAPI.tif"
    elif case == "missing file":
        needle = "x_DAPI.tif"
    elif case == "not in name":
        tifffile.imwrite(data / "x_DAPI.tif", phase)
        options = ["--nuclear-replace", "brightfield", "DAPI"]
        needle = "--nuclear-replace"
    else:
        options += ["--nuclear-channel", "1"]
        needle = "--nuclear-channel"
    result = console("typed", "predict", str(folder), str(data / "x_phase.tif"), *options, "--output",
                     str(tmp_path / "out"), "--quiet")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert needle in result.stderr


def test_a_field_without_nuclei_and_a_type_absent_give_empty_rows(trained, tmp_path):
    model, folder = trained
    data = tmp_path / "data"
    data.mkdir()
    image, _, _ = synthetic_culture("epithelial", shape=(64, 64), seed=5)
    tifffile.imwrite(data / "f_phase.tif", image)
    tifffile.imwrite(data / "f_DAPI.tif", np.full((64, 64), 150, np.uint16))  # no nucleus at all
    rows = predict_typed(folder, data, tmp_path / "out", pattern="*phase*", nuclear=("phase", "DAPI"), progress=False)
    assert rows[0]["cells"] == 0 and all(rows[0][name] == 0 for name in model.classes)
    assert _rows(tmp_path / "out" / "f_phase_cells.csv") == []


def test_images_of_another_pixel_size_than_the_training_images_are_refused(trained, tmp_path, console):
    _, folder = trained
    model_folder = tmp_path / "model"
    model_folder.mkdir()
    config = json.loads((folder / "config.json").read_text())
    config["pixel_size"] = 0.65
    (model_folder / "config.json").write_text(json.dumps(config))
    (model_folder / "weights.safetensors").write_bytes((folder / "weights.safetensors").read_bytes())
    image, _, _ = synthetic_culture("epithelial", shape=(64, 64), seed=6)
    tifffile.imwrite(tmp_path / "half.tif", image, resolution=(1 / 0.325, 1 / 0.325), resolutionunit="CENTIMETER",
                     imagej=True, metadata={"unit": "um"})
    result = console("typed", "predict", str(model_folder), str(tmp_path / "half.tif"), "--output", str(tmp_path / "o"),
                     "--quiet")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "0.325 um per pixel" in result.stderr and "0.65" in result.stderr
    ok = console("typed", "predict", str(model_folder), str(tmp_path / "half.tif"), "--pixel-size", "0.65",
                 "--output", str(tmp_path / "o2"), "--quiet")
    assert ok.returncode == 0, ok.stderr


def test_nuclei_from_a_nucleus_model_and_cells_from_a_detector(trained, model_kinds, coculture_files):
    model, _ = trained
    image = tifffile.imread(coculture_files / "A1" / "field_phase.tif").astype(np.float32)
    stain = tifffile.imread(coculture_files / "A1" / "field_DAPI.tif").astype(np.float32)
    by_model = segment_typed(model, image, nuclear=stain, nuclei=str(model_kinds["nuclei"]), cells="nuclei")
    assert by_model.labels.shape == image.shape and by_model.nuclei is not None
    seeded = segment_typed(model, image, nuclear=stain, diameter_range=(3, 20), cells=str(model_kinds["centroids"]))
    nuclei = nuclei_of_stain(stain, diameter_range=(3, 20))
    assert 0 < len(seeded) <= nuclei.max()
    assert ((seeded.nuclei > 0) <= (seeded.labels > 0)).all()
    with pytest.raises(Exception, match="not a cell-centre detector"):
        segment_typed(model, image, nuclear=stain, cells=str(model_kinds["nuclei"]))
    with pytest.raises(Exception, match="--nuclei"):
        segment_typed(model, image, nuclear=stain, nuclei="otsu")


# ------------------------------------------------------------------------------ flat-field normalization


def test_flat_field_cancels_uneven_light_and_exposure():
    from cellmixer.ops import extract_foreground, normalize_by_background, normalize_by_flat_field

    image, instances, _ = synthetic_culture("spindle", shape=(192, 192), seed=3)
    image = image.astype(np.float32) + 200
    light = np.linspace(0.5, 1.5, image.shape[1], dtype=np.float32)[None, :]  # light falls off to the left
    cells = extract_foreground(image, **DEMO_FOREGROUND.to_dict())
    lit = image * light
    left, right = np.s_[:, :48], np.s_[:, -48:]
    background = ~cells

    def sides(normalized):
        return float(normalized[left][background[left]].mean()), float(normalized[right][background[right]].mean())

    flat = normalize_by_flat_field(lit, cells, sigma=16)
    plain = normalize_by_background(lit, cells)
    assert abs(np.subtract(*sides(flat))) < 0.5 < abs(np.subtract(*sides(plain)))
    np.testing.assert_allclose(normalize_by_flat_field(0.25 * lit, cells, sigma=16), flat, atol=1e-3)


def test_a_flat_field_model_predicts_alike_at_any_exposure_and_is_not_exported(culture_dir, tiny, tmp_path, console):
    from cellmixer.methods.cellmixer import train

    model = train(culture_dir, tmp_path / "flat", seed=0, normalization="flatfield", **tiny)
    config = json.loads((tmp_path / "flat" / "config.json").read_text())
    assert config["normalization"]["method"] == "flatfield" and config["normalization"]["sigma"] > 0
    model = SegmentationModel.load(tmp_path / "flat")
    image, _, _ = synthetic_culture("spindle", shape=(96, 96), seed=4)
    image = image.astype(np.float32) + 100
    darker, bright = model.predict(0.3 * image), model.predict(image)
    # alike but for the odd pixel where the unsupervised foreground's threshold falls otherwise
    assert np.mean(np.abs(darker - bright) > 1e-3) < 0.005
    assert np.mean(np.abs(model.predict(image * np.linspace(0.5, 1.5, 96)[None, :]) - bright) > 0.1) < 0.05
    result = console("export", str(tmp_path / "flat"), "--bioimageio", str(tmp_path / "flat.zip"))
    assert result.returncode == 2 and "flat field" in result.stderr and "--normalization background" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "flat.zip").exists()


# ------------------------------------------------------------------------------------------- the stain as an input


@pytest.fixture(scope="module")
def stained_model(tmp_path_factory):
    """A tiny model trained on cultures with their nuclear stain (phase + DAPI files): it reads the stain."""
    from cellmixer.methods.cellmixer import train

    root = tmp_path_factory.mktemp("stained")
    rng = np.random.default_rng(4)
    for cell_type in ("epithelial", "roundcell"):
        (root / "data" / cell_type).mkdir(parents=True)
        for k in range(2):
            image, instances, _ = synthetic_culture(cell_type, shape=(96, 96), rng=rng)
            tifffile.imwrite(root / "data" / cell_type / f"f{k}_phase.tif", image)
            tifffile.imwrite(root / "data" / cell_type / f"f{k}_DAPI.tif", synthetic_nuclear_stain(instances, rng=rng))
    model = train(root / "data", root / "model", pattern="*phase*", nuclear=("phase", "DAPI"), scale=1.0,
                  model_options={"width": 4, "depth": 2}, crop_size=32, batch_size=4, iterations=40, optimizer="adam",
                  learning_rate=5e-3, foreground=DEMO_FOREGROUND, threads=1, progress=False)
    return model, root / "model"


def test_a_model_trained_with_a_stain_reads_it_at_any_exposure(stained_model, coculture_files):
    model, folder = stained_model
    config = json.loads((folder / "config.json").read_text())
    assert config["nuclear_input"] is True and config["architecture"]["in_channels"] == 2
    assert config["training"]["nuclear_input"] is True
    image = tifffile.imread(coculture_files / "A1" / "field_phase.tif").astype(np.float32)
    stain = tifffile.imread(coculture_files / "A1" / "field_DAPI.tif").astype(np.float32)
    loaded = SegmentationModel.load(folder)
    _, probs = loaded.predict(image, nuclear=stain, probabilities=True)
    _, brighter = loaded.predict(image, nuclear=stain * 3 + 50, probabilities=True)  # another exposure and offset
    np.testing.assert_allclose(probs, brighter, atol=1e-4)
    _, tiled = loaded.predict(image, nuclear=stain, probabilities=True, tile_size=64, overlap=0.25)
    assert np.abs(tiled - probs).mean() < 0.05
    assert len(segment_typed(loaded, image, nuclear=stain, diameter_range=(3, 20))) > 3
    with pytest.raises(Exception, match="reads the nuclear stain"):
        loaded.predict(image)
    with pytest.raises(Exception, match="shape"):
        loaded.predict(image, nuclear=stain[:50])


def test_stain_crops_come_at_their_own_gain_and_turn_with_the_image():
    image = np.zeros((64, 64), np.float32)
    image[10:20, 30:40] = 5  # an asymmetric mark: the stain must turn and flip with it
    labels = (image > 0).astype(np.uint8)
    item = PseudoLabelledImage(image, labels, 1, None, stain=np.where(image > 0, 1.0, 0.0).astype(np.float32))
    sampler = CropSampler([item], 2, crop_size=64, mode="baseline")
    rng = np.random.default_rng(0)
    gains = []
    for _ in range(20):
        x, y = sampler.sample(rng)
        assert x.shape == (2, 64, 64)
        mark = x[1] > 0
        np.testing.assert_array_equal(mark, y == 1)
        gains.append(float(x[1][mark].mean()))
        np.testing.assert_allclose(x[1][mark], gains[-1], rtol=1e-6)  # one gain over the whole crop
    assert 0.5 <= min(gains) and max(gains) <= 2.0 and max(gains) / min(gains) > 1.5
    images, _ = sampler.batch(rng, 3)
    assert images.shape == (3, 2, 64, 64) and images.dtype == np.float32


def test_a_stained_model_without_its_stain_is_one_line(stained_model, coculture_files, tmp_path, console):
    _, folder = stained_model
    data = coculture_files / "A1"
    result = console("predict", str(folder), str(data / "field_phase.tif"), "--output", str(tmp_path / "no"), "--quiet")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--nuclear-replace" in result.stderr and "Traceback" not in result.stderr
    result = console("predict", str(folder), str(data / "field_phase.tif"), "--nuclear-replace", "phase", "DAPI",
                     "--output", str(tmp_path / "yes"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert tifffile.imread(tmp_path / "yes" / "field_phase_labels.tif").shape == (160, 160)


def test_a_stained_model_exports_to_bioimageio_with_the_stain_as_second_channel(stained_model, coculture_files,
                                                                               tmp_path, console):
    """The package takes image and stain as two channels, normalizes the stain inside, and predicts as cellmixer."""
    bioimageio_core = pytest.importorskip("bioimageio.core")
    _, folder = stained_model
    sample = coculture_files / "A1" / "field_phase.tif"
    command = ("export", str(folder), "--sample", str(sample), "--quiet", "--bioimageio")
    result = console(*command, str(tmp_path / "without.zip"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--nuclear-replace" in result.stderr and not (tmp_path / "without.zip").exists()
    package = tmp_path / "stained.zip"
    result = console(*command, str(package), "--nuclear-replace", "phase", "DAPI")
    assert result.returncode == 0, result.stderr
    for weights in ("pytorch_state_dict", "torchscript"):  # the architecture file takes the stain input too
        summary = bioimageio_core.test_model(package, weight_format=weights)
        assert summary.status == "passed", summary.format()
    with zipfile.ZipFile(package) as archive:
        test_input = np.load(archive.open("test_input.npy"))
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
    assert rdf["inputs"][0]["axes"][1]["channel_names"] == ["image", "nuclear_stain"]
    stain = tifffile.imread(coculture_files / "A1" / "field_DAPI.tif")
    np.testing.assert_array_equal(test_input[0, 1], stain[:test_input.shape[2], :test_input.shape[3]])
    result = bioimageio_core.predict(model=package, inputs=test_input)
    got = next(iter(result.members.values())).data.values[0]
    model = SegmentationModel.load(folder)
    _, expected = model.predict(test_input[0, 0], nuclear=test_input[0, 1], probabilities=True)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    model.config["input_scale"] = 0.5  # resized inside the network, both channels
    _, expected = model.predict(test_input[0, 0], nuclear=test_input[0, 1] * 3 + 20, probabilities=True)
    with torch.inference_mode():
        got = torch.jit.script(exported_network(model))(torch.from_numpy(test_input))[0].numpy()
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_evaluate_reads_each_image_stain(stained_model, tmp_path, console):
    _, folder = stained_model
    rng = np.random.default_rng(7)
    for cell_type in ("epithelial", "roundcell"):
        annotated = tmp_path / "annotated" / cell_type
        annotated.mkdir(parents=True)
        image, instances, _ = synthetic_culture(cell_type, shape=(96, 96), rng=rng)
        tifffile.imwrite(annotated / "f_phase.tif", image)
        tifffile.imwrite(annotated / "f_DAPI.tif", synthetic_nuclear_stain(instances, rng=rng))
        tifffile.imwrite(annotated / "f_phase_masks.tif", instances.astype(np.uint16))
    items = load_evaluation_images(tmp_path / "annotated", ["epithelial", "roundcell"], pattern="*phase*",
                                   nuclear=("phase", "DAPI"))
    np.testing.assert_array_equal(items[0].stain, tifffile.imread(tmp_path / "annotated/epithelial/f_DAPI.tif"))
    mixture, = artificial_mixtures(items, limit=1)
    np.testing.assert_allclose(mixture.stain, 0.5 * normalize_nuclear_stain(items[0].stain)
                               + 0.5 * normalize_nuclear_stain(items[1].stain), rtol=1e-6)
    command = ("evaluate", str(folder), "--data", str(tmp_path / "annotated"), "--pattern", "*phase*", "--quiet")
    result = console(*command, "--output", str(tmp_path / "without"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "reads the nuclear stain" in result.stderr and "--nuclear-replace" in result.stderr
    result = console(*command, "--nuclear-replace", "phase", "DAPI", "--output", str(tmp_path / "with"))
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "with" / "evaluation.json").read_text())["results"]["model"]
    assert results["Unmixed"]["images"] == 2 and results["Artificial Mix"]["images"] == 2


def test_a_config_whose_input_channels_disagree_with_its_stain_input_is_refused(stained_model, tmp_path):
    _, folder = stained_model
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "weights.safetensors").write_bytes((folder / "weights.safetensors").read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["nuclear_input"] = False
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(Exception, match="in_channels.*nuclear_input"):
        SegmentationModel.load(broken)


def test_adapting_a_stained_model_trains_on_both_channels(stained_model, coculture_files, tmp_path):
    _, folder = stained_model
    out = tmp_path / "adapted"
    predict_typed(folder, coculture_files, out, pattern="*phase*", nuclear=("phase", "DAPI"), diameter_range=(3, 20),
                  progress=False, adapt={"iterations": 2, "confidence": 0.51, "crop_size": 32, "batch_size": 2})
    adapted = SegmentationModel.load(out / "adapted_model")
    assert adapted.nuclear_input and adapted.config["architecture"]["in_channels"] == 2


def test_adapting_fine_tunes_with_the_loss_the_model_was_trained_with(stained_model, coculture_files, tmp_path):
    model, _ = stained_model
    assert model.config["training"]["context_weight"] > 0  # the default
    image = tifffile.imread(coculture_files / "A1" / "field_phase.tif").astype(np.float32)
    stain = tifffile.imread(coculture_files / "A1" / "field_DAPI.tif").astype(np.float32)
    target = np.zeros(image.shape, np.uint8)
    target[10:40, 10:40], target[20:30, 20:30] = 1, 2
    training = AdaptTraining(model, [(image, stain, target)], tmp_path / "a", AdaptConfig(crop_size=32, batch_size=2),
                             progress=False)
    training.prepare()
    _, loss, _ = training.objective(model)
    logits = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    y = torch.from_numpy(target[:48, :48]).long()[None]
    assert float(loss(logits, y)) == pytest.approx(float(training_loss(model.config["training"])(logits, y)))
    assert float(loss(logits, y)) != pytest.approx(float(training_loss({})(logits, y)))  # the context weight counts
