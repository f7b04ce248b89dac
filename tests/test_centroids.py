"""Instances from centroids (issue 4): weak labels, guided backpropagation, graph cuts, metrics, CLI."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from cellmixer._errors import CellmixerError
from cellmixer.cli import main
from cellmixer.methods.centroids import (
    centre_regions,
    check_points,
    contribution_maps,
    guided_relu_gate,
    guided_relus,
    likelihood_map,
    max_projection,
    nuclear_centroids,
    read_points_csv,
    segment_cells,
    train_centroids,
    weak_labels,
)
from cellmixer.metrics import centroid_scores, detection_scores, mean_dice
from cellmixer.models import UNet
from cellmixer.ops import fuse_cells, graph_cut


# ----------------------------------------------------------------------------------------- synthetic data
def cells_image(seed=0, size=96, n=5, radius=9):
    """Textured bright disks on a flat background, their label image and their centres (row, column)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = rng.normal(100, 2, (size, size))
    labels = np.zeros((size, size), np.int32)
    centres = []
    while len(centres) < n:
        c = rng.uniform(radius + 2, size - radius - 2, 2)
        if all(np.hypot(*(c - d)) > 2 * radius + 3 for d in centres):
            centres.append(c)
    for k, (cy, cx) in enumerate(centres, start=1):
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        labels[disk] = k
        image[disk] += 40 + 10 * np.sin(xx[disk] / 2.0)
    return image.astype(np.float32), labels, np.array(centres)


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """A tiny detector trained for a few seconds on synthetic cells."""
    folder = tmp_path_factory.mktemp("detector")
    points = {}
    for i in range(3):
        image, _, centres = cells_image(seed=i)
        tifffile.imwrite(folder / f"img{i}.tif", image)
        points[f"img{i}.tif"] = centres
    torch.manual_seed(0)
    return train_centroids(sorted(folder.glob("img*.tif")), folder / "model", points=points, sigma=3.0,
                           model_options={"width": 4, "depth": 2}, iterations=60, batch_size=4, crop_size=64,
                           learning_rate=3e-3, precision="fp32", checkpoint_every=1000, progress=False)


def small_unet(seed=0):
    torch.manual_seed(seed)
    net = UNet(num_classes=1, width=4, depth=2)
    # Non-trivial batch-norm statistics, so that eval mode differs from a fresh network.
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(4, 1, 32, 32))
    return net.eval()


# ----------------------------------------------------------------------------------------- guided backprop
def test_gate_passes_signal_only_where_activation_and_signal_are_positive():
    rng = np.random.default_rng(0)
    activation = torch.tensor(rng.normal(size=200), requires_grad=True)
    signal = torch.tensor(rng.normal(size=200))
    guided_relu_gate(torch.relu(activation)).backward(signal)
    a, s, g = activation.detach().numpy(), signal.numpy(), activation.grad.numpy()
    assert np.all(g[(a <= 0) | (s <= 0)] == 0)
    assert np.allclose(g[(a > 0) & (s > 0)], s[(a > 0) & (s > 0)])
    assert ((a > 0) & (s > 0)).any() and ((a > 0) & (s < 0)).any()  # both cases occur


class _GuidedReLUModule(nn.Module):
    """Reference: a ReLU module whose backward is the guided rule, written out separately."""

    class _Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * (x > 0).to(g.dtype) * (g > 0).to(g.dtype)

    def forward(self, x):
        return self._Fn.apply(x)


def _reference_map(net, window_image, own):
    """One cell, one window: the network with every ReLU replaced by the reference module."""
    ref = copy.deepcopy(net)
    for module in ref.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, name, _GuidedReLUModule())
    ref.eval()
    x = torch.tensor(window_image[None, None], requires_grad=True)
    y = ref(x)[:, 0]
    y.backward(torch.where(torch.from_numpy(own[None]), y.detach(), 0.0))
    return x.grad[0, 0].numpy()


def _two_cells():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(48, 64)).astype(np.float32)
    regions = np.zeros((48, 64), np.int32)
    regions[10:14, 12:16] = 1
    regions[30:33, 40:45] = 2
    regions[40:44, 2:6] = 3
    return image, regions


