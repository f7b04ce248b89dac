"""The nuclei labelling command (cellmixer.pseudolabels.label_nuclei) on small generated images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from cellmixer._errors import CellmixerError
from cellmixer.methods.nuclei import label_nuclei
from cellmixer.ops import CLASSICAL_METHODS

from .test_classical import nuclei as classical_test_image

DISCS = [(20, 20, 8), (20, 60, 7), (55, 25, 9), (55, 41, 9), (60, 75, 8)]   # one touching pair


def nuclei(shape=(80, 100), discs=DISCS, **kwargs) -> np.ndarray:
    return classical_test_image(shape, discs, **kwargs)


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def check_outputs(out: Path, stem: str, *, overlay=True) -> np.ndarray:
    """Per-image outputs exist and agree with each other; returns the label image."""
    labels = tifffile.imread(out / f"{stem}_labels.tif")
    assert labels.dtype == np.uint16
    fields, rows = read_csv(out / f"{stem}_objects.csv")
    assert fields[:3] == ["label", "area", "centroid_y"] and "mean_intensity" in fields
    ids = sorted(set(np.unique(labels)) - {0})
    assert [int(r["label"]) for r in rows] == ids == list(range(1, len(ids) + 1))
    assert [int(r["area"]) for r in rows] == [int((labels == k).sum()) for k in ids]
    if overlay:
        rgb = np.asarray(Image.open(out / f"{stem}_overlay.png"))
        assert rgb.shape == labels.shape + (3,) and rgb.dtype == np.uint8
    else:
        assert not (out / f"{stem}_overlay.png").exists()
    return labels


def test_outputs_mirror_input_folders_and_agree(tmp_path):
    data = tmp_path / "data"
    (data / "plate1").mkdir(parents=True)
    tifffile.imwrite(data / "plate1" / "a.tif", nuclei())
    tifffile.imwrite(data / "b.tif", nuclei(seed=1))
    Image.fromarray((nuclei(seed=2) // 256).astype(np.uint8)).save(data / "plate1" / "c.png")   # 8-bit PNG
    out = tmp_path / "out"
    rows = label_nuclei(data, out, progress=False)
    assert [Path(r["file"]).name for r in rows] == ["b.tif", "a.tif", "c.png"]
    for row, stem in zip(rows, ["b", "plate1/a", "plate1/c"]):
        labels = check_outputs(out, stem)
        assert row["objects"] == labels.max() == 5
        assert row["foreground_fraction"] == pytest.approx((labels > 0).mean(), abs=1e-6)
        assert not (out / f"{stem}_ignore.tif").exists()
    fields, summary = read_csv(out / "labels.csv")
    assert fields == ["file", "objects", "foreground_fraction", "mean_area"] and len(summary) == 3
    settings = json.loads((out / "labels.json").read_text())
    assert settings["method"] == "shape/intensity" and settings["diameter_range"] == [10, 50]
    assert settings["configurations"] == [{"declump": "shape", "dividing_lines": "intensity"}]


def test_list_of_files_other_methods_and_options(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", nuclei())
    for method in CLASSICAL_METHODS[:4]:
        out = tmp_path / method.replace("/", "_")
        rows = label_nuclei([tmp_path / "a.tif"], out, method=method, overlays=False, progress=False,
                            diameter_range=(8, 40), threshold_correction_factor=1.1, discard_border=True)
        assert rows[0]["objects"] >= 4
        check_outputs(out, "a", overlay=False)
        settings = json.loads((out / "labels.json").read_text())
        assert settings["options"] == {"threshold_correction_factor": 1.1, "discard_border": True}


def peanut_and_nucleus(shape=(80, 100), seed=0) -> np.ndarray:
    """A round nucleus and a peanut-shaped clump whose brightness peaks at its waist: the
    configurations disagree about the clump (shape/shape splits it, the others do not)."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    clump = ((yy - 40) ** 2 + (xx - 32) ** 2 <= 100) | ((yy - 40) ** 2 + (xx - 50) ** 2 <= 100)
    glow = np.exp(-((yy - 40) ** 2 + (xx - 41) ** 2) / (2 * 15 ** 2))
    d2 = ((yy - 15) ** 2 + (xx - 80) ** 2) / 64
    img = 1000 + 20000 * np.where(clump, 0.5 + 0.5 * glow, 0) + 20000 * np.where(d2 <= 1, 1 - d2 / 2, 0)
    return (img + np.random.default_rng(seed).normal(0, 100, shape)).astype(np.uint16)


