"""Each default is written once, in a settings dataclass: the Python signatures, the command-line
options and the range checks all come from it. And the training outline is one class: a new kind of
training is a subclass with a few hooks."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields

import numpy as np
import pytest
import torch

from cellmixer import CellmixerError, train, train_centroids, train_nuclei, train_typed
from cellmixer._settings import default_of, setting, setting_like, spec, takes_settings
from cellmixer.cli import build_parser, main
from cellmixer.cli._options import settings_args
from cellmixer.engine import METHODS, Method, OptimizationSettings, SegmentationModel, Training, load_model
from cellmixer.methods.cellmixer import TrainingConfig
from cellmixer.methods.centroids import CentroidTrainingConfig
from cellmixer.methods.nuclei import NucleiTrainingConfig
from cellmixer.methods.typed import TypedTrainingConfig
from cellmixer.ops import ClassicalSettings, ForegroundParams, extract_foreground

TRAININGS = [(train, TrainingConfig), (train_nuclei, NucleiTrainingConfig), (train_typed, TypedTrainingConfig),
             (train_centroids, CentroidTrainingConfig)]


@pytest.mark.parametrize("function, config", TRAININGS, ids=lambda v: getattr(v, "__name__", ""))
def test_signature_defaults_are_the_settings_defaults(function, config):
    parameters = inspect.signature(function).parameters
    for f in fields(config):
        if f.name in ("labels", "classical_options", "label_options", "source", "class_from"):
            continue  # set from other parameters of the function (e.g. labels=None: decided by label_dir)
        assert parameters[f.name].default == default_of(f), f.name
    with pytest.raises(TypeError, match="unexpected keyword argument 'iteratons'"):
        function("x", "y", iteratons=5)


def test_extract_foreground_signature_is_its_settings():
    parameters = inspect.signature(extract_foreground).parameters
    assert {f.name: default_of(f) for f in fields(ForegroundParams)} == {
        name: p.default for name, p in parameters.items() if name != "image"}


@pytest.mark.parametrize("argv, config", [
    (["train", "data", "-o", "m"], TrainingConfig),
    (["nuclei", "train", "images", "-o", "m"], NucleiTrainingConfig),
    (["typed", "train", "a.json", "-o", "m"], TypedTrainingConfig),
    (["centroids", "train", "images", "-o", "m", "--points", "p.csv"], CentroidTrainingConfig),
])
def test_command_line_defaults_are_the_settings_defaults(argv, config):
    args = build_parser().parse_args(argv)
    given = settings_args(args, config)
    shown = {name: value for name, value in given.items()}
    for f in fields(config):
        if f.name in given and spec(f).get("cli"):
            expected = default_of(f)
            assert shown[f.name] == (tuple(expected) if isinstance(expected, list) else expected), f.name
    # every setting that has an option is offered by the command (typed cells and cell centres train
    # U-Nets only: no pretrained encoder)
    offered = {f.name for f in fields(config) if spec(f).get("cli")}
    if config in (TypedTrainingConfig, CentroidTrainingConfig):
        offered -= {"pretrained", "freeze_encoder", "encoder_lr_scale"}
    assert offered <= set(given), offered - set(given)


def test_classical_defaults_have_one_home():
    for argv in (["nuclei", "label", "x", "-o", "o"], ["centroids", "label", "x", "-o", "o"]):
        args = build_parser().parse_args(argv)
        assert args.diameter_range == ClassicalSettings.diameter_range
        assert args.method == ClassicalSettings.method
    assert inspect.signature(train_nuclei).parameters["diameter_range"].default == ClassicalSettings.diameter_range


@pytest.mark.parametrize("option, value, message", [
    ("momentum", -1.0, "--momentum -1.0: must be in [0, 1)"),
    ("learning_rate", float("inf"), "--learning-rate inf: must be a finite number"),
    ("iterations", 0, "--iterations 0: must be at least 1"),
    ("lam", 1.0, "--lam 1.0: must be in (0, 1)"),
    ("optimizer", "lbfgs", "--optimizer lbfgs: choose one of sgd, adam"),
    ("scale", 10.0, "--scale 10.0: give auto or a factor between 0.05 and 4"),
])
def test_settings_are_checked_once_for_the_api(culture_dir, tmp_path, option, value, message):
    with pytest.raises(CellmixerError) as caught:
        train(culture_dir, tmp_path / "m", progress=False, **{option: value})
    assert str(caught.value) == message + "."
    assert not (tmp_path / "m").exists()  # refused before anything is written


@pytest.mark.parametrize("argv, needle", [
    (["--momentum", "-1"], "--momentum -1.0: must be in [0, 1)"),
    (["--sigma-pre", "-1"], "--sigma-pre -1.0: must be at least 0"),
    (["--erosion-size", "0"], "--erosion-size 0: must be at least 1"),
    (["--threshold", "nan"], "--threshold nan: choose one of"),
])
def test_settings_are_checked_once_for_the_command_line(culture_dir, tmp_path, capsys, argv, needle):
    status = main(["train", str(culture_dir), "-o", str(tmp_path / "m"), "-q", *argv])
    err = capsys.readouterr().err
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and needle in err, err


def test_setting_like_keeps_help_and_range():
    @dataclass
    class Longer(OptimizationSettings):
        iterations: int = setting_like(OptimizationSettings, "iterations", 5000)

    f = next(f for f in fields(Longer) if f.name == "iterations")
    assert default_of(f) == 5000 and spec(f)["at_least"] == 1 and spec(f)["help"] == "optimisation steps"
    with pytest.raises(CellmixerError, match="--iterations 0"):
        Longer(iterations=0).validate()


def test_takes_settings_refuses_what_is_neither():
    @dataclass
    class Window:
        size: int = setting(3, "side", at_least=1)

    @takes_settings(Window)
    def smooth(image, *, mode="reflect", **settings):
        return Window(**settings).size, mode

    assert str(inspect.signature(smooth)) == "(image, *, mode='reflect', size: 'int' = 3)"
    assert smooth(None, size=5) == (5, "reflect")
    with pytest.raises(TypeError, match="'sise'"):
        smooth(None, sise=5)


# --------------------------------------------------------------------------- a fifth method, as a test
@dataclass
class MeanIntensityConfig(OptimizationSettings):
    iterations: int = setting_like(OptimizationSettings, "iterations", 4)
    target: float = setting(0.5, "the value every pixel should get", at_least=0)


class MeanIntensity(Method):
    name, task, model_title, train_command = "mean", "mean", "mean model", "cellmixer mean train"
    config = MeanIntensityConfig


class MeanIntensityTraining(Training):
    """A whole new training in a few lines: the outline does the rest."""

    task, description, loss_name = "mean", "training (mean)", "MSE"

    def new_model(self):
        return SegmentationModel.new([], width=4, depth=1, normalization={"method": "percentile"})

    def objective(self, model):
        def next_batch(rng, batch_size):
            return rng.normal(size=(batch_size, 1, 16, 16)).astype(np.float32), np.zeros((batch_size, 16, 16),
                                                                                        np.float32)

        def loss_fn(output, _):
            return torch.mean((output[:, 0].float() - self.config.target) ** 2)

        return next_batch, loss_fn, None


@pytest.fixture
def mean_method():
    METHODS["mean"] = MeanIntensity
    yield MeanIntensity
    del METHODS["mean"]


def test_a_new_method_is_a_few_hooks(mean_method, tmp_path, trained):
    run = dict(device="cpu", threads=1, progress=False)
    model = MeanIntensityTraining(MeanIntensityConfig(checkpoint_every=2), tmp_path / "m", **run).fit()
    assert model.config["task"] == "mean" and model.config["training"]["iterations"] == 4
    assert (tmp_path / "m" / "training_curve.png").is_file() and (tmp_path / "m" / "checkpoint").is_dir()
    loaded = load_model(tmp_path / "m", methods=("mean",))
    assert loaded.config["training"]["target"] == 0.5
    # resume extends the run; a model of another kind is refused by name
    longer = MeanIntensityTraining(MeanIntensityConfig(iterations=6), tmp_path / "m", resume=True, **run).fit()
    assert longer.config["training"]["iterations"] == 6
    with pytest.raises(CellmixerError, match="a mean model, not a cell-type model.*`cellmixer train`"):
        load_model(tmp_path / "m", methods=("cellmixer",))
    with pytest.raises(CellmixerError, match="the training of a cell-type model; resume it with `cellmixer train"):
        MeanIntensityTraining(MeanIntensityConfig(), trained[1], resume=True, **run).fit()
    with pytest.raises(CellmixerError, match="already holds a model"):
        MeanIntensityTraining(MeanIntensityConfig(), tmp_path / "m", **run).fit()
