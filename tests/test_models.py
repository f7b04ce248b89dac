"""The U-Net and the model folder: config.json + weights.safetensors, loaded without unpickling."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
import torch

from cellmixer._errors import CellmixerError
from cellmixer.engine import SegmentationModel, input_statistics
from cellmixer.models import CONFIG_FILE, WEIGHTS_FILE, UNet, architecture_options, build_network


@pytest.mark.parametrize("size", [(1, 1), (7, 13), (31, 45), (64, 64), (17, 100)])
@pytest.mark.parametrize("depth", [1, 3])
def test_unet_output_shape_for_any_size(size, depth):
    net = UNet(num_classes=4, width=4, depth=depth).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, *size))
    assert out.shape == (2, 4, *size)
    assert net.size_multiple == 2**depth


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_unet_norms_and_channels_last(norm):
    net = UNet(in_channels=1, num_classes=3, width=8, depth=2, norm=norm).to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 20, 24).contiguous(memory_format=torch.channels_last)
    out = net(x)
    assert out.shape == (2, 3, 20, 24)
    out.sum().backward()  # trainable end to end
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="norm"):
        UNet(norm="layer")


def test_unet_width_sets_parameter_count():
    small = sum(p.numel() for p in UNet(width=4, depth=2).parameters())
    large = sum(p.numel() for p in UNet(width=8, depth=2).parameters())
    assert 3.5 < large / small < 4.5  # convolutions grow with width squared


def test_architecture_registry():
    options = architecture_options("unet")
    assert {"width", "depth", "norm"} <= set(options)
    net = build_network({"name": "unet", "in_channels": 1, "num_classes": 3, "width": 4, "depth": 1})
    assert isinstance(net, UNet) and net.depth == 1
    with pytest.raises(CellmixerError, match="--model resnet: unknown architecture"):
        architecture_options("resnet")
    with pytest.raises(CellmixerError, match="no option.*heads"):
        build_network({"name": "unet", "in_channels": 1, "num_classes": 3, "heads": 4})


def test_new_model_basics():
    model = SegmentationModel.new(["b_type", "a_type"], width=4, depth=2, channel=1)
    assert model.classes == ["b_type", "a_type"]  # order as given, not re-sorted
    assert model.num_classes == 3 and model.channel == 1
    assert model.config["architecture"]["num_classes"] == 3
    image = np.random.default_rng(0).normal(size=(33, 21)).astype(np.float32)
    labels, probs = model.predict(image, probabilities=True)
    assert labels.shape == (33, 21) and labels.dtype == np.uint8
    assert probs.shape == (3, 33, 21) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1, atol=1e-5)
    np.testing.assert_array_equal(labels, probs.argmax(axis=0))
    # Same seed, same initial weights.
    again = SegmentationModel.new(["b_type", "a_type"], width=4, depth=2, channel=1)
    for a, b in zip(model.network.state_dict().values(), again.network.state_dict().values()):
        assert torch.equal(a, b)


def _trained_ish_model(width=4):
    """A small model whose batch-norm statistics are not the defaults (as after training)."""
    model = SegmentationModel.new(["alpha", "beta"], width=width, depth=2, seed=3)
    model.network.train()
    with torch.no_grad():
        for _ in range(3):
            model.network(torch.randn(2, 1, 32, 32) * 3 + 1)
    model.network.eval()
    return model


def test_save_load_round_trip_identical_predictions(tmp_path):
    model = _trained_ish_model()
    model.config["training"] = {"iterations": 5, "mode": "cellmixer"}
    model.save(tmp_path / "m")
    loaded = SegmentationModel.load(tmp_path / "m")
    assert loaded.classes == model.classes and loaded.config == json.loads(json.dumps(model.config))
    image = np.random.default_rng(1).normal(100, 10, size=(45, 38)).astype(np.float32)
    labels_a, probs_a = model.predict(image, probabilities=True)
    labels_b, probs_b = loaded.predict(image, probabilities=True)
    np.testing.assert_array_equal(labels_a, labels_b)
    np.testing.assert_array_equal(probs_a, probs_b)
    for (ka, va), (kb, vb) in zip(model.network.state_dict().items(), loaded.network.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_config_is_plain_json(tmp_path):
    _trained_ish_model().save(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["classes"] == ["alpha", "beta"]
    assert config["architecture"]["name"] == "unet" and config["architecture"]["width"] == 4
    assert config["architecture"]["num_classes"] == 3
    assert config["normalization"]["method"] == "background" and "foreground" in config["normalization"]
    assert config["format"] == "cellmixer-model" and config["cellmixer_version"]


def test_weights_are_a_safetensors_file(tmp_path):
    model = _trained_ish_model()
    model.save(tmp_path)
    raw = (tmp_path / WEIGHTS_FILE).read_bytes()
    # safetensors: 8-byte little-endian header length, then a JSON header naming every tensor.
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    assert set(header) - {"__metadata__"} == set(model.network.state_dict())
    assert not raw.startswith(b"\x80")  # not a pickle
    assert b"PK\x03\x04" not in raw[:4]  # not a torch zip archive
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / WEIGHTS_FILE))
    assert all(torch.equal(state[k], v) for k, v in model.network.state_dict().items())


def test_save_refuses_to_overwrite(tmp_path):
    model = _trained_ish_model()
    model.save(tmp_path)
    before = (tmp_path / WEIGHTS_FILE).read_bytes()
    with pytest.raises(CellmixerError, match="already exists"):
        _trained_ish_model(width=8).save(tmp_path)
    assert (tmp_path / WEIGHTS_FILE).read_bytes() == before
    _trained_ish_model(width=8).save(tmp_path, overwrite=True)
    assert SegmentationModel.load(tmp_path).config["architecture"]["width"] == 8


# ------------------------------------------------------------------------------------------ load errors
@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "model"
    _trained_ish_model().save(folder)
    return folder


def load_error(folder) -> str:
    with pytest.raises(CellmixerError) as info:
        SegmentationModel.load(folder)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_missing_folder(tmp_path):
    assert "no such model folder" in load_error(tmp_path / "nothing")


@pytest.mark.parametrize("name", [CONFIG_FILE, WEIGHTS_FILE])
def test_missing_file(saved, name):
    (saved / name).unlink()
    message = load_error(saved)
    assert name in message and "missing" in message


def test_invalid_json(saved):
    (saved / CONFIG_FILE).write_text('{"classes": ["a", "b"], ')
    message = load_error(saved)
    assert CONFIG_FILE in message and "not valid JSON" in message


def test_json_that_is_not_a_model_config(saved):
    (saved / CONFIG_FILE).write_text('["just", "a", "list"]')
    assert "not a cellmixer model configuration" in load_error(saved)


def test_incomplete_config(saved):
    config = json.loads((saved / CONFIG_FILE).read_text())
    del config["architecture"]
    (saved / CONFIG_FILE).write_text(json.dumps(config))
    assert '"architecture" is missing' in load_error(saved)


def test_config_classes_disagree_with_architecture(saved):
    config = json.loads((saved / CONFIG_FILE).read_text())
    config["classes"].append("gamma")
    (saved / CONFIG_FILE).write_text(json.dumps(config))
    assert '"architecture.num_classes" is 3: the file lists 3 classes, the network needs 4' in load_error(saved)


def test_newer_format_version(saved):
    config = json.loads((saved / CONFIG_FILE).read_text())
    config["format_version"] = 99
    (saved / CONFIG_FILE).write_text(json.dumps(config))
    assert "newer cellmixer" in load_error(saved)


@pytest.mark.parametrize("edit", [{"width": "wide"}, {"norm": "layer"}, {"depth": -1}, {"heads": 4},
                                  {"name": "segmenter"}])
def test_bad_architecture_values(saved, edit):
    config = json.loads((saved / CONFIG_FILE).read_text())
    config["architecture"].update(edit)
    (saved / CONFIG_FILE).write_text(json.dumps(config))
    message = load_error(saved)
    assert CONFIG_FILE in message and "architecture" in message


@pytest.mark.parametrize("options, message", [({"width": 0}, "--width 0: must be between 1 and 1024"),
                                              ({"depth": -1}, "--depth -1: must be between 0 and 8"),
                                              ({"width": 2.5}, "--width 2.5: give a whole number"),
                                              ({"norm": "layer"},
                                               "--model-option norm=layer: choose one of batch, group, none"),
                                              ({"width": 1024, "depth": 8}, "--width 1024 --depth 8: a network of")])
def test_bad_architecture_options_for_a_new_model(options, message):
    with pytest.raises(CellmixerError) as caught:
        SegmentationModel.new(["a", "b"], **options)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("keep", [0, 7, 100, 0.5])
def test_truncated_weights(saved, keep):
    raw = (saved / WEIGHTS_FILE).read_bytes()
    (saved / WEIGHTS_FILE).write_bytes(raw[: int(len(raw) * keep) if isinstance(keep, float) else keep])
    message = load_error(saved)
    assert WEIGHTS_FILE in message and "corrupt" in message


def test_weights_of_another_architecture(tmp_path):
    folder = tmp_path / "model"
    _trained_ish_model(width=4).save(folder)
    other = tmp_path / "other"
    _trained_ish_model(width=8).save(other)
    (folder / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    message = load_error(folder)
    assert WEIGHTS_FILE in message and "does not match" in message and "shape" in message


def test_weights_with_missing_tensors(saved):
    from safetensors.torch import load_file, save_file

    state = load_file(str(saved / WEIGHTS_FILE))
    state.pop(sorted(state)[0])
    save_file(state, str(saved / WEIGHTS_FILE))
    assert "does not match" in load_error(saved)


class _Boom:
    """Unpickling this object creates a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_load_never_unpickles(saved, tmp_path):
    marker = tmp_path / "code_ran"
    payload = pickle.dumps({"state": _Boom(marker)})
    (saved / WEIGHTS_FILE).write_bytes(payload)
    load_error(saved)
    assert not marker.exists()
    # A torch.save() file (zip + pickle) in place of the weights is refused the same way.
    torch.save({"head.weight": _Boom(marker)}, saved / WEIGHTS_FILE)
    assert WEIGHTS_FILE in load_error(saved)
    assert not marker.exists()


