"""Training: Tversky loss, crop sampling and mixing, augmentation, and the train() function."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage as ndi

from cellmixer._errors import CellmixerError
from cellmixer.engine import SegmentationModel, TrainingInterrupted
from cellmixer.methods.cellmixer import CropSampler, PseudoLabelledImage, train, training_loss
from cellmixer.methods.cellmixer._train import CONTEXT_RADIUS
from cellmixer.ops import AugmentParams, augment, context_weights, tversky_loss


def one_hot_logits(prediction, num_classes, scale=30.0):
    """Logits whose softmax is (numerically) the one-hot of ``prediction``."""
    return scale * F.one_hot(prediction, num_classes).permute(0, 3, 1, 2).float()


# ------------------------------------------------------------------------------------------ Tversky loss
def test_tversky_perfect_prediction_is_zero():
    target = torch.randint(0, 4, (2, 16, 16), generator=torch.Generator().manual_seed(0))
    assert float(tversky_loss(one_hot_logits(target, 4), target)) < 1e-6


def test_tversky_grows_with_errors():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 3, (2, 16, 16), generator=g)
    losses = []
    for share in (0.0, 0.2, 0.5, 1.0):
        wrong = torch.rand(target.shape, generator=g) < share
        prediction = torch.where(wrong, (target + 1) % 3, target)
        losses.append(float(tversky_loss(one_hot_logits(prediction, 3), target)))
    assert losses == sorted(losses) and losses[0] < 1e-6 and losses[-1] > 0.95
    # Uninformative logits sit in between.
    assert 0.2 < float(tversky_loss(torch.zeros(2, 3, 16, 16), target)) < 0.9


def test_context_weights_stress_cells_among_another_type():
    rng = np.random.default_rng(2)
    target = ndi.zoom(rng.integers(0, 3, (2, 6, 6)), (1, 8, 8), order=0)  # patches of background and two types
    target[0, :6, :6] = 255  # ignored
    got = context_weights(torch.from_numpy(target), 3, strength=2.0, radius=5)[:, 0].numpy()
    for b in range(2):  # the share of the other type's cell pixels in the 11 x 11 square, zeros outside
        cells = ((target[b] > 0) & (target[b] != 255)).astype(float)
        total = ndi.uniform_filter(cells, 11, mode="constant")
        for k in (1, 2):
            own = ndi.uniform_filter((target[b] == k).astype(float), 11, mode="constant")
            expected = 1 + 2.0 * np.clip(total - own, 0, None) / np.maximum(total, 1e-6)
            np.testing.assert_allclose(got[b][target[b] == k], expected[target[b] == k], atol=1e-5)
        np.testing.assert_array_equal(got[b][(target[b] == 0) | (target[b] == 255)], 1.0)
    assert got.max() > 2.0  # some pixels sit among the other type
    logits = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    t = torch.from_numpy(target)
    plain = float(tversky_loss(logits, t))
    assert float(tversky_loss(logits, t, weight=torch.ones(2, 1, 48, 48))) == pytest.approx(plain)
    assert float(tversky_loss(logits, t, weight=torch.from_numpy(got)[:, None])) != pytest.approx(plain)


def test_training_loss_is_the_one_a_model_was_trained_with():
    target = torch.zeros(1, 32, 32, dtype=torch.long)
    target[0, 4:14, 4:14], target[0, 8:12, 8:12], target[0, 20:, 20:] = 1, 2, 255  # a cell of type 2 among type 1
    logits = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    weighted = training_loss({"tversky_alpha": 0.5, "tversky_beta": 0.5, "context_weight": 2.0})(logits, target)
    weight = context_weights(target, 3, strength=2.0, radius=CONTEXT_RADIUS)
    assert float(weighted) == pytest.approx(float(tversky_loss(logits, target, alpha=0.5, beta=0.5, weight=weight)))
    # A model saved before the context weight existed was trained with the plain Tversky loss.
    assert float(training_loss({})(logits, target)) == pytest.approx(float(tversky_loss(logits, target)))
    assert float(weighted) != pytest.approx(float(tversky_loss(logits, target, alpha=0.5, beta=0.5)))


def test_tversky_matches_hand_computation():
    # Four pixels: truth [0, 0, 1, 1], prediction [1, 0, 1, 1]: one false alarm of class 1.
    target = torch.tensor([[[0, 0, 1, 1]]])
    logits = one_hot_logits(torch.tensor([[[1, 0, 1, 1]]]), 2)
    for alpha, beta in [(0.3, 0.7), (0.7, 0.3), (0.5, 0.5), (1.0, 0.0)]:
        # class 0: TP 1, FP 0, FN 1; class 1: TP 2, FP 1, FN 0.
        ti0 = 1 / (1 + beta)
        ti1 = 2 / (2 + alpha)
        expected = ((1 - ti0) + (1 - ti1)) / 2
        got = float(tversky_loss(logits, target, alpha=alpha, beta=beta, smooth=0.0))
        assert got == pytest.approx(expected, abs=1e-6)
    # With the smoothing term (default 1): (TP + 1) / (TP + a FP + b FN + 1).
    expected = ((1 - 2 / (2 + 0.7)) + (1 - 3 / (3 + 0.3))) / 2
    assert float(tversky_loss(logits, target)) == pytest.approx(expected, abs=1e-6)


def test_tversky_alpha_beta_weigh_false_alarms_and_misses():
    # A rare class (4 of 64 pixels): missing it versus over-predicting it (4 false alarms).
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, :2, :2] = 1
    missed = torch.zeros_like(target)
    over = target.clone()
    over[0, 4:6, 4:6] = 1
    kwargs = dict(alpha=0.3, beta=0.7, smooth=0.0)
    loss_missed = float(tversky_loss(one_hot_logits(missed, 2), target, **kwargs))
    loss_over = float(tversky_loss(one_hot_logits(over, 2), target, **kwargs))
    assert loss_missed > loss_over  # beta > alpha: misses cost more than false alarms
    swapped = dict(alpha=0.7, beta=0.3, smooth=0.0)
    assert (float(tversky_loss(one_hot_logits(over, 2), target, **swapped))
            > float(tversky_loss(one_hot_logits(over, 2), target, **kwargs)))


def test_tversky_half_half_is_dice():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 10, 10, generator=g)
    target = torch.randint(0, 3, (2, 10, 10), generator=g)
    probs = torch.softmax(logits, 1)
    onehot = F.one_hot(target, 3).permute(0, 3, 1, 2).float()
    inter = (probs * onehot).sum((0, 2, 3))
    dice = (2 * inter) / (probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3)))
    got = float(tversky_loss(logits, target, alpha=0.5, beta=0.5, smooth=0.0))
    assert got == pytest.approx(float((1 - dice).mean()), abs=1e-5)


def test_tversky_ignores_ignore_index():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 3, 8, 8, generator=g)
    target = torch.randint(0, 3, (1, 8, 8), generator=g)
    ignored = target.clone()
    ignored[0, :, 4:] = 255
    # Same loss as on the valid half alone, whatever the logits of ignored pixels are.
    half = float(tversky_loss(logits[..., :4], target[..., :4]))
    assert float(tversky_loss(logits, ignored)) == pytest.approx(half, abs=1e-6)
    scrambled = logits.clone()
    scrambled[..., 4:] = 100 * torch.randn(1, 3, 8, 4, generator=g)
    assert float(tversky_loss(scrambled, ignored)) == pytest.approx(half, abs=1e-6)
    # A custom ignore value, and none at all.
    custom = torch.where(ignored == 255, torch.full_like(target, 7), target)
    assert float(tversky_loss(logits, custom, ignore_index=7)) == pytest.approx(half, abs=1e-6)
    assert float(tversky_loss(logits, target, ignore_index=None)) == pytest.approx(float(tversky_loss(logits, target)))


def test_tversky_has_gradients():
    logits = torch.zeros(1, 2, 4, 4, requires_grad=True)
    target = torch.ones(1, 4, 4, dtype=torch.long)
    tversky_loss(logits, target).backward()
    assert logits.grad[0, 1].lt(0).all()  # raising the true class's logit lowers the loss


# ------------------------------------------------------------------------------------------ sampling
def striped_images():
    """Class 1 has cells on even rows, class 2 on even columns: any mixed crop holds both classes."""
    h, w = 40, 50
    yy, xx = np.mgrid[:h, :w]
    first = PseudoLabelledImage(np.full((h, w), 1.0, np.float32), np.where(yy % 2 == 0, 1, 0).astype(np.uint8), 1,
                                "a.tif")
    second = PseudoLabelledImage(np.full((h, w), 3.0, np.float32), np.where(xx % 2 == 0, 2, 0).astype(np.uint8), 2,
                                 "b.tif")
    return [first, second]


def test_baseline_crops_hold_one_class():
    sampler = CropSampler(striped_images(), 3, crop_size=16, mode="baseline", augment_params=None)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        image, labels = sampler.sample(rng)
        assert image.shape == labels.shape == (16, 16)
        classes = set(np.unique(labels).tolist()) - {0}
        assert len(classes) == 1
        k = classes.pop()
        seen.add(k)
        assert np.all(image == (1.0 if k == 1 else 3.0))  # a plain crop of one culture
    assert seen == {1, 2}  # both classes are drawn


def test_cellmixer_crops_mix_two_classes():
    sampler = CropSampler(striped_images(), 3, crop_size=16, mode="cellmixer", mix_probability=1.0, lam=0.5,
                          augment_params=None)
    rng = np.random.default_rng(1)
    for _ in range(40):
        image, labels = sampler.sample(rng)
        assert set(np.unique(labels).tolist()) == {0, 1, 2}
        # lam = 0.5 blend of the two cultures, rescaled by 1 / sqrt(lam^2 + (1 - lam)^2).
        np.testing.assert_allclose(image, (0.5 * 1.0 + 0.5 * 3.0) / np.sqrt(0.5), rtol=1e-6)


def test_cellmixer_crops_respect_lam_and_mix_probability():
    images = striped_images()
    sampler = CropSampler(images, 3, crop_size=16, mode="cellmixer", lam=0.2, augment_params=None)
    rng = np.random.default_rng(2)
    values = {float(sampler.sample(rng)[0][0, 0]) for _ in range(30)}
    scale = np.sqrt(0.2**2 + 0.8**2)
    expected = {(0.2 * 1 + 0.8 * 3) / scale, (0.2 * 3 + 0.8 * 1) / scale}
    assert all(min(abs(v - e) for e in expected) < 1e-5 for v in values) and len(values) == 2
    never = CropSampler(images, 3, crop_size=16, mode="cellmixer", mix_probability=0.0, augment_params=None)
    for _ in range(20):
        assert len(set(np.unique(never.sample(rng)[1]).tolist()) - {0}) == 1


def test_sampler_batch_and_seed():
    sampler = CropSampler(striped_images(), 3, crop_size=16)
    images, labels = sampler.batch(np.random.default_rng(5), 3)
    assert images.shape == (3, 1, 16, 16) and images.dtype == np.float32
    assert labels.shape == (3, 16, 16) and labels.dtype == np.int64
    again = sampler.batch(np.random.default_rng(5), 3)
    np.testing.assert_array_equal(images, again[0])
    np.testing.assert_array_equal(labels, again[1])
    with pytest.raises(ValueError):
        CropSampler(striped_images(), 3, crop_size=16, mode="mixup")


def test_sampler_draws_classes_evenly():
    # Class 1 has five images, class 2 one: classes are still drawn about equally often.
    images = striped_images()
    images = [images[0]] * 5 + [images[1]]
    sampler = CropSampler(images, 3, crop_size=8, mode="baseline", augment_params=None)
    rng = np.random.default_rng(0)
    firsts = [int(np.max(sampler.sample(rng)[1])) for _ in range(400)]
    assert 0.4 < firsts.count(2) / 400 < 0.6


def test_load_pseudolabelled_normalizes_and_labels(culture_dir):
    from cellmixer.demo import DEMO_FOREGROUND
    from cellmixer.io import discover_dataset, read_image
    from cellmixer.methods.cellmixer import load_pseudolabelled
    from cellmixer.ops import extract_foreground

    dataset = discover_dataset(culture_dir)
    items = load_pseudolabelled(dataset, foreground=DEMO_FOREGROUND, progress=False)
    assert len(items) == 6
    for item, path, k in zip(items, dataset.paths, dataset.labels):
        assert item.path == path and item.class_index == k
        mask = extract_foreground(read_image(path), **DEMO_FOREGROUND.to_dict())
        np.testing.assert_array_equal(item.labels, mask * k)  # the image's class on its foreground
        assert item.labels.dtype == np.uint8 and item.image.dtype == np.float32
        background = item.image[~mask]
        assert abs(background.mean()) < 1e-3 and abs(background.std() - 1) < 1e-3
        raw = read_image(path).astype(np.float64)[~mask]  # how a gain of the raw image moves the normalized one
        assert item.background_ratio == pytest.approx(raw.mean() / raw.std(), rel=1e-4)


# ------------------------------------------------------------------------------------------ augmentation
DIHEDRAL = [lambda a, k=k, f=f: np.rot90(a, k)[:, ::-1] if f else np.rot90(a, k) for k in range(4) for f in (0, 1)]


@pytest.mark.parametrize("seed", range(12))
def test_augment_keeps_image_and_labels_aligned(seed):
    labels = np.arange(12 * 12).reshape(12, 12)
    image = labels.astype(np.float32)
    rng = np.random.default_rng(seed)
    # Geometry and intensity only (blur and noise would mix neighbouring values).
    params = AugmentParams(blur_probability=0.0, noise_probability=0.0, intensity_probability=1.0)
    out_image, out_labels = augment(image, labels, rng, params)
    assert any(np.array_equal(out_labels, t(labels)) for t in DIHEDRAL)
    # The image went through the same flips: still an affine function of its label map.
    slope, intercept = np.polyfit(out_labels.ravel(), out_image.ravel(), 1)
    np.testing.assert_allclose(out_image, slope * out_labels + intercept, atol=1e-3 * abs(slope) * labels.max())
    assert 0.74 < slope < 1.34


def test_augment_geometry_only_is_exact_and_covers_all_symmetries():
    labels = np.arange(5 * 5).reshape(5, 5)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(80):
        out_image, out_labels = augment(labels.astype(np.float32), labels, rng,
                                        AugmentParams(blur_probability=0, noise_probability=0,
                                                      intensity_probability=0))
        np.testing.assert_array_equal(out_image, out_labels)
        seen.add(next(i for i, t in enumerate(DIHEDRAL) if np.array_equal(out_labels, t(labels))))
        assert out_image.flags.c_contiguous and out_labels.flags.c_contiguous
    assert seen == set(range(8))


def test_augment_full_defaults_keep_labels_a_symmetry_of_the_input():
    labels = np.random.default_rng(0).integers(0, 3, (16, 16))
    image = np.random.default_rng(1).normal(size=(16, 16)).astype(np.float32)
    for seed in range(10):
        out_image, out_labels = augment(image, labels, np.random.default_rng(seed))
        assert out_image.dtype == np.float32 and out_image.shape == image.shape
        assert any(np.array_equal(out_labels, t(labels)) for t in DIHEDRAL)


def test_augment_none_is_identity():
    image = np.random.default_rng(0).normal(size=(8, 9)).astype(np.float32)
    labels = (image > 0).astype(np.uint8)
    out_image, out_labels = augment(image, labels, np.random.default_rng(0), AugmentParams.none())
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_labels, labels)


# ------------------------------------------------------------------------------------------ train()
@pytest.fixture(scope="module")
def tiny_run(culture_dir, tmp_path_factory, tiny):
    folder = tmp_path_factory.mktemp("tiny") / "model"
    model = train(culture_dir, folder, seed=0, **tiny)
    return model, folder


def state_of(folder):
    return SegmentationModel.load(folder).network.state_dict()


def assert_same_weights(a, b, exact=False):
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_train_writes_a_model_folder(tiny_run):
    model, folder = tiny_run
    assert {p.name for p in folder.iterdir()} >= {"config.json", "weights.safetensors", "training_log.csv",
                                                  "training_curve.png", "checkpoint"}
    assert (folder / "checkpoint" / "state.safetensors").is_file() and (folder / "checkpoint" / "state.json").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["classes"] == ["epithelial", "roundcell", "spindle"]
    assert config["architecture"]["width"] == 4 and config["architecture"]["depth"] == 2
    training = config["training"]
    assert training["iterations"] == 6 and training["batch_size"] == 2 and training["crop_size"] == 32
    assert training["mode"] == "cellmixer" and training["optimizer"] == "adam" and training["lam"] == 0.5
    assert training["learning_rate"] == 1e-3 and training["momentum"] > 0 and training["weight_decay"] == 0
    assert training["images_per_class"] == {"epithelial": 2, "roundcell": 2, "spindle": 2}
    assert np.isfinite(training["final_loss"])
    assert config["cellmixer_version"] and config["normalization"]["method"] == "background"
    with open(folder / "training_log.csv") as fh:
        log = list(csv.DictReader(fh))
    assert [int(r["iteration"]) for r in log] == list(range(1, 7))
    assert all(0 <= float(r["loss"]) <= 1 for r in log)
    with Image.open(folder / "training_curve.png") as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    assert model.classes == config["classes"]


def test_trained_model_loads_and_predicts(tiny_run):
    model, folder = tiny_run
    loaded = SegmentationModel.load(folder)
    rng = np.random.default_rng(0)
    image = rng.normal(1000, 30, (40, 52)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(image), model.predict(image))


def test_same_seed_same_weights(culture_dir, tiny_run, tmp_path, tiny):
    _, folder = tiny_run
    train(culture_dir, tmp_path / "again", seed=0, **tiny)
    assert_same_weights(state_of(folder), state_of(tmp_path / "again"), exact=True)
    train(culture_dir, tmp_path / "other", seed=1, **tiny)
    other = state_of(tmp_path / "other")
    assert any(not torch.equal(v, other[k]) for k, v in state_of(folder).items())


def test_resume_equals_an_uninterrupted_run(culture_dir, tmp_path, tiny):
    # at a constant rate: a poly schedule decays to the run's last iteration, so 2 iterations extended to 6
    # are another run
    tiny = {**tiny, "lr_schedule": "constant"}
    full, part = tmp_path / "full", tmp_path / "part"
    train(culture_dir, full, seed=0, **tiny)
    train(culture_dir, part, seed=0, **{**tiny, "iterations": 2})
    with open(part / "training_log.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2
    train(culture_dir, part, seed=0, resume=True, **{**tiny, "iterations": 6})
    assert_same_weights(state_of(full), state_of(part))
    with open(full / "training_log.csv") as fh, open(part / "training_log.csv") as gh:
        full_log, part_log = list(csv.DictReader(fh)), list(csv.DictReader(gh))
    assert [r["iteration"] for r in part_log] == [r["iteration"] for r in full_log]
    np.testing.assert_allclose([float(r["loss"]) for r in part_log], [float(r["loss"]) for r in full_log],
                               atol=1e-5)
    assert json.loads((part / "config.json").read_text())["training"]["iterations"] == 6


def test_resume_after_an_interruption(culture_dir, tiny_run, tmp_path, tiny, monkeypatch):
    """Ctrl-C during training finishes the iteration, writes a checkpoint; --resume then finishes the same run."""
    import os
    import signal

    from cellmixer.methods.cellmixer import _train

    _, full = tiny_run
    calls = {"n": 0}
    real_loss = _train.tversky_loss

    def interrupted_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in the terminal sends
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(_train, "tversky_loss", interrupted_loss)
    folder = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(culture_dir, folder, seed=0, **tiny)
    state = json.loads((folder / "checkpoint" / "state.json").read_text())
    assert state["iteration"] == 4 and len(state["history"]) == 4
    assert not (folder / "config.json").exists()  # no finished model yet
    monkeypatch.setattr(_train, "tversky_loss", real_loss)
    train(culture_dir, folder, seed=0, resume=True, **tiny)
    assert_same_weights(state_of(full), state_of(folder))


def test_resume_without_checkpoint(culture_dir, tiny_run, tmp_path, tiny, capsys):
    """Nothing to continue (a run killed before its first checkpoint): --resume runs it from the start;
    a finished model without its checkpoint is refused."""
    _, full = tiny_run
    train(culture_dir, tmp_path / "fresh", seed=0, resume=True, **tiny)
    assert "starts from the beginning" in capsys.readouterr().err
    assert_same_weights(state_of(full), state_of(tmp_path / "fresh"))
    shutil.rmtree(tmp_path / "fresh" / "checkpoint")
    with pytest.raises(CellmixerError, match="--resume: .*fresh holds a finished model but no checkpoint"):
        train(culture_dir, tmp_path / "fresh", resume=True, **tiny)


def test_resume_with_other_data(culture_dir, tiny_run, tmp_path, tiny):
    """--resume keeps the checkpoint's classes; data without them is refused, naming the problem."""
    from cellmixer.io import discover_dataset

    _, full = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(full, copy)
    other = tmp_path / "other"
    for name in ("roundcell", "spindle"):
        shutil.copytree(culture_dir / name, other / name)
    with pytest.raises(CellmixerError, match=r"epithelial: class folder not found"):
        train(other, copy, resume=True, **{**tiny, "iterations": 8})
    with pytest.raises(CellmixerError, match="--resume: the data has classes"):
        train(discover_dataset(other), copy, resume=True, **{**tiny, "iterations": 8})


