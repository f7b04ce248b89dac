"""Where the network runs and in which arithmetic: ``resolve_device``, ``resolve_precision``, the
``--device`` / ``--precision`` options of every train, predict and evaluate command, and models and
checkpoints that are device-independent (CPU tensors on disk).

This machine has no GPU: the choice of ``auto`` on CUDA and MPS machines is checked with the torch
availability functions patched (only the choice: no tensor is moved), and every command must refuse
``--device cuda`` with one line, exit status 2, before it writes anything.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from safetensors.torch import load_file

import cellmixer
from cellmixer import CellmixerError, SegmentationModel
from cellmixer.cli import main
from cellmixer.demo import synthetic_culture
from cellmixer.engine import (
    autocast,
    bfloat16_supported,
    describe_device,
    module_device,
    resolve_device,
    resolve_precision,
    to_device,
)

from .test_centroids import cells_image
from .test_cli import assert_one_line_error
from .test_nuclei import synthetic_nuclei
from .test_typed_training import write_coco

CPU = torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


HAS_ACCELERATOR = torch.cuda.is_available() or _mps_available()
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here: nothing to refuse")
needs_cpu_only = pytest.mark.skipif(HAS_ACCELERATOR, reason="a GPU is available: 'auto' is not the CPU here")


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch believes it has one CUDA GPU (no CUDA call is made: only the choice is checked)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.fixture
def fake_mps(monkeypatch):
    """No CUDA, but Apple's MPS backend reports itself available."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)


# ------------------------------------------------------------------------------------------ resolve_device
@needs_cpu_only
def test_auto_is_the_cpu_on_this_machine(capsys):
    assert resolve_device("auto") == CPU
    assert resolve_device(None) == CPU
    assert resolve_device(" AUTO ") == CPU
    capsys.readouterr()
    assert resolve_device("auto", announce=True) == CPU
    err = capsys.readouterr().err
    assert err.startswith("device: cpu (") and "--device auto" in err


def test_auto_prefers_cuda_then_mps(fake_cuda, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # CUDA wins over MPS
    assert resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)  # the current GPU, not always the first
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda", 1)


def test_auto_picks_mps_without_cuda(fake_mps):
    assert resolve_device("auto") == torch.device("mps")
    assert resolve_device("mps") == torch.device("mps")


def test_explicit_devices_with_a_gpu(fake_cuda):
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device(torch.device("cuda", 0)) == torch.device("cuda", 0)
    with pytest.raises(CellmixerError, match=r"^--device cuda:3: this machine has 1 CUDA GPU") as info:
        resolve_device("cuda:3")
    assert "\n" not in str(info.value)


def test_cpu_is_the_cpu():
    assert resolve_device("cpu") == CPU
    assert resolve_device("cpu:1") == CPU and resolve_device(" CPU ") == CPU  # one CPU device
    assert resolve_device("CPU") == CPU
    assert resolve_device(CPU) == CPU
    assert describe_device(CPU).startswith("cpu (") and "threads" in describe_device(CPU)


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", "", "cpu:zero", "xla", "meta"])
def test_unknown_devices_are_refused(name):
    with pytest.raises(CellmixerError) as info:
        resolve_device(name)
    message = str(info.value)
    assert message.startswith(f"--device {name}: unknown device") and "\n" not in message
    assert "auto, cpu, cuda, cuda:N or mps" in message


@needs_no_cuda
@pytest.mark.parametrize("name, needle", [("cuda", "no CUDA GPU"), ("cuda:0", "no CUDA GPU"),
                                          ("cuda:3", "no CUDA GPU"), ("CUDA", "no CUDA GPU")])
def test_missing_cuda_is_refused(name, needle):
    with pytest.raises(CellmixerError) as info:
        resolve_device(name)
    message = str(info.value)
    assert message.startswith(f"--device {name}") and needle in message and "\n" not in message


