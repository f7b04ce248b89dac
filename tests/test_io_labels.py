"""Reading instance label images: grey integer labels, colour-coded masks (BBBC039), bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from cellmixer._errors import CellmixerError
from cellmixer.io import read_labels

BBBC039 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bbbc039"


def colour_coded():
    """An RGBA mask coded like BBBC039: channel 0 holds 1..3, reused by objects that do not touch."""
    rgba = np.zeros((12, 16, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[1:5, 1:5, 0] = 1          # object A
    rgba[1:5, 5:9, 0] = 2          # object B touches A: another value
    rgba[1:5, 9:12, 0] = 1         # object C touches B, not A: value 1 again
    rgba[8:11, 2:6, 0] = 1         # object D: value 1, apart from A
    rgba[8:11, 10:14, 0] = 3       # object E
    rgba[6, 7, 0] = 3              # one pixel diagonal to nothing: its own object
    return rgba


def test_rgba_png_gives_connected_components_of_each_value(tmp_path):
    path = tmp_path / "mask.png"
    Image.fromarray(colour_coded()).save(path)
    labels = read_labels(path)
    assert labels.dtype == np.int32 and labels.shape == (12, 16)
    assert labels.max() == 6 and set(np.unique(labels)) == set(range(7))
    # Each object is exactly one of the drawn blocks.
    for block in [(slice(1, 5), slice(1, 5)), (slice(1, 5), slice(5, 9)), (slice(1, 5), slice(9, 12)),
                  (slice(8, 11), slice(2, 6)), (slice(8, 11), slice(10, 14))]:
        values = np.unique(labels[block])
        assert len(values) == 1 and values[0] > 0
        assert (labels == values[0]).sum() == labels[block].size
    # The same file as RGB and as an RGB TIFF reads the same.
    Image.fromarray(colour_coded()[..., :3]).save(tmp_path / "mask_rgb.png")
    tifffile.imwrite(tmp_path / "mask.tif", colour_coded()[..., :3], photometric="rgb")
    np.testing.assert_array_equal(read_labels(tmp_path / "mask_rgb.png"), labels)
    np.testing.assert_array_equal(read_labels(tmp_path / "mask.tif"), labels)


def test_colours_not_just_channel_zero_and_transparent_background(tmp_path):
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[1:5, 1:4] = (200, 10, 10, 255)
    rgba[1:5, 4:7] = (200, 90, 10, 255)      # same red, other colour, touching: another object
    rgba[0, :] = (50, 50, 50, 0)             # transparent: background whatever its colour
    Image.fromarray(rgba).save(tmp_path / "coded.png")
    labels = read_labels(tmp_path / "coded.png")
    assert labels.max() == 2 and not labels[0].any()
    assert len(np.unique(labels[1:5, 1:4])) == 1 and labels[1, 1] != labels[1, 5]


def test_connectivity_of_colour_components(tmp_path):
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[1:3, 1:3, 0] = 1
    rgb[3, 3, 0] = 1                          # touches the block diagonally only
    Image.fromarray(rgb).save(tmp_path / "diag.png")
    assert read_labels(tmp_path / "diag.png").max() == 1
    assert read_labels(tmp_path / "diag.png", connectivity=1).max() == 2
    with pytest.raises(CellmixerError, match="connectivity"):
        read_labels(tmp_path / "diag.png", connectivity=8)


def test_single_channel_integer_images_are_returned_as_stored(tmp_path):
    labels = np.zeros((20, 30), np.uint16)
    labels[2:8, 2:8] = 7
    labels[10:15, 3:9] = 60000
    labels[12:18, 20:28] = 7                  # a label may be used by pieces apart: kept as is
    tifffile.imwrite(tmp_path / "labels.tif", labels, compression="zlib")
    out = read_labels(tmp_path / "labels.tif")
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, labels)
    Image.fromarray(labels).save(tmp_path / "labels16.png")            # 16-bit PNG
    np.testing.assert_array_equal(read_labels(tmp_path / "labels16.png"), labels)
    small = (labels > 0).astype(np.uint8) * 3
    Image.fromarray(small).save(tmp_path / "labels8.png")
    np.testing.assert_array_equal(read_labels(tmp_path / "labels8.png"), small)
    palette = Image.fromarray(small, mode="L").convert("P")
    palette.save(tmp_path / "palette.png")                              # indices, not colours
    assert set(np.unique(read_labels(tmp_path / "palette.png"))) == set(np.unique(np.asarray(palette)))
    big = labels.astype(np.uint64) * 100000                             # beyond int32: renumbered in order
    tifffile.imwrite(tmp_path / "big.tif", big)
    renumbered = read_labels(tmp_path / "big.tif")
    assert renumbered.max() == 2 and (renumbered[labels == 7] == 1).all() and (renumbered[labels == 60000] == 2).all()
    tifffile.imwrite(tmp_path / "integral.tif", labels.astype(np.float32))
    np.testing.assert_array_equal(read_labels(tmp_path / "integral.tif"), labels)


def test_bad_label_images_are_clear_errors(tmp_path):
    negative = np.zeros((5, 5), np.int16)
    negative[1, 1] = -3
    tifffile.imwrite(tmp_path / "negative.tif", negative)
    with pytest.raises(CellmixerError, match="negative.tif.*negative values"):
        read_labels(tmp_path / "negative.tif")
    tifffile.imwrite(tmp_path / "float.tif", np.full((5, 5), 0.5, np.float32))
    with pytest.raises(CellmixerError, match="float.tif.*non-integer"):
        read_labels(tmp_path / "float.tif")
    nan = np.zeros((5, 5), np.float32)
    nan[0, 0] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    with pytest.raises(CellmixerError, match="non-integer"):
        read_labels(tmp_path / "nan.tif")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(CellmixerError, match="broken.png: cannot read"):
        read_labels(tmp_path / "broken.png")
    with pytest.raises(CellmixerError, match="missing.tif: no such"):
        read_labels(tmp_path / "missing.tif")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((6, 5, 5), np.uint8))
    with pytest.raises(CellmixerError, match="stack.tif.*shape"):
        read_labels(tmp_path / "stack.tif")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "labels.jpg")
    with pytest.raises(CellmixerError, match="JPEG"):
        read_labels(tmp_path / "labels.jpg")


@pytest.mark.skipif(not (BBBC039 / "masks").is_dir(), reason="BBBC039 data not present")
def test_real_bbbc039_masks():
    names = sorted((BBBC039 / "masks").glob("*.png"))[:3]
    for path in names:
        labels = read_labels(path)
        assert labels.shape == (520, 696) and labels.dtype == np.int32
        # Channel 0 holds only a few values (a map colouring); the nuclei are far more numerous.
        assert len(np.unique(np.asarray(Image.open(path))[..., 0])) <= 5
        assert 10 < labels.max() < 400
        assert set(np.unique(labels)) == set(range(int(labels.max()) + 1))
        areas = np.bincount(labels.ravel())[1:]
        assert np.median(areas) > 100                                   # nuclei, not fragments