def test_contribution_maps_match_a_reference_per_cell_computation():
    net = small_unet()
    image, regions = _two_cells()
    maps = contribution_maps(net, image, regions, window=32, batch_size=8)
    for u in (1, 2, 3):
        image_sl, window_sl = maps.window_slices(u)
        y0, x0 = maps.origins[u - 1]
        assert y0 >= 0 and x0 >= 0  # inside the image here, so the window is a plain crop
        window = image[y0:y0 + 32, x0:x0 + 32]
        own = regions[y0:y0 + 32, x0:x0 + 32] == u
        assert np.allclose(maps.maps[u - 1], _reference_map(net, window, own), atol=1e-5)
    # Guided backprop is not the plain gradient: the rule at the ReLUs changes the map.
    x = torch.tensor(image[None, None, :32, :32], requires_grad=True)
    y = net(x)[:, 0]
    y.backward(torch.where(torch.from_numpy(regions[None, :32, :32] == 1), y.detach(), 0.0))
    assert not np.allclose(x.grad[0, 0].numpy(), maps.full(1)[:32, :32], atol=1e-5)


def test_batching_equals_one_cell_at_a_time():
    net = small_unet()
    image, regions = _two_cells()
    together = contribution_maps(net, image, regions, window=32, batch_size=16)
    alone = contribution_maps(net, image, regions, window=32, batch_size=1)
    assert np.allclose(together.maps, alone.maps, atol=1e-6)
    assert np.array_equal(together.origins, alone.origins)


def test_guided_relus_leave_the_network_as_it_was():
    net = small_unet()
    net.train()
    x = torch.randn(1, 1, 32, 32, requires_grad=True)
    net.eval()
    grad_before = torch.autograd.grad(net(x).sum(), x)[0]
    net.train()
    with guided_relus(net):
        assert not net.training
    assert net.training
    assert all(not m._forward_hooks for m in net.modules())
    net.eval()
    assert torch.allclose(torch.autograd.grad(net(x).sum(), x)[0], grad_before)


def test_max_projection_gives_each_pixel_to_the_strongest_cell():
    net = small_unet()
    image, regions = _two_cells()
    maps = contribution_maps(net, image, regions, window=32)
    owner, value = max_projection(maps, normalize=False)
    stack = np.stack([maps.full(u) for u in (1, 2, 3)])
    best = stack.max(axis=0)
    positive = best > 0
    assert np.array_equal(owner[positive], stack.argmax(axis=0)[positive] + 1)
    assert np.all(owner[~positive] == 0)
    assert np.allclose(value[positive], best[positive])


# ----------------------------------------------------------------------------------------- graph cut, fusion
def test_fused_cells_do_not_overlap_and_keep_their_seeded_part():
    shape = (20, 20)
    a = np.zeros(shape, bool); a[2:12, 2:12] = True
    b = np.zeros(shape, bool); b[8:18, 8:18] = True
    score_a = np.where(a, 1.0, 0.0).astype(np.float32)
    score_b = np.where(b, 0.5, 0.0).astype(np.float32)
    seed_a = np.zeros(shape, bool); seed_a[4, 4] = True
    seed_b = np.zeros(shape, bool); seed_b[15, 15] = True
    full = (slice(0, 20), slice(0, 20))
    labels = fuse_cells(shape, [(full, a, score_a, seed_a), (full, b, score_b, seed_b)])
    assert set(np.unique(labels)) == {0, 1, 2}
    assert np.all(labels[a] == 1)                    # the higher score wins the shared square
    assert np.count_nonzero(labels == 2) == 100 - 16


def test_graph_cut_follows_seeds_and_saliency():
    fg = np.zeros((10, 10), bool); fg[5, 1] = True
    bg = np.zeros((10, 10), bool); bg[5, 8] = True
    saliency = np.zeros((10, 10)); saliency[:, :5] = 0.9; saliency[:, 5:] = 0.1
    weights = np.full((10, 10), 0.05)
    mask = graph_cut(fg, bg, saliency, weights, weights)
    assert mask[:, :5].all() and not mask[:, 5:].any()


# ----------------------------------------------------------------------------------------- weak labels
def test_likelihood_map_is_the_maximum_of_gaussians():
    m = likelihood_map([[10, 10], [10, 14]], (20, 30), sigma=2.0)
    assert m[10, 10] == pytest.approx(1.0) and m[10, 14] == pytest.approx(1.0)
    assert m[10, 12] == pytest.approx(np.exp(-4 / 8), rel=1e-5)   # max, not sum, between them
    assert likelihood_map(np.zeros((0, 2)), (5, 5)).max() == 0


def test_points_outside_the_image_are_refused():
    with pytest.raises(CellmixerError, match="outside the 30x20"):
        check_points([[5, 5], [25, 3]], (20, 30), name="p.csv (a.tif)")