def test_input_statistics_methods():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 5, (64, 64)).astype(np.float32)
    offset, scale = input_statistics(image, {"method": "percentile", "low": 1, "high": 99})
    lo, hi = np.percentile(image, [1, 99])
    assert offset == pytest.approx(lo) and scale == pytest.approx(hi - lo)
    offset, scale = input_statistics(image, {"method": "background", "foreground": {}})
    assert offset == pytest.approx(100, abs=1) and scale == pytest.approx(5, rel=0.2)
    with pytest.raises(ValueError, match="normalization"):
        input_statistics(image, {"method": "zscore"})


def test_input_statistics_of_a_large_image_uses_a_subsample(monkeypatch):
    from cellmixer.engine import _normalization

    rng = np.random.default_rng(0)
    image = rng.normal(100, 5, (300, 400)).astype(np.float32)
    image[100:150, 100:200] += rng.normal(0, 60, (50, 100)).astype(np.float32)
    exact = input_statistics(image, {"method": "background", "foreground": {}})
    monkeypatch.setattr(_normalization, "MAX_STATS_PIXELS", image.size // 4)  # force the sub-sampled path
    sampled = input_statistics(image, {"method": "background", "foreground": {}})
    assert sampled[0] == pytest.approx(exact[0], abs=0.5)
    assert sampled[1] == pytest.approx(exact[1], rel=0.15)
