"""Lazy reading of Zarr, OME-Zarr and TIFF, and the OME-Zarr writer (cellmixer.io._zarr)."""

from __future__ import annotations

import errno
import os
import pickle

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from cellmixer._errors import CellmixerError
from cellmixer.io import is_zarr, open_lazy, read_ome_zarr_labels, write_ome_zarr


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 4000, size=(700, 900)).astype(np.uint16)


@pytest.fixture
def cells(image):
    labels = np.zeros(image.shape, np.int32)
    labels[100:200, 100:250] = 1
    labels[400:650, 500:880] = 2
    return labels


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_round_trip_and_read_by_ome_zarr_py(tmp_path, image, cells, version):
    """What is written is what ome-zarr-py reads back: the image, its pyramid, the labels, the pixel size."""
    reader = pytest.importorskip("ome_zarr.reader")
    from ome_zarr.io import parse_url

    path = write_ome_zarr(tmp_path / "a.ome.zarr", da.from_array(image, chunks=300), labels={"cells": cells},
                          pixel_size=(0.5, 0.25), chunk_size=256, version=version)
    nodes = list(reader.Reader(parse_url(str(path)))())
    pyramid = nodes[0].data
    assert [level.shape for level in pyramid] == [(700, 900), (350, 450), (175, 225)]
    np.testing.assert_array_equal(np.asarray(pyramid[0]), image)
    np.testing.assert_array_equal(np.asarray(pyramid[1]), image.reshape(350, 2, 450, 2).mean(axis=(1, 3)).round())
    scale = nodes[0].metadata["coordinateTransformations"][1][0]["scale"]
    assert scale == [1.0, 0.5]
    label_nodes = [n for n in nodes if "image-label" in n.zarr.root_attrs.get("ome", n.zarr.root_attrs)]
    assert len(label_nodes) == 1
    np.testing.assert_array_equal(np.asarray(label_nodes[0].data[0]), cells)
    np.testing.assert_array_equal(np.asarray(label_nodes[0].data[1]), cells[::2, ::2])
    # and our own lazy reader: the pixel size, the labels
    lazy = open_lazy(path)
    assert lazy.pixel_size == (0.5, 0.25) and lazy.unit == "micrometer"
    np.testing.assert_array_equal(lazy.data.compute(), image)
    np.testing.assert_array_equal(read_ome_zarr_labels(path, "cells", level=2).compute(), cells[::4, ::4])
    with pytest.raises(CellmixerError, match="no label image 'nuclei' \\(it has cells\\)"):
        read_ome_zarr_labels(path, "nuclei")


def test_writer_refuses_to_overwrite_and_replaces_with_overwrite(tmp_path, image):
    path = write_ome_zarr(tmp_path / "a.ome.zarr", image, chunk_size=512)
    with pytest.raises(CellmixerError, match="already exists; pass --overwrite"):
        write_ome_zarr(path, image)
    write_ome_zarr(path, image[:100, :100], overwrite=True)
    assert open_lazy(path).shape == (100, 100)
    assert [p.name for p in tmp_path.iterdir()] == ["a.ome.zarr"]  # no temporary folders left


def test_multichannel_image_and_channel_choice(tmp_path, image):
    stack = np.stack([image, image // 2, image // 3])
    path = write_ome_zarr(tmp_path / "c.ome.zarr", stack, channel_names=["phase", "dapi", "gfp"], chunk_size=256)
    assert zarr.open_group(str(path), mode="r").attrs["omero"]["channels"][1]["label"] == "dapi"
    np.testing.assert_array_equal(open_lazy(path, channel=1).data.compute(), image // 2)
    with pytest.raises(CellmixerError, match="3 channels; choose one with --channel"):
        open_lazy(path)


def test_full_disk_leaves_nothing_and_says_so(tmp_path, image, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(da, "store", full)
    with pytest.raises(CellmixerError, match="a.ome.zarr: cannot write the OME-Zarr \\(the disk is full\\)"):
        write_ome_zarr(tmp_path / "a.ome.zarr", image)
    assert list(tmp_path.iterdir()) == []


def test_tiff_is_read_lazily_tile_by_tile(tmp_path, image):
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, image, tile=(128, 128), compression="zlib")
    lazy = open_lazy(path)
    np.testing.assert_array_equal(lazy.data[300:400, 50:700].compute(), image[300:400, 50:700])
    # dask can send it to worker processes: it carries the path, not an open file
    again = pickle.loads(pickle.dumps(lazy.data))
    np.testing.assert_array_equal(again[650:, 800:].compute(), image[650:, 800:])
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.stack([image] * 3, axis=-1), photometric="rgb")
    np.testing.assert_array_equal(open_lazy(rgb, channel=2).data.compute(), image)


def test_plain_zarr_arrays_and_their_axes(tmp_path, image):
    path = tmp_path / "plain.zarr"
    zarr.create_array(str(path), data=image, chunks=(256, 256))
    assert is_zarr(path)
    np.testing.assert_array_equal(open_lazy(path).data.compute(), image)
    stack = tmp_path / "volume.zarr"
    zarr.create_array(str(stack), data=np.zeros((40, 50, 60), np.uint8))
    with pytest.raises(CellmixerError, match="volume.zarr: a Zarr array of shape \\(40, 50, 60\\) without named axes"):
        open_lazy(stack)
    named = tmp_path / "zyx.zarr"
    array = zarr.create_array(str(named), data=np.zeros((3, 50, 60), np.uint8), zarr_format=2)
    array.attrs["_ARRAY_DIMENSIONS"] = ["z", "y", "x"]
    with pytest.raises(CellmixerError, match="axis Z has 3 planes"):
        open_lazy(named)
    group = tmp_path / "group.zarr"
    zarr.open_group(str(group), mode="w").create_array("raw", data=image)
    with pytest.raises(CellmixerError, match="without OME-Zarr 'multiscales' metadata \\(it holds arrays raw"):
        open_lazy(group)
    with pytest.raises(CellmixerError, match="no such image file or Zarr folder"):
        open_lazy(tmp_path / "missing.zarr")