def test_duplicate_points_are_dropped():
    points, dropped = check_points([[5, 5], [7, 8], [5, 5]], (20, 30))
    assert dropped == 1 and len(points) == 2
    assert np.array_equal(likelihood_map(points, (20, 30)), likelihood_map([[5, 5], [7, 8], [5, 5]], (20, 30)))


def test_an_image_without_points_in_the_csv_is_an_error_and_an_empty_row_means_no_cells(tmp_path):
    image, _, _ = cells_image()
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(tmp_path / name, image)
    csv = tmp_path / "points.csv"
    csv.write_text("image,x,y\na.tif,10,12\n")
    with pytest.raises(CellmixerError, match="no points for b.tif"):
        weak_labels([tmp_path / "a.tif", tmp_path / "b.tif"], points=csv, progress=False)
    csv.write_text("image,x,y\na.tif,10,12\nb.tif,,\n")
    items = weak_labels([tmp_path / "a.tif", tmp_path / "b.tif"], points=csv, progress=False)
    assert [len(it.points) for it in items] == [1, 0]
    assert read_points_csv(csv)["a.tif"].tolist() == [[12.0, 10.0]]


def test_nuclear_channel_of_another_shape_is_refused(tmp_path):
    image, labels, centres = cells_image()
    nuclei = np.where(labels > 0, 1000, 10).astype(np.uint16)
    with pytest.raises(CellmixerError, match="give the nuclear stain of the same field"):
        nuclear_centroids(nuclei[:80], shape=image.shape)
    found = nuclear_centroids(nuclei, shape=image.shape, diameter_range=(5, 40))
    assert len(found) == len(centres)
    tifffile.imwrite(tmp_path / "a_phase.tif", image)
    tifffile.imwrite(tmp_path / "a_nuclear.tif", nuclei[:, :90])
    with pytest.raises(CellmixerError, match="90x96 pixels but the image is 96x96"):
        weak_labels([tmp_path / "a_phase.tif"], nuclear=("phase", "nuclear"), progress=False)


def test_one_source_of_points_is_required(tmp_path):
    with pytest.raises(CellmixerError, match="give one source"):
        weak_labels([tmp_path / "a.tif"], progress=False)


# ----------------------------------------------------------------------------------------- segmentation
def test_segment_cells_finds_the_cells(detector):
    image, truth, centres = cells_image(seed=7)
    result = segment_cells(detector, image, window=32)
    assert result.labels.shape == image.shape and result.labels.dtype == np.int32
    scores = centroid_scores(truth, result.labels, detections=result.detections, max_distance=5)
    assert scores["f_measure"] >= 0.8
    assert scores["mdice"] > 0.5


def test_rescale_brings_small_cells_to_the_training_size(detector):
    from cellmixer.ops import rescale_image

    image, truth, _ = cells_image(seed=7)
    small, small_truth = rescale_image(image, 0.5), rescale_image(truth, 0.5, labels=True)
    result = segment_cells(detector, small, window=32, rescale=2.0)
    assert result.labels.shape == small.shape
    scores = centroid_scores(small_truth, result.labels, detections=result.detections, max_distance=3)
    assert scores["f_measure"] >= 0.8 and scores["mdice"] > 0.5
    with pytest.raises(CellmixerError, match="--rescale 0.0"):
        segment_cells(detector, small, rescale=0.0)


def test_detector_is_an_instance_source_of_typed_cells(detector, trained):
    from cellmixer.methods.typed import segment_typed

    image, _, _ = cells_image(seed=7)
    cells = segment_typed(trained[0], image, instances=detector)
    expected = segment_cells(detector, image).labels
    assert len(cells) == len(np.unique(expected)) - 1 > 0
    assert np.array_equal(cells.labels > 0, expected > 0)


def test_no_detection_gives_an_empty_result(detector):
    image, _, _ = cells_image(seed=3)
    result = segment_cells(detector, image, threshold=50.0)
    assert not result.labels.any() and result.detections.shape == (0, 2)
    blank = segment_cells(detector, np.zeros((40, 40)))
    assert not blank.labels.any() and len(blank.detections) == 0


def test_centre_regions_drop_small_components():
    y = np.zeros((10, 10)); y[1:4, 1:4] = 1; y[7, 7] = 1
    assert centre_regions(y, threshold=0.5, min_area=2).max() == 1


