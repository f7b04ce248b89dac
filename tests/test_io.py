"""Reading images, finding datasets and writing files safely (cellmixer.io)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from cellmixer._errors import CellmixerError
from cellmixer.io import (
    atomic_path,
    check_not_constant,
    check_overwrite,
    collect_inputs,
    discover_dataset,
    find_mask,
    list_images,
    prepare_output_dir,
    read_image,
    write_csv,
    write_json,
    write_png,
    write_tiff,
)


@pytest.fixture
def ramp16():
    """A uint16 image using most of the 16-bit range, non-square, odd-sized."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 65535, size=(37, 53), dtype=np.uint16)


# ------------------------------------------------------------------------------------------ read_image
@pytest.mark.parametrize("compression", [None, "lzw", "zlib"])
def test_tiff_keeps_values(tmp_path, ramp16, compression):
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, ramp16, compression=compression)
    if compression == "lzw":
        with tifffile.TiffFile(path) as tif:  # really LZW on disk
            assert tif.pages[0].compression == tifffile.COMPRESSION.LZW
    image = read_image(path)
    assert image.dtype == np.float32 and image.shape == ramp16.shape
    np.testing.assert_array_equal(image, ramp16.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.float32,
                                   np.float64, bool])
def test_any_numeric_dtype_becomes_float32_with_original_values(tmp_path, dtype):
    rng = np.random.default_rng(1)
    if dtype is bool:
        data = rng.random((20, 30)) > 0.5
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        data = rng.integers(max(info.min, -30000), min(info.max, 60000), size=(20, 30)).astype(dtype)
    else:
        data = (rng.normal(size=(20, 30)) * 1000 - 250).astype(dtype)
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, data)
    image = read_image(path)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, data.astype(np.float32))
    if np.issubdtype(np.dtype(dtype), np.signedinteger):
        assert image.min() < 0  # negative values survive