@pytest.mark.skipif(_mps_available(), reason="MPS is available here")
def test_missing_mps_is_refused():
    with pytest.raises(CellmixerError, match=r"^--device mps: .*MPS"):
        resolve_device("mps")


def test_module_device_and_to_device():
    net = torch.nn.Conv2d(1, 2, 3)
    assert module_device(net) == CPU
    assert module_device(torch.nn.ReLU()) == CPU  # no parameters
    array = np.zeros((2, 1, 8, 8), np.float32)
    tensor = to_device(array, CPU, channels_last=True)
    assert tensor.device == CPU and tensor.is_contiguous(memory_format=torch.channels_last)
    assert np.shares_memory(to_device(array, CPU).numpy(), array)  # the CPU needs no copy


# ------------------------------------------------------------------------------------------ precision
def test_auto_precision_on_the_cpu_follows_native_bfloat16(monkeypatch):
    assert resolve_precision("auto", "cpu") == ("bf16" if bfloat16_supported() else "fp32")
    import cellmixer.engine._device as device_module

    monkeypatch.setattr(device_module, "bfloat16_supported", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(device_module, "bfloat16_supported", lambda: True)
    assert resolve_precision("auto", CPU) == "bf16"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_explicit_precisions_on_the_cpu(precision):
    assert resolve_precision(precision, "cpu") == precision


def test_fp16_on_the_cpu_and_unknown_precisions_are_refused():
    with pytest.raises(CellmixerError, match=r"^--precision fp16: .*CPU"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(CellmixerError, match=r"^--precision fp8: choose one of auto, bf16, fp16, fp32"):
        resolve_precision("fp8", "cpu")


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_precision_on_cuda(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_precision("auto", "cuda:0") == expected
    assert resolve_precision("auto", torch.device("cuda", 0)) == expected
    assert resolve_precision("fp16", "cuda") == "fp16"  # float16 is for GPUs: allowed there


def test_auto_precision_on_mps():
    assert resolve_precision("auto", "mps") == "fp16"


def test_autocast_runs_the_network_in_the_resolved_precision():
    conv = torch.nn.Conv2d(1, 2, 3)
    x = torch.randn(1, 1, 8, 8)
    with autocast("fp32", "cpu"):
        assert conv(x).dtype == torch.float32
    with autocast("bf16", "cpu"):
        assert conv(x).dtype == torch.bfloat16
    with autocast("auto", "cpu"):
        assert conv(x).dtype == (torch.bfloat16 if bfloat16_supported() else torch.float32)
    assert conv.weight.dtype == torch.float32  # weights stay float32
    with pytest.raises(CellmixerError, match="--precision fp16"):
        autocast("fp16", "cpu")


# ------------------------------------------------------------------------------------------ the command line
TINY_CLI = ["--iterations", "4", "--batch-size", "2", "--crop-size", "32", "--width", "4", "--depth", "2",
            "--threads", "1", "-q"]
DEMO_FOREGROUND_CLI = ["--threshold", "otsu", "--sigma-pre", "1", "--sigma-post", "1", "--erosion-size", "9"]


def _main_quietly(argv) -> tuple[int, str, str]:
    """``main(argv)`` with its stdout and stderr captured (for module-scoped fixtures, without capsys)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, culture_dir, annotated_dir) -> dict:
    """Small inputs of every family: cultures, annotated cultures, a field, nuclei, COCO, cells with points."""
    root = tmp_path_factory.mktemp("device_inputs")
    field, _, _ = synthetic_culture(["roundcell", "spindle"], shape=(90, 110), seed=8)
    tifffile.imwrite(root / "field.tif", field)
    (root / "nuclei").mkdir()
    for i in range(3):
        tifffile.imwrite(root / "nuclei" / f"n{i}.tif", synthetic_nuclei(seed=i)[0])
    coco = write_coco(root / "coco", per_type=2, shape=(64, 72))
    rows = ["image,x,y"]
    (root / "cells").mkdir()
    for i in range(2):
        image, _, centres = cells_image(seed=10 + i)
        tifffile.imwrite(root / "cells" / f"field{i}.tif", image)
        rows += [f"field{i}.tif,{x:.2f},{y:.2f}" for y, x in centres]
    (root / "points.csv").write_text("\n".join(rows) + "\n")
    return {"cultures": culture_dir, "annotated": annotated_dir, "field": root / "field.tif",
            "nuclei": root / "nuclei", "coco": coco, "cells": root / "cells", "points": root / "points.csv"}


# argv of each command with the option, without --device; ``out`` is its output folder.
def _train_argv(inputs, out):
    return ["train", inputs["cultures"], "-o", out, *TINY_CLI, *DEMO_FOREGROUND_CLI]


def _nuclei_train_argv(inputs, out):
    return ["nuclei", "train", inputs["nuclei"], "-o", out, *TINY_CLI, "--diameter", "8", "30",
            "--checkpoint-every", "2"]


def _typed_train_argv(inputs, out):
    return ["typed", "train", inputs["coco"], "-o", out, *TINY_CLI, "--class-from", "prefix",
            "--checkpoint-every", "2", "--validation-fraction", "0"]


def _centroids_train_argv(inputs, out):
    return ["centroids", "train", inputs["cells"], "--points", inputs["points"], "-o", out, *TINY_CLI,
            "--crop-size", "48", "--sigma", "3"]


TRAIN_ARGV = {"train": _train_argv, "nuclei train": _nuclei_train_argv, "typed train": _typed_train_argv,
              "centroids train": _centroids_train_argv}


@pytest.fixture(scope="module")
def cli_models(tmp_path_factory, inputs) -> dict:
    """Every family's tiny model, trained through the command line with ``--device cpu``:
    command -> (exit status, stderr, model folder)."""
    root = tmp_path_factory.mktemp("device_models")
    trained = {}
    for command, argv in TRAIN_ARGV.items():
        folder = root / command.replace(" ", "_")
        status, _, err = _main_quietly([*argv(inputs, folder), "--device", "cpu"])
        trained[command] = (status, err, folder)
    return trained


def _model(cli_models, command) -> Path:
    status, err, folder = cli_models[command]
    assert status == 0, f"`cellmixer {command} --device cpu` failed: {err}"
    return folder


PREDICT_ARGV = {
    "predict": lambda inputs, models, out: ["predict", _model(models, "train"), inputs["field"], "-o", out, "-q"],
    "evaluate": lambda inputs, models, out: ["evaluate", _model(models, "train"), "--data", inputs["annotated"],
                                             "--artificial", "2", "-o", out, "-q"],
    "nuclei predict": lambda inputs, models, out: ["nuclei", "predict", _model(models, "nuclei train"),
                                                   inputs["nuclei"], "-o", out, "-q"],
    "typed predict": lambda inputs, models, out: ["typed", "predict", _model(models, "typed train"),
                                                  inputs["coco"].parent, "--pattern", "*.tif", "-o", out, "-q"],
    "centroids predict": lambda inputs, models, out: ["centroids", "predict", _model(models, "centroids train"),
                                                      inputs["cells"], "--window", "32", "-o", out, "-q"],
}
# Every command that has --device, and the file each writes on success.
EXPECTED_FILE = {"train": "weights.safetensors", "nuclei train": "weights.safetensors",
                 "typed train": "weights.safetensors", "centroids train": "weights.safetensors",
                 "predict": "field_labels.tif", "evaluate": "evaluation.json", "nuclei predict": "n0_labels.tif",
                 "typed predict": "coco_results.json", "centroids predict": "field0_labels.tif"}


def _argv(command, inputs, cli_models, out):
    if command in TRAIN_ARGV:
        return TRAIN_ARGV[command](inputs, out)
    return PREDICT_ARGV[command](inputs, cli_models, out)


def test_every_command_with_the_option_is_listed():
    """The parametrization below covers every train, predict and evaluate command that has --device."""
    from cellmixer.cli import build_parser

    def walk(parser, prefix=()):
        for action in parser._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                for name, sub in action.choices.items():
                    yield from walk(sub, (*prefix, name))
        if any("--device" in a.option_strings for a in parser._actions):
            yield " ".join(prefix)

    assert set(walk(build_parser())) == set(EXPECTED_FILE)


@pytest.mark.parametrize("command", list(TRAIN_ARGV))
def test_cli_trains_on_the_cpu(cli_models, command):
    folder = _model(cli_models, command)
    model = SegmentationModel.load(folder, device="cpu")
    assert model.device == CPU
    assert (folder / "checkpoint" / "state.safetensors").is_file()


@pytest.mark.parametrize("command", list(PREDICT_ARGV))
def test_cli_predicts_and_evaluates_on_the_cpu(inputs, cli_models, command, tmp_path, capsys):
    out = tmp_path / "out"
    capsys.readouterr()
    status = main([str(a) for a in [*PREDICT_ARGV[command](inputs, cli_models, out), "--device", "cpu"]])
    _, err = capsys.readouterr()
    assert status == 0, err
    assert (out / EXPECTED_FILE[command]).is_file()


@needs_no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
@pytest.mark.parametrize("command", list(EXPECTED_FILE))
def test_cli_refuses_a_missing_gpu_before_writing(inputs, cli_models, command, device, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [str(a) for a in [*_argv(command, inputs, cli_models, out), "--device", device]]
    capsys.readouterr()
    status = main(argv)
    _, err = capsys.readouterr()
    assert_one_line_error(status, err, f"--device {device}", "no CUDA GPU", f"cellmixer {command}: error: ")
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


@pytest.mark.parametrize("command", ["train", "predict", "nuclei train", "centroids predict"])
def test_cli_refuses_an_unknown_device(inputs, cli_models, command, tmp_path, capsys):
    out = tmp_path / "out"
    capsys.readouterr()
    status = main([str(a) for a in [*_argv(command, inputs, cli_models, out), "--device", "tpu"]])
    assert_one_line_error(status, capsys.readouterr().err, "--device tpu", "unknown device")
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("command", list(TRAIN_ARGV))
def test_cli_refuses_fp16_training_on_the_cpu_before_writing(inputs, command, tmp_path, capsys):
    out = tmp_path / "out"
    capsys.readouterr()
    status = main([str(a) for a in [*TRAIN_ARGV[command](inputs, out), "--device", "cpu", "--precision", "fp16"]])
    assert_one_line_error(status, capsys.readouterr().err, "--precision fp16")
    assert not out.exists() or not any(out.iterdir())


# ------------------------------------------------------------------------------------------ models and checkpoints
@needs_cpu_only
def test_training_on_the_cpu_equals_the_default_device(culture_dir, tmp_path, tiny):
    explicit = cellmixer.train(culture_dir, tmp_path / "cpu", device="cpu", seed=0, **tiny)
    default = cellmixer.train(culture_dir, tmp_path / "auto", seed=0, **tiny)
    assert explicit.device == CPU and default.device == CPU
    a = load_file(str(tmp_path / "cpu" / "weights.safetensors"))
    b = load_file(str(tmp_path / "auto" / "weights.safetensors"))
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # Trained for real: the weights are not the untrained network's.
    fresh = SegmentationModel.new(explicit.classes, seed=0, **tiny["model_options"]).network.state_dict()
    assert any(not torch.equal(fresh[k].cpu(), a[k]) for k in a if a[k].is_floating_point())


def test_training_refuses_a_missing_device_before_writing(culture_dir, tmp_path, tiny):
    if not torch.cuda.is_available():
        with pytest.raises(CellmixerError, match="^--device cuda"):
            cellmixer.train(culture_dir, tmp_path / "m", device="cuda", **tiny)
    with pytest.raises(CellmixerError, match="^--device tpu"):
        cellmixer.train(culture_dir, tmp_path / "m", device="tpu", **tiny)
    with pytest.raises(CellmixerError, match="^--precision fp16"):
        cellmixer.train(culture_dir, tmp_path / "m", device="cpu", precision="fp16", **tiny)
    assert not (tmp_path / "m").exists()


def test_model_loads_on_the_cpu_and_moves(trained):
    _, folder = trained
    model = SegmentationModel.load(folder, device="cpu")
    assert model.device == CPU
    assert all(p.device == CPU for p in model.network.parameters())
    assert all(b.device == CPU for b in model.network.buffers())
    assert SegmentationModel.load(folder).device == CPU  # default: the CPU
    assert model.to("cpu") is model and model.to(CPU).device == CPU
    if not HAS_ACCELERATOR:
        assert model.to("auto").device == CPU
    if not torch.cuda.is_available():
        with pytest.raises(CellmixerError, match="^--device cuda"):
            SegmentationModel.load(folder, device="cuda")
        with pytest.raises(CellmixerError, match="^--device cuda"):
            model.to("cuda")
        assert model.device == CPU  # a refused move leaves the model where it was


def test_a_model_sent_to_a_worker_lands_on_the_workers_device(trained, monkeypatch):
    """Plate mode pickles the model to dask workers: it travels as CPU tensors and takes the worker's own
    device ('auto' there) if it ran on an accelerator here, the CPU if it ran on the CPU."""
    import pickle

    _, folder = trained
    model = SegmentationModel.load(folder)
    image = np.random.default_rng(0).normal(size=(40, 50)).astype(np.float32)
    saved = pickle.dumps(model)
    assert b"cuda" not in saved
    copy = pickle.loads(saved)
    assert copy.device == CPU and copy.config == model.config and copy.folder == model.folder
    assert np.array_equal(copy.predict(image), model.predict(image))
    # Sent from a GPU: the receiver resolves 'auto' (here, with no accelerator, the CPU).
    moved = []
    monkeypatch.setattr(SegmentationModel, "device", property(lambda self: torch.device("cuda", 0)))
    monkeypatch.setattr(SegmentationModel, "to", lambda self, device: moved.append(device) or self)
    pickle.loads(pickle.dumps(model))
    assert moved == ["auto"]


def test_checkpoint_holds_cpu_tensors_equal_to_the_weights(cli_models):
    folder = _model(cli_models, "train")
    state = load_file(str(folder / "checkpoint" / "state.safetensors"))
    assert state and all(t.device == CPU for t in state.values())
    weights = load_file(str(folder / "weights.safetensors"))
    model_state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    assert model_state.keys() == weights.keys()
    for key, value in weights.items():
        assert torch.equal(model_state[key], value), key
    assert any(k.startswith("optimizer.") for k in state)  # the optimiser's moments, on the CPU too
    # The same checkpoint loads onto the CPU explicitly (safetensors names no device of its own).
    assert all(t.device == CPU for t in load_file(str(folder / "checkpoint" / "state.safetensors"),
                                                  device="cpu").values())


def test_a_gpu_checkpoint_resumes_on_the_cpu(culture_dir, tmp_path, tiny):
    import json

    folder = tmp_path / "model"
    cellmixer.train(culture_dir, folder, device="cpu", **{**tiny, "iterations": 3})
    # What the same run's checkpoint says when it was made on a GPU without bfloat16 (auto -> fp16 there).
    state = folder / "checkpoint" / "state.json"
    meta = json.loads(state.read_text())
    meta["training"]["precision"] = "fp16"
    state.write_text(json.dumps(meta))
    model = cellmixer.train(culture_dir, folder, device="cpu", precision="fp32", resume=True,
                            **{**tiny, "iterations": 5})
    assert model.config["training"]["iterations"] == 5 and model.device == CPU
    assert model.config["training"]["precision"] == "fp32"  # the CPU cannot run the stored fp16: the given one