def test_refuses_to_overwrite_a_model(culture_dir, tiny_run, tmp_path, tiny, snapshot):
    _, full = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(full, copy)
    before = snapshot(copy)
    with pytest.raises(CellmixerError, match=r"already holds a model.*--overwrite"):
        train(culture_dir, copy, seed=3, **tiny)
    assert snapshot(copy) == before
    train(culture_dir, copy, seed=3, overwrite=True, **tiny)
    assert snapshot(copy)["weights.safetensors"][0] != before["weights.safetensors"][0]


def test_baseline_mode(culture_dir, tmp_path, tiny):
    model = train(culture_dir, tmp_path / "baseline", mode="baseline", **tiny)
    assert model.config["training"]["mode"] == "baseline"
    assert SegmentationModel.load(tmp_path / "baseline").config["training"]["mode"] == "baseline"


def test_the_session_model_learned(trained):
    """A brief training brings the loss well down, and the model finds cells of the right type."""
    from cellmixer.demo import synthetic_culture

    model, folder = trained
    with open(folder / "training_log.csv") as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh)]
    assert len(losses) == 120
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.1
    found, clear, correct = [], [], 0
    for k, name in enumerate(model.classes, start=1):
        image, instances, _ = synthetic_culture(name, shape=(128, 128), seed=100 + k)
        labels = model.predict(image)
        cells = instances > 0
        found.append((labels[cells] > 0).mean())
        clear.append((labels[~cells] == 0).mean())
        votes = np.bincount(labels[cells], minlength=4)[1:]
        correct += int(np.argmax(votes) + 1 == k)
    assert np.mean(found) > 0.6 and np.mean(clear) > 0.8  # cells found, background mostly left alone
    assert correct >= 2  # most cultures get their own type (a brief training: not all)