def test_png_8_bit(tmp_path):
    data = np.random.default_rng(2).integers(0, 256, size=(31, 45), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(data).save(path)
    np.testing.assert_array_equal(read_image(path), data.astype(np.float32))


def test_png_16_bit(tmp_path, ramp16):
    path = tmp_path / "a.png"
    Image.fromarray(ramp16).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # stored as 16-bit grayscale, not reduced to 8 bit
    image = read_image(path)
    assert image.max() > 255
    np.testing.assert_array_equal(image, ramp16.astype(np.float32))


def test_jpeg_grayscale(tmp_path):
    yy, xx = np.mgrid[:48, :64]
    data = (xx * 3 + yy).astype(np.uint8)  # smooth: JPEG keeps it within a few grey levels
    path = tmp_path / "a.jpg"
    Image.fromarray(data).save(path, quality=95)
    image = read_image(path)
    assert image.dtype == np.float32 and image.shape == data.shape
    assert np.abs(image - data).max() <= 4


def test_uppercase_suffix_and_jpeg_extension(tmp_path):
    data = np.full((16, 16), 100, np.uint8)
    data[4:8] = 10
    for name in ("A.TIF", "b.jpeg", "c.PNG"):
        path = tmp_path / name
        if name.endswith("TIF"):
            tifffile.imwrite(path, data)
        else:
            Image.fromarray(data).save(path, format="JPEG" if "jpeg" in name else "PNG")
        assert read_image(path).shape == (16, 16)


def test_rgb_is_averaged_over_channels(tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(path)
    np.testing.assert_allclose(read_image(path), rgb.astype(np.float32).mean(axis=-1), rtol=1e-6)
    np.testing.assert_array_equal(read_image(path, channel=1), rgb[..., 1].astype(np.float32))
    np.testing.assert_array_equal(read_image(path, channel=-1), rgb[..., 2].astype(np.float32))


def test_rgba_drops_alpha(tmp_path):
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 30, 60, 90, 255
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    np.testing.assert_array_equal(read_image(path), np.full((10, 12), 60, np.float32))


def test_channel_first_stack_with_channel_option(tmp_path):
    rng = np.random.default_rng(4)
    stack = rng.integers(0, 4000, size=(5, 30, 40), dtype=np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    for c in range(5):
        np.testing.assert_array_equal(read_image(path, channel=c), stack[c].astype(np.float32))
    with pytest.raises(CellmixerError, match="channel") as info:
        read_image(path)  # which of 5 channels? the user must say
    assert "stack.tif" in str(info.value)


def test_channel_last_two_channel_tiff(tmp_path):
    data = np.stack([np.full((12, 14), 7, np.uint16), np.full((12, 14), 9, np.uint16)], axis=-1)
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig="contig")
    np.testing.assert_array_equal(read_image(path, channel=1), np.full((12, 14), 9, np.float32))


@pytest.mark.parametrize("channel", [3, -4, 7])
def test_channel_out_of_range_names_file_and_option(tmp_path, channel):
    stack = np.ones((3, 20, 20), np.uint16)
    path = tmp_path / "three.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    with pytest.raises(CellmixerError) as info:
        read_image(path, channel=channel)
    message = str(info.value)
    assert "three.tif" in message and f"--channel {channel}" in message and "out of range" in message
    assert "\n" not in message


def test_channel_on_grayscale_image(tmp_path):
    path = tmp_path / "gray.tif"
    tifffile.imwrite(path, np.arange(20, dtype=np.uint8).reshape(4, 5))
    assert read_image(path, channel=0).shape == (4, 5)
    with pytest.raises(CellmixerError, match=r"gray\.tif.*--channel 2 is out of range"):
        read_image(path, channel=2)


def test_missing_file(tmp_path):
    with pytest.raises(CellmixerError, match="nothere.tif") as info:
        read_image(tmp_path / "nothere.tif")
    assert "no such image file" in str(info.value)


@pytest.mark.parametrize("suffix", [".tif", ".png", ".jpg"])
def test_truncated_file(tmp_path, suffix):
    data = np.random.default_rng(5).integers(0, 255, size=(64, 80), dtype=np.uint8)
    good = tmp_path / f"good{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(good, data, compression="lzw")
    else:
        Image.fromarray(data).save(good)
    bad = tmp_path / f"broken{suffix}"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CellmixerError) as info:
        read_image(bad)
    message = str(info.value)
    assert f"broken{suffix}" in message and "cannot read" in message and "\n" not in message


def test_not_an_image_at_all(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("these are my notes, not a TIFF\n" * 20)
    with pytest.raises(CellmixerError, match="notes.tif"):
        read_image(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_image(tmp_path, bad):
    data = np.ones((10, 10), np.float32)
    data[3, 4] = bad
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, data)
    with pytest.raises(CellmixerError, match=r"nan\.tif.*NaN or infinite"):
        read_image(path)


def test_z_stack_is_refused(tmp_path):
    path = tmp_path / "zstack.tif"
    tifffile.imwrite(path, np.zeros((20, 32, 32), np.uint16))
    with pytest.raises(CellmixerError, match=r"zstack\.tif.*shape \(20, 32, 32\)"):
        read_image(path)


def test_four_dimensional_image_is_refused(tmp_path):
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, np.zeros((3, 4, 16, 16), np.uint16), photometric="minisblack")
    with pytest.raises(CellmixerError, match=r"hyper\.tif"):
        read_image(path)


def test_singleton_axes_are_squeezed(tmp_path):
    path = tmp_path / "one.tif"
    data = np.arange(30, dtype=np.uint16).reshape(1, 5, 6)
    tifffile.imwrite(path, data)
    np.testing.assert_array_equal(read_image(path), data[0].astype(np.float32))


def test_check_not_constant(tmp_path):
    check_not_constant(np.array([[1.0, 2.0]]), "fine.tif")
    with pytest.raises(CellmixerError, match=r"flat\.tif.*constant"):
        check_not_constant(np.full((5, 5), 3.0), "flat.tif")


# ------------------------------------------------------------------------------------------ datasets
def _touch_image(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros((8, 8), np.uint8)
    data[0, 0] = value
    tifffile.imwrite(path, data)


@pytest.fixture
def dataset_root(tmp_path):
    root = tmp_path / "data"
    for name in ["zeta", "alpha", "Mid"]:
        _touch_image(root / name / "b.tif")
        _touch_image(root / name / "sub" / "a.tif")
        _touch_image(root / name / "b_masks.tif")  # a mask: skipped
        _touch_image(root / name / ".hidden.tif")  # hidden file: skipped
        _touch_image(root / name / ".cache" / "c.tif")  # hidden folder: skipped
        (root / name / "notes.txt").write_text("not an image")
    _touch_image(root / "alpha" / "phase_1.tif")
    _touch_image(root / ".git" / "x.tif")  # hidden class folder: not a class
    return root


def test_classes_are_sorted_and_stable(dataset_root):
    dataset = discover_dataset(dataset_root)
    assert dataset.classes == sorted(["zeta", "alpha", "Mid"])
    assert dataset.classes == discover_dataset(dataset_root).classes
    # Labels are 1-based positions in the class list; paths sorted within a class.
    for path, k in zip(dataset.paths, dataset.labels):
        assert path.relative_to(dataset_root).parts[0] == dataset.classes[k - 1]
    names = [p.relative_to(dataset_root).as_posix() for p in dataset.paths]
    assert names == ["Mid/b.tif", "Mid/sub/a.tif", "alpha/b.tif", "alpha/phase_1.tif", "alpha/sub/a.tif",
                     "zeta/b.tif", "zeta/sub/a.tif"]
    assert len(dataset) == 7
    assert dataset.class_name(0) == "Mid"


def test_masks_hidden_files_and_other_files_are_skipped(dataset_root):
    dataset = discover_dataset(dataset_root)
    for path in dataset.paths:
        assert not path.stem.endswith("_masks")
        assert not any(part.startswith(".") for part in path.relative_to(dataset_root).parts)
        assert path.suffix == ".tif"
    assert ".git" not in dataset.classes


def test_classes_option_sets_order_and_subset(dataset_root):
    dataset = discover_dataset(dataset_root, classes=["zeta", "alpha"])
    assert dataset.classes == ["zeta", "alpha"]
    assert set(dataset.labels) == {1, 2}
    assert all(p.relative_to(dataset_root).parts[0] == "zeta" for p, k in zip(dataset.paths, dataset.labels) if k == 1)
    with pytest.raises(CellmixerError, match="nope"):
        discover_dataset(dataset_root, classes=["alpha", "nope"])


def test_pattern_option(dataset_root):
    dataset = discover_dataset(dataset_root, classes=["alpha"], pattern="phase*")
    assert [p.name for p in dataset.paths] == ["phase_1.tif"]
    with pytest.raises(CellmixerError, match=r"[/\\]Mid: .*--pattern phase\*"):
        discover_dataset(dataset_root, pattern="phase*")  # Mid (first class) has no phase images


def test_a_pattern_that_misses_only_by_case_says_so(tmp_path):
    for folder in ("3T3", "MCF10A"):
        _touch_image(tmp_path / "plate" / folder / "img_Phase_000.tif")
        _touch_image(tmp_path / "plate" / folder / "img_DAPI_010.tif")
    with pytest.raises(CellmixerError, match=r"3T3: .*case-sensitive: 1 image matches '\*phase\*' in another case, "
                                             r"such as img_Phase_000.tif"):
        discover_dataset(tmp_path / "plate", pattern="*phase*")
    with pytest.raises(CellmixerError, match=r"plate: no images .*case-sensitive: 2 images match"):
        collect_inputs(tmp_path / "plate", pattern="*phase*")
    with pytest.raises(CellmixerError) as info:  # no hint where case is not the reason
        collect_inputs(tmp_path / "plate", pattern="*brightfield*")
    assert "case" not in str(info.value)
    assert len(collect_inputs(tmp_path / "plate", pattern="*Phase*")) == 2


def test_empty_class_folder(dataset_root):
    (dataset_root / "empty").mkdir()
    with pytest.raises(CellmixerError) as info:
        discover_dataset(dataset_root)
    assert "empty" in str(info.value) and "holds no" in str(info.value)


def test_only_masks_counts_as_empty(tmp_path):
    _touch_image(tmp_path / "a" / "x.tif")
    _touch_image(tmp_path / "b" / "y_masks.tif")
    with pytest.raises(CellmixerError, match=r"[/\\]b: class folder holds no"):
        discover_dataset(tmp_path)


def test_one_class_is_not_enough_for_training(tmp_path):
    _touch_image(tmp_path / "only" / "x.tif")
    assert discover_dataset(tmp_path).classes == ["only"]
    with pytest.raises(CellmixerError, match=r"found 1 class folder.*at least 2"):
        discover_dataset(tmp_path, min_classes=2)


def test_missing_root_and_root_without_folders(tmp_path):
    with pytest.raises(CellmixerError, match="no such data folder"):
        discover_dataset(tmp_path / "absent")
    _touch_image(tmp_path / "loose.tif")
    with pytest.raises(CellmixerError, match="no class sub-folders"):
        discover_dataset(tmp_path)


def test_list_images_and_find_mask(tmp_path):
    _touch_image(tmp_path / "a.tif")
    _touch_image(tmp_path / "a_masks.png")
    _touch_image(tmp_path / "b.png")
    assert [p.name for p in list_images(tmp_path)] == ["a.tif", "b.png"]
    assert find_mask(tmp_path / "a.tif").name == "a_masks.png"
    assert find_mask(tmp_path / "b.png") is None
    masks = tmp_path / "gt"
    _touch_image(masks / "b.tif")
    assert find_mask(tmp_path / "b.png", masks_dir=masks) == masks / "b.tif"


# ------------------------------------------------------------------------------------------ writing
def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".txt" and tmp != target
        tmp.write_text("new")
        assert not target.exists()  # nothing visible under the final name until the end
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target, overwrite=True) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # temporary file removed


def test_atomic_path_refuses_existing_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(CellmixerError, match=r"out\.txt already exists.*--overwrite"):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
    assert target.read_text() == "old"
    with atomic_path(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_writers_round_trip_and_refuse_overwrite(tmp_path):
    data = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_tiff(tmp_path / "a.tif", data)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a.tif"), data)
    write_png(tmp_path / "a.png", data)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), data)
    write_json(tmp_path / "a.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [1, 2]}
    write_csv(tmp_path / "a.csv", [{"k": 1, "v": "x"}])
    assert (tmp_path / "a.csv").read_text().splitlines() == ["k,v", "1,x"]
    for writer, name, arg in [(write_tiff, "a.tif", data), (write_png, "a.png", data),
                              (write_json, "a.json", {}), (write_csv, "a.csv", [])]:
        before = (tmp_path / name).read_bytes()
        with pytest.raises(CellmixerError, match=name):
            writer(tmp_path / name, arg)
        assert (tmp_path / name).read_bytes() == before


def test_check_overwrite(tmp_path):
    (tmp_path / "x").write_text("1")
    (tmp_path / "y").write_text("1")
    check_overwrite([tmp_path / "z"], overwrite=False)
    check_overwrite([tmp_path / "x"], overwrite=True)
    with pytest.raises(CellmixerError, match=r"x \(and 1 more\) already exists"):
        check_overwrite([tmp_path / "x", tmp_path / "y", tmp_path / "z"], overwrite=False)


def test_prepare_output_dir(tmp_path):
    assert prepare_output_dir(tmp_path / "a" / "b").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the write probe leaves nothing behind
    (tmp_path / "file").write_text("x")
    with pytest.raises(CellmixerError, match="not a folder"):
        prepare_output_dir(tmp_path / "file")
    with pytest.raises(CellmixerError, match=r"--model-dir .*file[/\\]sub: cannot write here"):
        prepare_output_dir(tmp_path / "file" / "sub", option="--model-dir")