# ----------------------------------------------------------------------------------------- metrics
def test_detection_f_measure_matches_one_to_one_within_the_distance():
    truth = np.array([[10, 10], [40, 40], [70, 70]])
    detections = np.array([[11, 11], [12, 9], [40, 47], [90, 90]])
    s = detection_scores(truth, detections, max_distance=5)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 3, 2)          # two near cell 1 count once; 7 px is too far
    assert s["f_measure"] == pytest.approx(2 * 1 / (3 + 4))
    assert detection_scores(truth, detections, max_distance=8)["tp"] == 2
    assert detection_scores(np.zeros((0, 2)), np.zeros((0, 2)))["f_measure"] == 1.0


def test_mean_dice_is_averaged_over_ground_truth_cells():
    truth = np.zeros((10, 10), int); truth[:4, :4] = 1; truth[6:, 6:] = 2
    prediction = np.zeros((10, 10), int); prediction[:4, :2] = 3; prediction[6:, 6:] = 4; prediction[0, 9] = 5
    assert mean_dice(truth, prediction) == pytest.approx((2 * 8 / 24 + 1.0) / 2)
    assert mean_dice(truth, np.zeros_like(truth)) == 0.0
    s = centroid_scores(truth, prediction)
    assert s["f1_50"] == pytest.approx(2 * 2 / (2 + 3))   # IoU of cell 1 is exactly 0.5
    assert s["mdice"] == pytest.approx(mean_dice(truth, prediction))


# ----------------------------------------------------------------------------------------- command line
def test_cli_round_trip(tmp_path, capsys):
    rows = ["image,x,y"]
    for i in range(2):
        image, truth, centres = cells_image(seed=10 + i)
        tifffile.imwrite(tmp_path / f"field{i}.tif", image)
        (tmp_path / "truth").mkdir(exist_ok=True)
        tifffile.imwrite(tmp_path / "truth" / f"field{i}.tif", truth)
        rows += [f"field{i}.tif,{x:.2f},{y:.2f}" for y, x in centres]
    (tmp_path / "points.csv").write_text("\n".join(rows) + "\n")
    images = [str(tmp_path / "field0.tif"), str(tmp_path / "field1.tif")]
    assert main(["centroids", "label", *images, "--points", str(tmp_path / "points.csv"), "-o",
                 str(tmp_path / "labelled"), "-q"]) == 0
    assert (tmp_path / "labelled" / "points.csv").is_file() and (tmp_path / "labelled" / "field0_points.png").is_file()
    assert main(["centroids", "train", *images, "--points", str(tmp_path / "labelled" / "points.csv"), "-o",
                 str(tmp_path / "model"), "--width", "4", "--depth", "2", "--iterations", "5", "--crop-size", "48",
                 "--batch-size", "2", "--sigma", "3", "-q"]) == 0
    assert main(["centroids", "predict", str(tmp_path / "model"), *images, "-o", str(tmp_path / "cells"),
                 "--window", "32", "-q"]) == 0
    for suffix in ("_labels.tif", "_objects.csv", "_detections.csv", "_overlay.png"):
        assert (tmp_path / "cells" / f"field0{suffix}").is_file()
    assert main(["centroids", "evaluate", str(tmp_path / "cells"), "--truth", str(tmp_path / "truth"), "-o",
                 str(tmp_path / "scores")]) == 0
    assert "F-measure" in capsys.readouterr().out
    # Existing results are kept without --overwrite; a bad input is one line, exit code 2.
    assert main(["centroids", "predict", str(tmp_path / "model"), *images, "-o", str(tmp_path / "cells"), "-q"]) == 2
    (tmp_path / "bad.csv").write_text("image,x,y\nfield0.tif,500,3\nfield1.tif,,\n")
    assert main(["centroids", "train", *images, "--points", str(tmp_path / "bad.csv"), "-o", str(tmp_path / "m2"),
                 "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "outside" in err[-1] and "Traceback" not in err[-1]


def test_imagej_rois_give_points_and_outlines(tmp_path):
    import roifile

    from cellmixer.methods.centroids import read_roi_points, roi_labels

    square = roifile.ImagejRoi.frompoints([[10, 10], [20, 10], [20, 20], [10, 20]])
    clicks = roifile.ImagejRoi.frompoints([[30.0, 5.0], [40.0, 7.0]])
    clicks.roitype = roifile.ROI_TYPE.POINT
    roifile.roiwrite(tmp_path / "RoiSet.zip", [square, clicks])
    points = read_roi_points(tmp_path / "RoiSet.zip")
    assert np.allclose(points, [[15, 15], [5, 30], [7, 40]])
    labels = roi_labels(tmp_path / "RoiSet.zip", (32, 48))
    assert labels.max() == 1 and 90 <= np.count_nonzero(labels) <= 121