def test_consensus_writes_the_ignore_mask(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", peanut_and_nucleus())
    out = tmp_path / "out"
    rows = label_nuclei(tmp_path / "a.tif", out, method="consensus", progress=False)
    labels = check_outputs(out, "a")
    ignore = tifffile.imread(out / "a_ignore.tif")
    assert ignore.dtype == np.uint8 and ignore.shape == labels.shape and set(np.unique(ignore)) == {0, 1}
    assert ignore[40, 32] == ignore[40, 50] == 1 and ignore[15, 80] == 0     # the clump is ignored ...
    assert rows[0]["objects"] == 1 and labels[15, 80] == 1                    # ... the round nucleus kept
    assert not (labels[ignore == 1]).any()
    assert rows[0]["ignored_fraction"] == pytest.approx(ignore.mean(), abs=1e-6) and ignore.mean() > 0.05
    fields, _ = read_csv(out / "labels.csv")
    assert fields == ["file", "objects", "foreground_fraction", "mean_area", "ignored_fraction"]
    settings = json.loads((out / "labels.json").read_text())
    assert settings["method"] == "consensus" and len(settings["configurations"]) == 3
    # The best single configuration keeps the clump (as one object; shape/shape splits it).
    assert label_nuclei(tmp_path / "a.tif", tmp_path / "single", progress=False)[0]["objects"] == 2


def test_nothing_is_overwritten_without_permission(tmp_path, snapshot):
    tifffile.imwrite(tmp_path / "a.tif", nuclei())
    tifffile.imwrite(tmp_path / "b.tif", nuclei(seed=3))
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_overlay.png").write_bytes(b"keep me")              # one planned output exists already
    before = snapshot(out)
    with pytest.raises(CellmixerError, match="b_overlay.png.*--overwrite"):
        label_nuclei([tmp_path / "a.tif", tmp_path / "b.tif"], out, progress=False)
    assert snapshot(out) == before                               # refused before any work: nothing written
    label_nuclei([tmp_path / "a.tif", tmp_path / "b.tif"], out, progress=False, overwrite=True)
    assert (out / "b_overlay.png").read_bytes() != b"keep me"
    before = snapshot(out)
    with pytest.raises(CellmixerError, match="already exists"):
        label_nuclei(tmp_path / "a.tif", out, method="shape/shape", progress=False)
    assert snapshot(out) == before


def test_results_inside_the_input_folder_are_not_inputs(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", nuclei())
    assert len(label_nuclei(tmp_path, tmp_path / "labels", progress=False)) == 1
    assert len(label_nuclei(tmp_path, tmp_path / "labels", progress=False, overwrite=True)) == 1


def test_16_bit_float_and_multichannel_images(tmp_path):
    image = nuclei()
    tifffile.imwrite(tmp_path / "float.tif", image.astype(np.float32) / 65535)
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([np.zeros_like(image), image]))     # (C, H, W)
    out = tmp_path / "out"
    rows = label_nuclei(tmp_path / "float.tif", out, progress=False)
    assert rows[0]["objects"] == 5
    with pytest.raises(CellmixerError, match="stack.tif: image has 2 channels; choose one with --channel"):
        label_nuclei(tmp_path / "stack.tif", tmp_path / "out2", progress=False)
    rows = label_nuclei(tmp_path / "stack.tif", out, channel=1, progress=False, overwrite=True)
    assert rows[0]["objects"] == 5
    assert json.loads((out / "labels.json").read_text())["channel"] == 1


@pytest.mark.parametrize("kind", ["zeros", "constant", "nothing found"])
def test_images_without_objects_give_empty_outputs(tmp_path, kind):
    if kind == "zeros":
        image = np.zeros((40, 50), np.uint16)
    elif kind == "constant":
        image = np.full((40, 50), 1234, np.uint16)
    else:  # one speck, far below the minimum diameter: discarded
        image = nuclei((40, 50), [(20, 25, 2)])
    tifffile.imwrite(tmp_path / "empty.tif", image)
    out = tmp_path / "out"
    rows = label_nuclei(tmp_path / "empty.tif", out, method="consensus", progress=False)
    assert rows == [{"file": "empty.tif", "objects": 0, "foreground_fraction": 0.0, "mean_area": 0.0,
                     "ignored_fraction": 0.0}]
    labels = check_outputs(out, "empty")
    assert not labels.any()
    fields, object_rows = read_csv(out / "empty_objects.csv")
    assert object_rows == [] and fields[0] == "label"              # header only
    assert not tifffile.imread(out / "empty_ignore.tif").any()


def test_objects_touching_everywhere(tmp_path):
    # A dense hexagonal lattice of touching nuclei that fills the whole image.
    discs = [(y, x + (6 if (y // 12) % 2 else 0), 8) for y in range(0, 96, 12) for x in range(0, 108, 12)]
    tifffile.imwrite(tmp_path / "dense.tif", nuclei((90, 100), discs))
    rows = label_nuclei(tmp_path / "dense.tif", tmp_path / "out", progress=False, discard_size=False)
    labels = check_outputs(tmp_path / "out", "dense")
    assert rows[0]["objects"] > 30 and (labels > 0).mean() > 0.5


def test_bad_method_options_and_inputs_are_clear_errors(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", nuclei())
    out = tmp_path / "out"
    with pytest.raises(CellmixerError, match="--method shape/watershed: unknown; choose one of shape/intensity.*"
                                             "consensus"):
        label_nuclei(tmp_path / "a.tif", out, method="shape/watershed")
    with pytest.raises(CellmixerError, match="'threshold_corection_factor'.*threshold_correction_factor"):
        label_nuclei(tmp_path / "a.tif", out, threshold_corection_factor=1.2)
    with pytest.raises(CellmixerError, match="'declump': set by --method"):
        label_nuclei(tmp_path / "a.tif", out, declump="shape")
    with pytest.raises(CellmixerError, match="threshold_correction_factor='high'"):
        label_nuclei(tmp_path / "a.tif", out, threshold_correction_factor="high")
    with pytest.raises(CellmixerError, match="--diameter 50 10: give the smallest"):
        label_nuclei(tmp_path / "a.tif", out, diameter_range=(50, 10))
    with pytest.raises(CellmixerError, match="missing.tif: no such file"):
        label_nuclei(tmp_path / "missing.tif", out)
    tifffile.imwrite(tmp_path / "a.tiff", nuclei())                  # same stem as a.tif
    with pytest.raises(CellmixerError, match="'a_labels.tif'"):
        label_nuclei(tmp_path, out)
    assert not out.exists() or not any(out.iterdir())               # nothing written by any of these
