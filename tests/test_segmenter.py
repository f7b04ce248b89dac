"""The DINOv2 ViT encoder, the Segmenter and linear decoders, DINOv2 weights in both namings, and the
ViT models in training, model folders, sliding-window prediction and the command line.

Every network here is tiny (width 24, one block, 28-pixel inputs): seconds on one thread.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cellmixer._errors import CellmixerError
from cellmixer.cli import main
from cellmixer.engine import Optimization, OptimizationSettings, SegmentationModel
from cellmixer.methods.cellmixer import train
from cellmixer.models import (
    VIT_SIZES,
    Segmenter,
    SwiGLUFFN,
    VisionTransformer,
    ViTLinear,
    architecture_options,
    dinov2_state_dict,
    dinov2_url,
    load_dinov2_weights,
    load_pretrained_encoder,
)

TINY_VIT = dict(embed_dim=24, num_blocks=1, num_heads=2, input_size=28)
TINY_SEGMENTER = dict(TINY_VIT, decoder_layers=1)


def tiny_encoder(seed=0, **options) -> VisionTransformer:
    torch.manual_seed(seed)
    settings = dict(embed_dim=24, num_blocks=2, num_heads=2, registers=0, input_size=42) | options
    encoder = VisionTransformer(**settings).eval()
    with torch.no_grad():  # LayerScale values of their own, so a mix-up of ls1 and ls2 would show
        for block in encoder.blocks:
            block.ls1.gamma.normal_()
            block.ls2.gamma.normal_()
    return encoder


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(CellmixerError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message, message
    return message


# ------------------------------------------------------------------------------------------------ encoder
def test_dinov2_sizes_and_parameter_count():
    assert {s: (v["embed_dim"], v["num_blocks"], v["num_heads"]) for s, v in VIT_SIZES.items()} == {
        "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16), "giant": (1536, 40, 24)}
    # The official dinov2_vits14 has 22,056,576 parameters; 384 of them are the (unused) mask token.
    assert sum(p.numel() for p in VisionTransformer(**VIT_SIZES["small"]).parameters()) == 22_056_576 - 384
    # ViT-g's SwiGLU feed-forward: hidden width 2/3 of 4 x 1536, rounded up to 8 = 4096.
    assert SwiGLUFFN(1536, 4 * 1536).w3.in_features == 4096
    assert VIT_SIZES["giant"]["ffn"] == "swiglu"


@pytest.mark.parametrize("size", [(1, 1), (13, 29), (30, 45), (56, 56), (15, 14)])
@pytest.mark.parametrize("architecture", [Segmenter, ViTLinear])
def test_any_input_size_is_padded_and_cropped_back(architecture, size):
    net = architecture(1, 3, **TINY_VIT).eval()
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (2, 3, *size)
    assert net.size_multiple == 14 and net.input_size == 28
    if size == (30, 45):  # padding, not resizing: the same as the mirrored 42 x 56 input, cropped
        padded = F.pad(x, (0, 11, 0, 12), mode="reflect")
        with torch.no_grad():
            np.testing.assert_allclose(net(padded)[..., :30, :45], out, atol=1e-5)


def test_position_embeddings_interpolated_to_other_grids():
    encoder = tiny_encoder(input_size=56)  # a stored 4 x 4 grid
    assert encoder.grid_size == 4
    assert encoder.position_embeddings(4, 4) is encoder.pos_embed
    with torch.no_grad():  # a linear ramp along y, constant along x
        ramp = torch.arange(4.0).reshape(4, 1, 1).expand(4, 4, 24).reshape(1, 16, 24)
        encoder.pos_embed[:, 1:] = ramp
    pos = encoder.position_embeddings(7, 3)
    assert pos.shape == (1, 1 + 7 * 3, 24)
    assert torch.equal(pos[:, 0], encoder.pos_embed[:, 0])  # the class token's embedding is not resized
    grid = pos[0, 1:, 0].reshape(7, 3)
    assert torch.allclose(grid, grid[:, :1].expand(7, 3), atol=1e-5)  # still constant along x
    assert torch.all(grid[1:, 0] > grid[:-1, 0])  # still increasing along y, over the same range
    assert grid[0, 0] < 0.5 and grid[-1, 0] > 2.5
    with torch.no_grad():  # the encoder runs at every multiple of 14
        for side in (14, 28, 70):
            assert encoder(torch.randn(1, 3, side, 42)).shape == (1, side // 14 * 3, 24)
    with pytest.raises(ValueError, match="multiples of 14"):
        encoder(torch.randn(1, 3, 30, 42))


def test_register_tokens_are_dropped_from_the_output():
    encoder = tiny_encoder(registers=4)
    assert encoder.register_tokens.shape == (1, 4, 24)
    with torch.no_grad():
        assert encoder(torch.randn(2, 3, 42, 28)).shape == (2, 6, 24)


def test_segmenter_masks_are_normalised_products_of_class_and_patch_embeddings():
    net = Segmenter(1, 4, **TINY_SEGMENTER).eval()
    decoder = net.decoder
    assert decoder.cls_emb.shape == (1, 4, 24)
    with torch.no_grad():
        masks = decoder(torch.randn(2, 9, 24), 3, 3)
    assert masks.shape == (2, 4, 3, 3)
    # before the mask LayerNorm the products of unit vectors are cosines; after it, each patch's
    # class scores have mean 0 over the classes
    np.testing.assert_allclose(masks.mean(dim=1), 0, atol=1e-5)


# ------------------------------------------------------------------------------------------------ weights
def hugging_face_names(state: dict) -> dict:
    """An encoder's state dict in the Hugging Face Dinov2Model naming, written out independently."""
    out = {"embeddings.mask_token": torch.zeros(1, state["cls_token"].shape[-1])}
    for key, value in state.items():
        if key == "cls_token":
            out["embeddings.cls_token"] = value
        elif key == "pos_embed":
            out["embeddings.position_embeddings"] = value
        elif key == "register_tokens":
            out["embeddings.register_tokens"] = value
        elif key.startswith("patch_embed.proj."):
            out["embeddings.patch_embeddings.projection." + key.split(".")[-1]] = value
        elif key.startswith("norm."):
            out["layernorm." + key.split(".")[-1]] = value
        else:
            n, rest = re.match(r"blocks\.(\d+)\.(.*)", key).groups()
            layer = f"encoder.layer.{n}."
            if rest.startswith("attn.qkv."):
                kind = rest.split(".")[-1]
                for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                    out[f"{layer}attention.attention.{name}.{kind}"] = part.clone()
            elif rest.startswith("attn.proj."):
                out[f"{layer}attention.output.dense.{rest.split('.')[-1]}"] = value
            elif rest.startswith(("ls1", "ls2")):
                out[f"{layer}layer_scale{rest[2]}.lambda1"] = value
            elif rest.startswith("mlp.w12."):
                out[f"{layer}mlp.weights_in.{rest.split('.')[-1]}"] = value
            elif rest.startswith("mlp.w3."):
                out[f"{layer}mlp.weights_out.{rest.split('.')[-1]}"] = value
            else:  # norm1, norm2, mlp.fc1, mlp.fc2
                out[layer + rest] = value
    return out