# ------------------------------------------------------------------------------------------ bad input
def test_image_smaller_than_crop(culture_dir, tmp_path, tiny):
    with pytest.raises(CellmixerError) as info:
        train(culture_dir, tmp_path / "m", **{**tiny, "crop_size": 128})
    message = str(info.value)
    assert ".tif" in message and "smaller than the crop size 128" in message and "--crop-size" in message


def test_single_class(culture_dir, tmp_path, tiny):
    with pytest.raises(CellmixerError, match="at least 2"):
        train(culture_dir, tmp_path / "m", classes=["spindle"], **tiny)


@pytest.mark.parametrize("content, expected", [("constant", "image is constant"), ("nan", "NaN")])
def test_bad_image_in_the_data(culture_dir, tmp_path, tiny, content, expected):
    data = tmp_path / "data"
    shutil.copytree(culture_dir, data)
    bad = np.full((96, 96), 500, np.float32)
    if content == "nan":
        bad[10, 10] = np.nan
    tifffile.imwrite(data / "spindle" / "bad.tif", bad)
    with pytest.raises(CellmixerError, match=rf"spindle[/\\]bad\.tif: .*{expected}"):
        train(data, tmp_path / "m", **tiny)


@pytest.mark.parametrize("option, value", [
    ("lam", 1.5), ("lam", 0.0), ("iterations", 0), ("batch_size", 0), ("crop_size", 8), ("mode", "mixup"),
    ("optimizer", "rmsprop"), ("lr_schedule", "cosine"), ("learning_rate", 0.0), ("mix_probability", 1.2),
    ("tversky_alpha", -1.0), ("checkpoint_every", 0),
])
def test_bad_option_values_name_the_option(culture_dir, tmp_path, tiny, option, value):
    with pytest.raises(CellmixerError) as info:
        train(culture_dir, tmp_path / "m", **{**tiny, option: value})
    assert f"--{option.replace('_', '-')} {value}" in str(info.value)
    assert not (tmp_path / "m" / "config.json").exists()


def test_bad_architecture_option(culture_dir, tmp_path, tiny):
    with pytest.raises(CellmixerError, match="width"):
        train(culture_dir, tmp_path / "m", **{**tiny, "model_options": {"width": 0, "depth": 2}})
    with pytest.raises(CellmixerError, match="--model vit"):
        train(culture_dir, tmp_path / "m", **{**tiny, "model": "vit"})
