"""Large images chunk by chunk (cellmixer.engine.predict_chunked): the InstanSeg-style round trip (chunked
equals whole, object for object; semantic maps to the pixel), resume, and bad input."""

from __future__ import annotations

import functools
import json
import os

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from cellmixer._errors import CellmixerError
from cellmixer.engine import (
    Chunking,
    ChunkTask,
    SegmentationModel,
    Tiling,
    dask_scheduler,
    predict_chunked,
    semantic_task,
)
from cellmixer.io import open_lazy, read_ome_zarr_labels

CHUNK = 128


def blobs(shape, *, seed=0, spacing=23, radius=(4, 11)):
    """Round and elongated objects everywhere, so that some lie on and across every chunk border."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = rng.normal(100, 5, shape)
    for cy in range(5, shape[0], spacing):
        for cx in range(3 + (cy // spacing) % 2 * 9, shape[1], spacing):
            ry, rx = rng.uniform(*radius, size=2)
            y, x = cy + rng.integers(-4, 5), cx + rng.integers(-4, 5)
            image[((yy - y) / ry) ** 2 + ((xx - x) / rx) ** 2 <= 1] += rng.uniform(60, 140)
    return image.astype(np.float32)


def as_raster_order(labels):
    """The same objects, numbered 1..n in raster order of their first pixel (as chunked results are)."""
    ids, first = np.unique(labels.ravel(), return_index=True)
    ids, first = ids[ids > 0], first[ids > 0]
    new = np.zeros(int(labels.max(initial=0)) + 1, np.int64)
    new[ids[np.argsort(first)]] = np.arange(1, len(ids) + 1)
    return new[labels]


def threshold_objects(region, window, statistics, *, level):
    """A method in miniature: objects = 4-connected components above a threshold, measured with a field."""
    labels, count = ndi.label(region[window.local(region.shape)] > level)
    return labels, {"class": [1 + k % 2 for k in range(count)]}


@pytest.fixture(scope="module")
def image():
    return blobs((413, 389))


def test_instances_equal_the_whole_image_object_for_object(image, tmp_path):
    """Components are global: only stitching can make the chunks agree, across every border."""
    task = ChunkTask(functools.partial(threshold_objects, level=150), name="cells", instances=True, tile_context=0,
                     halo=45, class_names=["odd", "even"])
    with dask_scheduler("threads"):
        summary = predict_chunked(image, task, tmp_path / "a.ome.zarr", chunking=Chunking(chunk_size=CHUNK),
                                  progress=False)
    whole, count = ndi.label(image > 150)
    chunked = read_ome_zarr_labels(tmp_path / "a.ome.zarr", "cells").compute()
    assert summary["chunks"] == 9 and summary["objects_cut"] == 0
    # objects lie across every chunk border
    for border in (CHUNK, 2 * CHUNK):
        assert len(np.intersect1d(whole[border - 1], whole[border])) > 3
        assert len(np.intersect1d(whole[:, border - 1], whole[:, border])) > 3
    np.testing.assert_array_equal(chunked, as_raster_order(whole))
    assert summary["objects"] == count == int(chunked.max())
    table = summary["table"]
    assert [row["label"] for row in table] == list(range(1, count + 1))
    areas = np.bincount(chunked.ravel())[1:]
    assert [row["area"] for row in table] == areas.tolist()
    centres = ndi.center_of_mass(np.ones_like(chunked), chunked, np.arange(1, count + 1))
    np.testing.assert_allclose([(row["centroid_y"], row["centroid_x"]) for row in table], centres, atol=1e-6)
    np.testing.assert_allclose([row["mean_intensity"] for row in table],
                               ndi.mean(image, chunked, np.arange(1, count + 1)), rtol=1e-5)
    classes = read_ome_zarr_labels(tmp_path / "a.ome.zarr", "classes").compute()
    assert set(np.unique(classes[chunked > 0])) == {1, 2}
    np.testing.assert_array_equal(open_lazy(tmp_path / "a.ome.zarr").data.compute(), image)


def test_an_object_larger_than_the_halo_is_reported(image, tmp_path, capsys):
    task = ChunkTask(functools.partial(threshold_objects, level=150), name="cells", instances=True, tile_context=0,
                     halo=2)
    with dask_scheduler("synchronous"):
        summary = predict_chunked(image, task, tmp_path / "a.ome.zarr", chunking=Chunking(chunk_size=CHUNK),
                                  progress=False)
    assert summary["objects_cut"] > 0
    assert "objects reached the edge of their chunk's halo" in capsys.readouterr().err


def test_semantic_map_equals_the_whole_image_to_the_pixel(image, tmp_path):
    model = SegmentationModel.new(["a", "b"], width=4, depth=2)
    tiling = Tiling(tile_size=64, overlap=0.25, batch_size=3)
    with dask_scheduler("threads"):
        summary = predict_chunked(image, semantic_task(model, tiling), tmp_path / "s.ome.zarr",
                                  chunking=Chunking(chunk_size=CHUNK), progress=False)
    whole = model.predict(image, tiling=tiling)
    chunked = read_ome_zarr_labels(tmp_path / "s.ome.zarr", "classes").compute()
    np.testing.assert_array_equal(chunked, whole)
    assert summary["pixels"] == np.bincount(whole.ravel(), minlength=3).tolist()


def test_a_stopped_run_resumes_from_its_finished_chunks(image, tmp_path, monkeypatch):
    calls = []

    def counted(region, window, statistics):
        calls.append(window.area)
        if len(calls) == 5:
            raise KeyboardInterrupt  # the run is stopped in its 5th chunk
        return threshold_objects(region, window, statistics, level=150)

    task = ChunkTask(counted, name="cells", instances=True, tile_context=0, halo=45)
    out = tmp_path / "a.ome.zarr"
    with dask_scheduler("synchronous"), pytest.raises(KeyboardInterrupt):
        predict_chunked(image, task, out, chunking=Chunking(chunk_size=CHUNK), progress=False)
    assert not out.exists()
    work = tmp_path / ".a.ome.zarr.chunks"
    assert len(list((work / "done").glob("*.json"))) == 4  # the interrupted chunk is not marked done
    with dask_scheduler("synchronous"):
        summary = predict_chunked(image, task, out, chunking=Chunking(chunk_size=CHUNK), progress=False)
    assert summary["chunks_resumed"] == 4 and len(calls) == 5 + 5
    np.testing.assert_array_equal(read_ome_zarr_labels(out, "cells").compute(), as_raster_order(ndi.label(
        image > 150)[0]))
    assert not work.exists()
    # other settings: the work of the stopped run is not reused
    json.dumps(summary["table"][:1])


def test_the_chunks_in_flight_share_the_torch_threads_and_give_them_back(image, tmp_path):
    import dask
    import torch

    seen = []

    def recorded(region, window, statistics):
        seen.append(torch.get_num_threads())
        return threshold_objects(region, window, statistics, level=150)

    task = ChunkTask(recorded, name="cells", instances=True, tile_context=0, halo=45)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with dask_scheduler("threads"), dask.config.set(num_workers=2):
            predict_chunked(image, task, tmp_path / "many.ome.zarr", chunking=Chunking(chunk_size=CHUNK),
                            progress=False)
            assert set(seen) == {1} and len(seen) > 2  # two chunks at a time, one thread each
            seen.clear()
            predict_chunked(image, task, tmp_path / "one.ome.zarr", chunking=Chunking(chunk_size=512),
                            progress=False)
            assert seen == [2]  # a lone chunk has them all
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_chunk_smaller_than_its_margin_is_refused(image, tmp_path):
    task = ChunkTask(functools.partial(threshold_objects, level=150), name="cells", instances=True,
                     tile_context=96, halo=64)
    with pytest.raises(CellmixerError, match="--chunk-size 128: smaller than the margin each chunk needs \\(the "
                                             "network's tiles 96 \\+ halo 64 = 160 pixels\\); use --chunk-size 160"):
        predict_chunked(image, task, tmp_path / "a.ome.zarr", chunking=Chunking(chunk_size=CHUNK), progress=False)


def test_tiff_input_is_read_lazily(image, tmp_path):
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, image, tile=(64, 64))
    task = ChunkTask(functools.partial(threshold_objects, level=150), name="cells", instances=True, tile_context=0,
                     halo=45)
    with dask_scheduler("threads"):
        summary = predict_chunked(open_lazy(path), task, tmp_path / "t.ome.zarr",
                                  chunking=Chunking(chunk_size=CHUNK), pixel_size=(0.5, 0.5), progress=False)
    assert summary["objects"] == ndi.label(image > 150)[1]
    assert open_lazy(tmp_path / "t.ome.zarr").pixel_size == (0.5, 0.5)


def test_predict_command_takes_ome_zarr_and_equals_the_whole_image(trained, tmp_path):
    """`cellmixer predict` on an OME-Zarr: chunked on dask, the class map equal to the pixel to the map of
    the same image predicted whole."""
    from cellmixer.cli import main
    from cellmixer.io import write_ome_zarr

    model, folder = trained
    image = blobs((300, 420), seed=4)
    write_ome_zarr(tmp_path / "in" / "plate.ome.zarr", image, pixel_size=(0.3, 0.3), chunk_size=128)
    out = tmp_path / "out"
    assert main(["predict", str(folder), str(tmp_path / "in" / "plate.ome.zarr"), "--output", str(out),
                 "--tile-size", "64", "--chunk-size", "128", "--scheduler", "threads", "--quiet"]) == 0
    chunked = read_ome_zarr_labels(out / "plate.ome.zarr", "classes").compute()
    np.testing.assert_array_equal(chunked, model.predict(image, tile_size=64))
    assert open_lazy(out / "plate.ome.zarr").pixel_size == (0.3, 0.3)
    assert len(list(out.glob("plate*_overlay.png"))) == 1 and (out / "predictions.csv").is_file()


def test_unreachable_scheduler_is_one_line():
    pytest.importorskip("distributed")
    with pytest.raises(CellmixerError, match="--scheduler tcp://127.0.0.1:9: no dask scheduler answers there"):
        with dask_scheduler("tcp://127.0.0.1:9"):
            pass


def _kill_worker_once(region, window, statistics, *, flag):
    """A chunk task whose first attempt on the chunk at the origin kills its worker process."""
    if window.area[0][0] == 0 and window.area[1][0] == 0 and not flag.exists():
        flag.write_text("killed")
        os._exit(1)
    return threshold_objects(region, window, statistics, level=150)


def test_a_worker_killed_mid_run_does_not_stop_the_run(image, tmp_path):
    """On a LocalCluster of two worker processes, one dies in its chunk: the chunk is done again elsewhere."""
    pytest.importorskip("distributed")
    flag = tmp_path / "killed"
    task = ChunkTask(functools.partial(_kill_worker_once, flag=flag), name="cells", instances=True, tile_context=0,
                     halo=45)
    with dask_scheduler("local", workers=2):
        summary = predict_chunked(image, task, tmp_path / "a.ome.zarr", chunking=Chunking(chunk_size=CHUNK),
                                  progress=False)
    assert flag.exists()
    np.testing.assert_array_equal(read_ome_zarr_labels(tmp_path / "a.ome.zarr", "cells").compute(),
                                  as_raster_order(ndi.label(image > 150)[0]))
    assert summary["objects"] == ndi.label(image > 150)[1]