def official_names(state: dict) -> dict:
    """The facebookresearch/dinov2 naming: the encoder's own, plus the mask token."""
    return {**state, "mask_token": torch.zeros(1, state["cls_token"].shape[-1])}


@pytest.mark.parametrize("naming", ["official", "hugging face"])
@pytest.mark.parametrize("variant", [dict(), dict(registers=4, ffn="swiglu")])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_in_both_namings_give_identical_outputs(tmp_path, naming, variant, suffix):
    source = tiny_encoder(seed=1, **variant)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state = official_names(state) if naming == "official" else hugging_face_names(state)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    target = tiny_encoder(seed=2, **variant)
    x = torch.randn(2, 3, 42, 56)
    with torch.no_grad():
        assert not torch.allclose(target(x), source(x))
        info = load_dinov2_weights(target, path)
        assert torch.equal(target(x), source(x))
    assert info["naming"] == naming


def test_wrappers_and_chunked_blocks_are_undone():
    state = tiny_encoder().state_dict()
    chunked = {re.sub(r"^blocks\.(\d+)\.", lambda m: f"blocks.{int(m.group(1)) // 2}.{m.group(1)}.", k): v
               for k, v in state.items()}
    assert "blocks.0.1.norm1.weight" in chunked
    assert dinov2_state_dict({"backbone." + k: v for k, v in chunked.items()}).keys() == state.keys()
    assert dinov2_state_dict({"dinov2." + k: v for k, v in hugging_face_names(state).items()}).keys() == state.keys()


def test_position_embeddings_of_another_grid_are_resized(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(tiny_encoder(input_size=70).state_dict(), path)  # 5 x 5 grid, like 518 -> 37 x 37
    encoder = tiny_encoder(seed=3, input_size=42)
    load_dinov2_weights(encoder, path)
    assert encoder.pos_embed.shape == (1, 10, 24)


def test_download_addresses_are_the_official_ones():
    official = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitg14/dinov2_vitg14_pretrain.pth"
    assert dinov2_url("dinov2_vitg14") == official
    assert dinov2_url("facebook/dinov2-with-registers-small").endswith("dinov2-with-registers-small/resolve/main/"
                                                                      "model.safetensors")


def test_bad_weights(tmp_path):
    encoder = tiny_encoder()
    assert "no such file, and not a known DINOv2 name" in one_line_error(load_dinov2_weights, encoder,
                                                                         tmp_path / "missing.pth")
    other = tmp_path / "base.pth"
    torch.save(tiny_encoder(embed_dim=32).state_dict(), other)
    message = one_line_error(load_dinov2_weights, encoder, other)
    assert "width 32" in message and "width 24" in message
    deeper = tmp_path / "deeper.pth"
    torch.save(tiny_encoder(num_blocks=3).state_dict(), deeper)
    assert "3 blocks" in one_line_error(load_dinov2_weights, encoder, deeper)
    registers = tmp_path / "reg.pth"
    torch.save(tiny_encoder(registers=4).state_dict(), registers)
    assert "4 registers" in one_line_error(load_dinov2_weights, encoder, registers)
    good = tmp_path / "good.pth"
    torch.save(encoder.state_dict(), good)
    raw = good.read_bytes()
    for name, content in (("truncated.pth", raw[: len(raw) // 2]), ("noise.pth", b"\x00garbage" * 50),
                          ("noise.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json"),
                          ("empty.pth", b"")):
        (tmp_path / name).write_bytes(content)
        assert "corrupt" in one_line_error(load_dinov2_weights, encoder, tmp_path / name)
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    assert "not DINOv2 weights" in one_line_error(load_dinov2_weights, encoder, tmp_path / "other.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    assert "no tensors" in one_line_error(load_dinov2_weights, encoder, tmp_path / "list.pth")

    class Code:  # a pickle that would run code is refused by weights_only
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"cls_token": Code()}, tmp_path / "code.pth")
    assert "corrupt" in one_line_error(load_dinov2_weights, encoder, tmp_path / "code.pth")
    from cellmixer.models import UNet

    assert "no pretrained encoder" in one_line_error(load_pretrained_encoder, UNet(width=4, depth=1), good)


# ------------------------------------------------------------------------------------------------ models
def test_registry_and_model_folder_round_trip(tmp_path):
    assert {"size", "registers", "input_size", "decoder_layers"} <= set(architecture_options("segmenter"))
    assert "decoder_layers" not in architecture_options("vit-linear")
    for name in ("segmenter", "vit-linear"):
        model = SegmentationModel.new(["a", "b"], architecture=name, seed=4, **TINY_VIT)
        assert model.tile_size == 28
        model.save(tmp_path / name)
        loaded = SegmentationModel.load(tmp_path / name)
        assert loaded.config["architecture"]["name"] == name
        image = np.random.default_rng(0).normal(100, 10, size=(61, 47)).astype(np.float32)
        labels_a, probs_a = model.predict(image, probabilities=True)
        labels_b, probs_b = loaded.predict(image, probabilities=True)
        np.testing.assert_array_equal(probs_a, probs_b)
        np.testing.assert_array_equal(labels_a, labels_b)
    config = json.loads((tmp_path / "segmenter" / "config.json").read_text())
    assert config["architecture"]["embed_dim"] == 24 and config["architecture"]["size"] == "small"
    with pytest.raises(CellmixerError, match="input_size must be a multiple of 14"):
        SegmentationModel.new(["a", "b"], architecture="segmenter", input_size=30)
    with pytest.raises(CellmixerError, match="--vit-size huge: choose one of small, base"):
        SegmentationModel.new(["a", "b"], architecture="segmenter", size="huge")
    with pytest.raises(CellmixerError, match="no option.*width"):
        SegmentationModel.new(["a", "b"], architecture="segmenter", width=4)


def test_sliding_window_uses_the_input_size():
    model = SegmentationModel.new(["a", "b"], architecture="segmenter", seed=5, **TINY_SEGMENTER)
    image = np.random.default_rng(1).normal(100, 10, size=(75, 90)).astype(np.float32)
    labels, probs = model.predict(image, probabilities=True)  # tile 'auto' = 28: 2-pixel tiles grid of 14
    assert labels.shape == (75, 90) and probs.shape == (3, 75, 90)
    np.testing.assert_allclose(probs.sum(axis=0), 1, atol=1e-5)
    whole = model.predict(image, tile_size=None, probabilities=True)[1]
    assert np.abs(whole - probs).max() > 0  # the tiles really were 28 pixels, not the whole image


# ------------------------------------------------------------------------------------------------ training
@pytest.fixture
def vit_tiny(tiny):
    return dict(tiny, model="segmenter", model_options=dict(TINY_SEGMENTER), crop_size=28, iterations=3)


def test_train_segmenter_and_fine_tune_schedule(culture_dir, tmp_path, vit_tiny):
    model = train(culture_dir, tmp_path / "m", optimizer="adam", encoder_lr_scale=0.1, **vit_tiny)
    assert model.config["architecture"]["name"] == "segmenter"
    assert model.config["training"]["encoder_lr_scale"] == 0.1
    loaded = SegmentationModel.load(tmp_path / "m")
    image = np.random.default_rng(2).normal(100, 10, size=(40, 50)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(image), model.predict(image))
    state = json.loads((tmp_path / "m" / "checkpoint" / "state.json").read_text())
    groups = state["optimizer"]["param_groups"]
    assert [g["lr_scale"] for g in groups] == [1.0, 0.1]
    assert groups[1]["lr"] == pytest.approx(0.1 * groups[0]["lr"])
    # resumed with the same groups
    again = train(culture_dir, tmp_path / "m", resume=True, **{**vit_tiny, "iterations": 4})
    assert again.config["training"]["iterations"] == 4


def test_frozen_pretrained_encoder_stays_as_loaded(culture_dir, tmp_path, vit_tiny):
    weights = SegmentationModel.new(["x"], architecture="segmenter", seed=9, **TINY_SEGMENTER).network.encoder
    path = tmp_path / "dinov2.pth"
    torch.save(hugging_face_names(weights.state_dict()), path)
    model = train(culture_dir, tmp_path / "m", pretrained=path, freeze_encoder=True, **vit_tiny)
    for key, value in weights.state_dict().items():
        assert torch.equal(model.network.encoder.state_dict()[key], value), key
    fresh = SegmentationModel.new(model.classes, architecture="segmenter", seed=0, **TINY_SEGMENTER)
    assert not torch.equal(fresh.network.decoder.cls_emb, model.network.decoder.cls_emb)  # the decoder learned
    assert model.config["training"]["pretrained"] == str(path) and model.config["training"]["freeze_encoder"]


def test_encoder_options_need_an_encoder(tmp_path):
    from cellmixer.models import UNet

    config = OptimizationSettings(freeze_encoder=True)
    assert "no pretrained encoder" in one_line_error(Optimization, UNet(width=4, depth=1), config, tmp_path, {})
    with pytest.raises(CellmixerError, match="--encoder-lr-scale 0"):
        OptimizationSettings(encoder_lr_scale=0).validate()


# ------------------------------------------------------------------------------------------------ CLI
def run_cli(capsys, *args):
    capsys.readouterr()
    status = main([str(a) for a in args])
    return (status, *capsys.readouterr())


CLI_TINY = ["--iterations", "2", "--batch-size", "2", "--crop-size", "28", "--threads", "1", "--threshold", "otsu",
            "--sigma-pre", "1", "--sigma-post", "1", "--quiet", "--model", "segmenter", "--input-size", "28",
            "--model-option", "embed_dim=24", "--model-option", "num_blocks=1", "--model-option", "num_heads=2",
            "--model-option", "decoder_layers=1"]


def test_cli_train_segmenter_then_predict(capsys, culture_dir, tmp_path):
    status, out, err = run_cli(capsys, "train", culture_dir, "-o", tmp_path / "m", *CLI_TINY, "--vit-size", "base",
                               "--registers", "4")
    assert status == 0, err
    spec = SegmentationModel.load(tmp_path / "m").config["architecture"]
    assert spec["name"] == "segmenter" and spec["size"] == "base" and spec["registers"] == 4
    assert spec["embed_dim"] == 24 and spec["decoder_layers"] == 1 and spec["input_size"] == 28
    image = next(culture_dir.glob("*/*.tif"))
    status, out, err = run_cli(capsys, "predict", tmp_path / "m", image, "-o", tmp_path / "p", "--quiet")
    assert status == 0, err
    assert (tmp_path / "p" / f"{image.stem}_labels.tif").is_file()


@pytest.mark.parametrize("extra, needle", [
    (["--width", "4"], "no option(s) width"),
    (["--pretrained", "missing.pth"], "--pretrained missing.pth: no such file"),
    (["--model-option", "decoder_layers=0"], "decoder_layers"),
    (["--encoder-lr-scale", "-1"], "--encoder-lr-scale -1"),
])
def test_cli_bad_network_options(capsys, culture_dir, tmp_path, extra, needle):
    status, _, err = run_cli(capsys, "train", culture_dir, "-o", tmp_path / "m", *CLI_TINY, *extra)
    assert status == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "m" / "weights.safetensors").exists()


def test_cli_encoder_options_with_a_unet(capsys, culture_dir, tmp_path):
    status, _, err = run_cli(capsys, "train", culture_dir, "-o", tmp_path / "m", "--width", "4", "--depth", "1",
                             "--iterations", "1", "--crop-size", "32", "--quiet", "--freeze-encoder")
    assert status == 2 and len(err.strip().splitlines()) == 1 and "--freeze-encoder" in err, err


def test_cli_nuclei_train_segmenter(capsys, tmp_path):
    import tifffile

    from cellmixer.methods.nuclei import segment_nuclei

    from .test_nuclei import synthetic_nuclei

    for i in range(3):
        tifffile.imwrite(tmp_path / f"n{i}.tif", synthetic_nuclei(shape=(64, 64), count=4, seed=i)[0])
    network = CLI_TINY[CLI_TINY.index("--model"):]
    status, _, err = run_cli(capsys, "nuclei", "train", tmp_path, "-o", tmp_path / "m", "--iterations", "2",
                             "--batch-size", "2", "--crop-size", "28", "--threads", "1", "--quiet",
                             "--diameter", "8", "30", "--checkpoint-every", "1", *network)
    assert status == 0, err
    model = SegmentationModel.load(tmp_path / "m")
    assert model.config["architecture"]["name"] == "segmenter" and model.config["task"] == "nuclei"
    labels = segment_nuclei(model, synthetic_nuclei(shape=(50, 70), seed=5)[0])
    assert labels.shape == (50, 70)
