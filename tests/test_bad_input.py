"""Bad input on every command ends with one line on stderr that names the file or option, exit status 2,
no traceback, and nothing written.

Two tables: cases generated from the declarations of the options (a value outside the range of every
numeric option of every command, a text for a number, an unknown choice), and the damaged, hostile or
mismatched files and option combinations found by a fault run (issue 17): model folders, checkpoints,
COCO files, class folders, resumed runs, a folder in use.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from cellmixer._errors import CellmixerError
from cellmixer._settings import default_of, spec
from cellmixer.cli import build_parser, main
from cellmixer.cli._main import _leaf_parsers
from cellmixer.demo import DEMO_FOREGROUND, synthetic_culture
from cellmixer.engine import SegmentationModel
from cellmixer.methods.cellmixer import train
from cellmixer.methods.centroids import DEFAULT_SEGMENTATION
from cellmixer.methods.nuclei import train_nuclei
from cellmixer.methods.typed import label_annotations

TYPES = ("epithelial", "roundcell", "spindle")
TINY = ["--iterations", "2", "--batch-size", "1", "--crop-size", "32", "--width", "2", "--depth", "1",
        "--threads", "1", "--quiet"]


def run_cli(capsys, argv):
    """``main(argv)`` in-process: (exit status, stdout, stderr); usage errors exit as argparse does."""
    capsys.readouterr()
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line(status, err, needles):
    assert status == 2, err
    assert "Traceback" not in err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("cellmixer ") and ": error: " in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def assert_error_after_notes(status, err, needles):
    """A run that started (and said what it runs with: ``cellmixer: ...`` notes) and then failed: its
    last line is the one-line error."""
    *notes, last = err.strip("\n").split("\n")
    assert all(line.startswith("cellmixer: ") for line in notes), err
    assert_one_line(status, last, needles)


def untrained(folder: Path, classes, *, task=None, architecture="unet", normalization=None, **extra) -> Path:
    model = SegmentationModel.new(classes, architecture=architecture, width=2, depth=1,
                                  normalization=normalization or {"method": "background",
                                                                  "foreground": DEMO_FOREGROUND.to_dict()})
    if task is not None:
        model.config["task"] = task
    model.config.update(extra)
    model.save(folder)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory, culture_dir, annotated_dir):
    """Valid inputs of every command (tiny), so that only the bad part of a case is bad."""
    root = tmp_path_factory.mktemp("bad_input")
    image, instances, _ = synthetic_culture(["roundcell", "spindle"], shape=(64, 64), seed=8)
    (root / "images").mkdir()
    tifffile.imwrite(root / "images" / "field.tif", image)
    (root / "truth").mkdir()
    tifffile.imwrite(root / "truth" / "field.tif", instances.astype(np.uint16))
    (root / "predictions").mkdir()
    tifffile.imwrite(root / "predictions" / "field_labels.tif", instances.astype(np.uint16))
    (root / "points.csv").write_text("image,x,y\nfield.tif,10,12\nfield.tif,40,30\n")
    coco_images = root / "coco"
    coco_images.mkdir()
    tifffile.imwrite(coco_images / "roundcell_0.tif", image)
    labels = np.unique(instances, return_inverse=True)[1].reshape(instances.shape)
    annotations = label_annotations(labels, image_id=1, category_ids=[1] * int(labels.max()))
    coco = {"images": [{"id": 1, "file_name": "roundcell_0.tif", "height": 64, "width": 64}],
            "annotations": annotations, "categories": [{"id": 1, "name": "cell"}]}
    (coco_images / "annotations.json").write_text(json.dumps(coco))
    (root / "results.json").write_text("[]")
    models = root / "models"
    untrained(models / "cellmixer", TYPES)
    untrained(models / "nuclei", ["nucleus", "separation line"], task="nuclei",
              normalization={"method": "tile", "tile_size": 32})
    untrained(models / "centroids", [], task="centroids", normalization={"method": "percentile", "low": 1.0,
                                                                        "high": 99.8},
              centroids={"sigma": 2.0, "segmentation": dict(DEFAULT_SEGMENTATION)})
    untrained(models / "typed", ["cell", "cell boundary", "a", "b"], task="typed", architecture="typed_unet",
              normalization={"method": "tile", "tile_size": 32}, types=["a", "b"])
    return dict(root=root, data=culture_dir, annotated=annotated_dir, image=root / "images" / "field.tif",
                images=root / "images", truth=root / "truth", predictions=root / "predictions",
                points=root / "points.csv", coco=coco_images / "annotations.json", results=root / "results.json",
                models=models)


# A valid command line of every command (its output goes to OUT); a bad option is added to it.
BASE = {
    "cellmixer pseudolabel": lambda w: ["pseudolabel", w["data"]],
    "cellmixer mix": lambda w: ["mix", w["data"], "-n", "1"],
    "cellmixer train": lambda w: ["train", w["data"], *TINY],
    "cellmixer predict": lambda w: ["predict", w["models"] / "cellmixer", w["image"]],
    "cellmixer evaluate": lambda w: ["evaluate", w["models"] / "cellmixer", "--data", w["annotated"],
                                     "--artificial", "0", "--no-overlays"],
    "cellmixer nuclei label": lambda w: ["nuclei", "label", w["image"]],
    "cellmixer nuclei train": lambda w: ["nuclei", "train", w["image"], "--validation", w["image"], *TINY],
    "cellmixer nuclei predict": lambda w: ["nuclei", "predict", w["models"] / "nuclei", w["image"]],
    "cellmixer nuclei evaluate": lambda w: ["nuclei", "evaluate", w["predictions"], "--truth", w["truth"]],
    "cellmixer typed train": lambda w: ["typed", "train", w["coco"], "--validation-fraction", "0", *TINY],
    "cellmixer typed predict": lambda w: ["typed", "predict", w["models"] / "typed", w["image"]],
    "cellmixer typed evaluate": lambda w: ["typed", "evaluate", w["results"], "--truth", w["coco"]],
    "cellmixer centroids label": lambda w: ["centroids", "label", w["image"], "--points", w["points"]],
    "cellmixer centroids train": lambda w: ["centroids", "train", w["image"], "--points", w["points"], *TINY],
    "cellmixer centroids predict": lambda w: ["centroids", "predict", w["models"] / "centroids", w["image"]],
    "cellmixer centroids evaluate": lambda w: ["centroids", "evaluate", w["predictions"], "--truth", w["truth"]],
    "cellmixer demo": lambda w: ["demo", "--iterations", "1"],
}


def _number(value, kind):
    return str(int(value)) if kind is int else repr(float(value))


def bad_values(field) -> list[str]:
    """Values just outside the declared range of a numeric setting, and values of the wrong kind."""
    s = spec(field)
    default = default_of(field)
    kind = type(default[0]) if isinstance(default, (tuple, list)) else (s.get("kind") or type(default))
    if s.get("choices") is not None:
        return ["bogus"]
    if kind not in (int, float) or s.get("check") is not None:
        return []
    step = 1 if kind is int else 0.5
    values = []
    if s.get("at_least") is not None:
        values.append(_number(s["at_least"] - step, kind))
    if s.get("above") is not None:
        values.append(_number(s["above"], kind))
    if s.get("at_most") is not None:
        values.append(_number(s["at_most"] + step, kind))
    if s.get("below") is not None:
        values.append(_number(s["below"], kind))
    values.append("nan" if kind is float else "2.5")
    values.append("many")
    return values


def generated_cases():
    for leaf in _leaf_parsers(build_parser()):
        for action in leaf._actions:
            field = getattr(action, "setting_field", None)
            if field is None or action.nargs == 0:
                continue
            count = action.nargs if isinstance(action.nargs, int) else 1
            for value in bad_values(field):
                flag = action.option_strings[0]
                yield pytest.param(leaf.prog, [flag, *[value] * count], flag, id=f"{leaf.prog[10:]} {flag} {value}")


GENERATED = list(generated_cases())


def test_the_generated_table_covers_every_command():
    covered = {case.values[0] for case in GENERATED}
    assert covered == set(BASE) - {"cellmixer nuclei evaluate"}  # which has no numeric option
    assert len(GENERATED) > 150


@pytest.mark.parametrize("command, bad, flag", GENERATED)
def test_an_option_out_of_its_range_is_one_line(capsys, world, tmp_path, command, bad, flag):
    out = tmp_path / "out"
    status, _, err = run_cli(capsys, [*BASE[command](world), "-o", out, "-q", *bad])
    assert_one_line(status, err, [flag])
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()], list(out.rglob("*"))


# ------------------------------------------------------------------------------------------ model folders
def edited_model(world, tmp_path, kind: str, edit) -> Path:
    folder = tmp_path / kind
    shutil.copytree(world["models"] / kind, folder)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _set(path: str, value):
    def edit(config):
        *parents, key = path.split(".")
        target = config
        for name in parents:
            target = target[name]
        target[key] = value
    return edit


def _drop(key):
    return lambda config: config.pop(key)


MODEL_CASES = [
    ("cellmixer", _drop("normalization"), ['"normalization" is missing']),
    ("cellmixer", _set("format_version", "1"), ['"format_version" is "1": give a whole number']),
    ("cellmixer", _set("input_scale", "half"), ['"input_scale" is "half": give a number']),
    ("cellmixer", _set("input_scale", 0), ['"input_scale" is 0: must be between 0.05 and 4']),
    ("cellmixer", _set("normalization.method", "zscore"), ['"normalization.method"']),
    ("cellmixer", _set("normalization.foreground.extra", 1), ['"normalization.foreground.extra": no such setting']),
    ("cellmixer", _set("normalization.foreground.erosion_size", 0), ['"normalization.foreground.erosion_size" is 0']),
    ("cellmixer", _set("normalization", {"method": "flatfield", "foreground": {}, "sigma": 0}),
     ['"normalization.sigma" is 0: give pixels between 1 and 4096']),
    ("cellmixer", _set("normalization", {"method": "flatfield", "foreground": {}, "sigma": "wide"}),
     ['"normalization.sigma" is "wide"']),
    ("cellmixer", _set("classes", "ab"), ['"classes" is "ab": give a list of names']),
    ("cellmixer", _set("architecture.width", 10**6), ['"architecture.width" is 1000000: must be between 1 and 1024']),
    ("cellmixer", _set("architecture.depth", 30), ['"architecture.depth" is 30']),
    ("cellmixer", _set("architecture.name", "resnet"), ['"architecture.name"', "unknown architecture"]),
    ("cellmixer", _set("architecture.num_classes", 9), ['"architecture.num_classes" is 9']),
    ("cellmixer", _set("channel", [1]), ['"channel" is [1]: give a channel index, a channel name or null']),
    ("cellmixer", _set("task", "detector"), ["model of unknown kind 'detector'"]),
    ("typed", _drop("types"), ['"types" is null']),
    ("centroids", _set("centroids.segmentation.window", 0), ['"centroids.segmentation.window" is 0']),
    ("centroids", _set("centroids.segmentation.colour", 1), ['"centroids.segmentation.colour": no such setting']),
    ("centroids", _set("centroids.sigma", -1), ['"centroids.sigma" is -1']),
]
PREDICT = {"cellmixer": ["predict"], "typed": ["typed", "predict"], "centroids": ["centroids", "predict"],
           "nuclei": ["nuclei", "predict"]}


@pytest.mark.parametrize("kind, edit, needles", MODEL_CASES, ids=[" ".join(c[2])[:40] for c in MODEL_CASES])
def test_a_damaged_model_folder_is_named(capsys, world, tmp_path, kind, edit, needles):
    folder = edited_model(world, tmp_path, kind, edit)
    status, _, err = run_cli(capsys, [*PREDICT[kind], folder, world["image"], "-o", tmp_path / "out"])
    assert_one_line(status, err, [str(folder / "config.json"), *needles])
    assert not (tmp_path / "out").exists()


def test_the_channel_of_a_model_is_named_as_the_models(capsys, world, tmp_path):
    folder = edited_model(world, tmp_path, "cellmixer", _set("channel", 99))
    status, _, err = run_cli(capsys, ["predict", folder, world["image"], "-o", tmp_path / "out"])
    assert_one_line(status, err, ["field.tif", "the model's channel", "config.json", "99"])
    assert "--channel" not in err


@pytest.mark.parametrize("command, kind, needles", [
    (["predict"], "typed", ["a typed-cell model, not a cell-type model", "`cellmixer train`"]),
    (["predict"], "nuclei", ["a nucleus model, not a cell-type model"]),
    (["nuclei", "predict"], "cellmixer", ["a cell-type model, not a nucleus model"]),
    (["centroids", "predict"], "typed", ["a typed-cell model, not a cell-centre detector"]),
])
def test_a_model_of_another_kind_is_named(capsys, world, tmp_path, command, kind, needles):
    status, _, err = run_cli(capsys, [*command, world["models"] / kind, world["image"], "-o", tmp_path / "out"])
    assert_one_line(status, err, [str(world["models"] / kind), *needles])


def test_evaluate_refuses_a_model_of_another_kind(capsys, world, tmp_path):
    status, _, err = run_cli(capsys, ["evaluate", world["models"] / "nuclei", "--data", world["annotated"],
                                      "-o", tmp_path / "out"])
    assert_one_line(status, err, ["a nucleus model, not a cell-type model"])


# ------------------------------------------------------------------------------------------ evaluate's data
def test_class_folders_that_are_not_the_models_classes(capsys, world, tmp_path):
    data = tmp_path / "data"
    for name in TYPES:
        shutil.copytree(world["annotated"] / name, data / name.capitalize())
    status, _, err = run_cli(capsys, ["evaluate", world["models"] / "cellmixer", "--data", data, "-o",
                                      tmp_path / "out"])
    assert_one_line(status, err, ["--data", "Epithelial, Roundcell, Spindle are not classes of the model",
                                  "Epithelial differs from the model's epithelial in case"])


@pytest.mark.parametrize("argv, needles", [
    (["--masks-dir", "bad/nowhere"], ["--masks-dir bad/nowhere: no such folder"]),
    (["--names", "A", "B"], ["--names A B: give one name per model (1)"]),
    (["--ignore-value", "0"], ["--ignore-value 0"]),
])
def test_bad_evaluation_options(capsys, world, tmp_path, argv, needles):
    status, _, err = run_cli(capsys, ["evaluate", world["models"] / "cellmixer", "--data", world["annotated"],
                                      "-o", tmp_path / "out", *argv])
    assert_one_line(status, err, needles)


# ------------------------------------------------------------------------------------------ COCO files
def coco_with(world, tmp_path, edit) -> Path:
    coco = json.loads(world["coco"].read_text())
    edit(coco["annotations"][0])
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


COCO_CASES = [
    ("polygon of strings", lambda a: a.update(segmentation=[["1", "2", "10", "2", "10", "9"]]),
     ["polygon coordinates that are not numbers"]),
    ("RLE size of text", lambda a: a.update(segmentation={"size": ["a", "b"], "counts": "PP"}),
     ["'size' of 2 whole numbers"]),
    ("RLE garbage counts", lambda a: a["segmentation"].update(counts="}}}}"), ["RLE counts that do not decode"]),
    ("RLE counts cut short", lambda a: a["segmentation"].update(counts="P"), ["RLE counts that do not decode"]),
    ("RLE of the wrong length", lambda a: a["segmentation"].update(counts=[3, 4]), ["RLE counts cover 7 pixels"]),
    ("area of text", lambda a: a.update(area="big"), ['"area" is "big"']),
    ("bbox of text", lambda a: a.update(bbox="wide"), ['"bbox" is "wide"']),
    ("iscrowd 2", lambda a: a.update(iscrowd=2), ['"iscrowd" is 2']),
    ("unknown image", lambda a: a.update(image_id=[1]), ["refers to image id [1]"]),
]


@pytest.mark.parametrize("edit, needles", [c[1:] for c in COCO_CASES], ids=[c[0] for c in COCO_CASES])
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_bad_coco_annotation_is_named(capsys, world, tmp_path, command, edit, needles):
    path = coco_with(world, tmp_path, edit)
    if command == "train":
        argv = ["typed", "train", path, "--images", world["coco"].parent, *TINY, "-o", tmp_path / "m"]
    else:
        argv = ["typed", "evaluate", world["coco"], "--truth", path, "-o", tmp_path / "e"]
    status, _, err = run_cli(capsys, argv)
    assert_one_line(status, err, [str(path), "annotation 1 ", *needles])


def test_an_annotation_that_is_not_an_object(capsys, world, tmp_path):
    coco = json.loads(world["coco"].read_text())
    coco["annotations"].insert(0, "a cell")
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(coco))
    status, _, err = run_cli(capsys, ["typed", "train", path, "--images", world["coco"].parent, *TINY,
                                      "-o", tmp_path / "m"])
    assert_one_line(status, err, [str(path), 'annotation #1 is "a cell", not an object'])


# ------------------------------------------------------------------------------------------ options with files
@pytest.mark.parametrize("argv, needles", [
    (lambda w: ["centroids", "label", w["image"], "--nuclear-channel", "5"], ["field.tif", "--nuclear-channel 5"]),
    (lambda w: ["centroids", "label", w["image"], "--nuclear-channel", "5", "--diameter", "50", "10"],
     ["--diameter 50 10"]),
    (lambda w: ["typed", "predict", w["models"] / "cellmixer", w["image"], "--min-distance", "0"],
     ["--min-distance 0: must be between 1 and 1000"]),
    (lambda w: ["typed", "evaluate", w["results"], "--truth", w["coco"], "--max-detections", "0", "0", "0"],
     ["--max-detections 0 0 0: give 3 increasing limits"]),
    (lambda w: ["predict", w["models"] / "cellmixer", w["image"], "--resume", "--overwrite"],
     ["--resume and --overwrite"]),
    (lambda w: ["train", w["data"], *TINY, "--depth", "30"], ["--depth 30: must be between 0 and 8"]),
    (lambda w: ["train", w["data"], *TINY, "--width", "1024", "--depth", "8"], ["--width 1024 --depth 8",
                                                                               "billion parameters"]),
    (lambda w: ["centroids", "train", w["image"], "--points", w["points"], *TINY, "--crop-size", "5000"],
     ["--crop-size 5000: must be between 16 and 4096"]),
    (lambda w: ["train", w["data"], "--model", "segmenter", "--model-option", "decoder_layers=0"],
     ["--model-option decoder_layers=0"]),
], ids=["nuclear channel", "diameter", "min distance", "max detections", "resume and overwrite", "depth",
        "network size", "crop size", "model option"])
def test_options_named_as_typed(capsys, world, tmp_path, argv, needles):
    status, _, err = run_cli(capsys, [*argv(world), "-o", tmp_path / "out", "-q"])
    assert_one_line(status, err, needles)


def test_argparse_errors_are_one_line(capsys, world, tmp_path):
    for argv in (["train", world["data"], "-o", tmp_path / "m", "--threads", "-1"],
                 ["predict"], ["nuclei", "predict", "--bogus"], ["--no-such-option"]):
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert info.value.code == 2 and len(err.strip().splitlines()) == 1 and "--help" in err, err


# ------------------------------------------------------------------------------------------ training runs
@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, culture_dir):
    """A finished tiny run with its checkpoint (and a nucleus run, which keeps its best weights)."""
    root = tmp_path_factory.mktemp("runs")
    tiny = dict(model_options={"width": 2, "depth": 1}, crop_size=32, batch_size=1, iterations=2, threads=1,
                progress=False, checkpoint_every=1, foreground=DEMO_FOREGROUND)
    train(culture_dir, root / "cellmixer", **tiny)
    images = sorted(culture_dir.rglob("*.tif"))[:3]
    tiny.pop("foreground")
    train_nuclei(images, root / "nuclei", **tiny)
    return root


def damaged_run(run_folder, tmp_path, kind, damage) -> Path:
    folder = tmp_path / kind
    shutil.copytree(run_folder / kind, folder)
    damage(folder / "checkpoint")
    return folder


def _state(edit):
    def damage(checkpoint):
        state = json.loads((checkpoint / "state.json").read_text())
        edit(state)
        (checkpoint / "state.json").write_text(json.dumps(state))
    return damage


def _other_unit(checkpoint):
    state = json.loads((checkpoint / "state.json").read_text())
    state["unit"] = "0" * 32
    (checkpoint / "state.json").write_text(json.dumps(state))


CHECKPOINT_CASES = [
    ("binary state.json", "cellmixer", lambda c: (c / "state.json").write_bytes(b"\x89PNG\xff\xfe" * 20),
     ["state.json: damaged checkpoint (not valid JSON"]),
    ("iteration of text", "cellmixer", _state(lambda s: s.update(iteration="2")), ['"iteration" must be a whole']),
    ("history of text", "cellmixer", _state(lambda s: s.update(history="long")), ['"history" must list']),
    ("batch size of text", "cellmixer", _state(lambda s: s["training"].update(batch_size="8")),
     ['"training.batch_size" is "8": give a whole number']),
    ("no training block", "cellmixer", _state(lambda s: s.pop("training")), ['"training" is missing']),
    ("bad random state", "cellmixer", _state(lambda s: s.update(rng={"state": 1})), ['"rng" is not a random']),
    ("bad architecture", "cellmixer", _state(lambda s: s["architecture"].update(width=10**6)),
     ['"architecture.width" is 1000000']),
    ("tensors of another checkpoint", "cellmixer", _other_unit, ["state.safetensors: of another checkpoint"]),
    ("truncated tensors", "cellmixer",
     lambda c: (c / "state.safetensors").write_bytes((c / "state.safetensors").read_bytes()[:300]),
     ["state.safetensors: damaged checkpoint"]),
    ("corrupt best weights", "nuclei", lambda c: (c / "best.safetensors").write_bytes(b"\x00" * 64),
     ["best.safetensors: damaged checkpoint"]),
    ("missing training images", "nuclei", _state(lambda s: s.pop("train_images")),
     ["state.json: damaged checkpoint", "train_images"]),
]


@pytest.mark.parametrize("kind, damage, needles", [c[1:] for c in CHECKPOINT_CASES],
                         ids=[c[0] for c in CHECKPOINT_CASES])
def test_a_damaged_checkpoint_is_refused_on_resume(capsys, world, run_folder, tmp_path, kind, damage, needles):
    folder = damaged_run(run_folder, tmp_path, kind, damage)
    images = sorted(world["data"].rglob("*.tif"))[:3]
    argv = (["train", world["data"]] if kind == "cellmixer" else ["nuclei", "train", *images])
    status, _, err = run_cli(capsys, [*argv, "-o", folder, "--resume", "--iterations", "3", "--threads", "1", "-q"])
    assert_one_line(status, err, needles)


@pytest.mark.parametrize("argv, needles", [
    (["--iterations", "1"], ["--resume: --iterations 1 is fewer than the 2 of the run in"]),
    (["--seed", "7"], ["--resume: --seed 7 differs from the run in", "(0)", "--overwrite"]),
    (["--seed", "7", "--learning-rate", "0.1"], ["--learning-rate 0.1 and --seed 7 differ", "(0.001, 0)"]),
    (["--width", "4"], ["--width 4 differs", "(2)"]),
    (["--erosion-size", "3"], ["--erosion-size 3 differs", f"erosion_size {DEMO_FOREGROUND.erosion_size}"]),
    (["--classes", "roundcell", "spindle"], ["--classes roundcell spindle differs"]),
])
def test_resume_refuses_options_that_differ_from_the_run(capsys, world, run_folder, tmp_path, argv, needles,
                                                           snapshot):
    folder = tmp_path / "run"
    shutil.copytree(run_folder / "cellmixer", folder)
    before = snapshot(folder)
    status, _, err = run_cli(capsys, ["train", world["data"], "-o", folder, "--resume", "-q", *argv])
    assert_one_line(status, err, needles)
    assert snapshot(folder) == before


def test_resume_says_what_it_changes(capsys, world, run_folder, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(run_folder / "cellmixer", folder)
    status, _, err = run_cli(capsys, ["train", world["data"], "-o", folder, "--resume", "-q", "--threads", "1",
                                      "--iterations", "3", "--checkpoint-every", "2"])
    assert status == 0, err
    assert "extending the run" in err and "from 2 to 3 iterations" in err and "--checkpoint-every 2" in err
    assert json.loads((folder / "config.json").read_text())["training"]["iterations"] == 3


def test_a_diverging_training_stops_naming_the_learning_rate(capsys, world, tmp_path):
    status, _, err = run_cli(capsys, ["train", world["data"], "-o", tmp_path / "m", *TINY, "--learning-rate", "1e30",
                                      "--precision", "fp32"])
    assert_error_after_notes(status, err, ["training diverged at iteration", "--learning-rate", "1e+30"])
    assert not (tmp_path / "m" / "config.json").exists()


def test_a_folder_in_use_by_another_run(capsys, world, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, json, os, sys, time\n"
        f"fd = os.open({str(out / '.cellmixer.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, json.dumps({'pid': os.getpid(), 'host': 'here', 'command': 'cellmixer train', "
        "'started': 'now'}).encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for argv in (["train", world["data"], *TINY], ["predict", world["models"] / "cellmixer", world["image"]],
                     ["mix", world["data"], "-n", "1"]):
            status, _, err = run_cli(capsys, [*argv, "-o", out])
            assert_one_line(status, err, [f"--output {out}: in use by process {holder.pid}", "cellmixer train"])
        assert sorted(p.name for p in out.iterdir()) == [".cellmixer.lock"]
    finally:
        holder.kill()
        holder.wait()
    status, _, err = run_cli(capsys, ["mix", world["data"], "-n", "1", "-o", out, "-q"])
    assert status == 0, err  # the lock of a process that ended is taken over
    assert not (out / ".cellmixer.lock").exists()


# ------------------------------------------------------------------------------------------ last resort
def test_an_unexpected_error_is_one_line_and_debug_shows_it(capsys, world, tmp_path, monkeypatch):
    from cellmixer.cli import _cellmixer

    def broken(*args, **kwargs):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(_cellmixer, "mix", broken)
    status, _, err = run_cli(capsys, ["mix", world["data"], "-o", tmp_path / "x"])
    assert status == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("cellmixer mix: internal error: ZeroDivisionError: float division by zero; rerun with "
                          "--debug")
    for argv in (["--debug", "mix", world["data"], "-o", tmp_path / "x"],
                 ["mix", world["data"], "-o", tmp_path / "x", "--debug"]):
        status, _, err = run_cli(capsys, argv)
        assert status == 1 and "Traceback (most recent call last)" in err and "ZeroDivisionError" in err
        assert err.strip().splitlines()[-1].startswith("cellmixer mix: internal error")


def test_library_warnings_do_not_precede_the_error_line(capsys, world, tmp_path, monkeypatch):
    import logging
    import warnings

    from cellmixer.cli import _cellmixer

    def noisy(*args, **kwargs):
        warnings.warn("invalid value encountered in divide", RuntimeWarning)
        logging.getLogger("tifffile").warning("TiffPage 0: invalid tag")
        if kwargs.get("number") == 2:
            raise CellmixerError("--number 2: the end")
        return []

    monkeypatch.setattr(_cellmixer, "mix", noisy)
    status, _, err = run_cli(capsys, ["mix", world["data"], "-o", tmp_path / "x", "-n", "2"])
    assert_one_line(status, err, ["--number 2: the end"])
    status, _, err = run_cli(capsys, ["mix", world["data"], "-o", tmp_path / "x", "-n", "3"])
    assert status == 0
    assert err.splitlines() == ["cellmixer mix: warning: tifffile: TiffPage 0: invalid tag",
                                "cellmixer mix: warning: RuntimeWarning: invalid value encountered in divide"]


def out_of_memory(*args, **kwargs):
    raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you "
                       "tried to allocate 137438953472 bytes. Error code 12 (Cannot allocate memory)")


def test_allocation_failures_name_the_options(capsys, world, tmp_path, monkeypatch):
    from cellmixer.models import UNet

    monkeypatch.setattr(UNet, "forward", out_of_memory)
    status, _, err = run_cli(capsys, ["train", world["data"], "-o", tmp_path / "m", *TINY])
    assert_error_after_notes(status, err, ["training batch of 1 crops of 32x32 pixels: out of memory (128.0 GiB "
                                           "asked)", "--batch-size or --crop-size"])
    status, _, err = run_cli(capsys, ["predict", world["models"] / "cellmixer", world["image"], "-o", tmp_path / "p"])
    assert_one_line(status, err, ["predicting a 64x64 image", "out of memory", "--tile-size or --batch-size"])
    real_init = UNet.__init__

    @functools.wraps(real_init)
    def init_out_of_memory(self, *args, **kwargs):
        if not torch.empty(0).is_meta:  # sized on the meta device first: that allocates nothing
            out_of_memory()
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(UNet, "__init__", init_out_of_memory)
    status, _, err = run_cli(capsys, ["train", world["data"], "-o", tmp_path / "m2", *TINY])
    assert_one_line(status, err, ["the unet network", "out of memory", "--width or --depth"])
    status, _, err = run_cli(capsys, ["predict", world["models"] / "cellmixer", world["image"], "-o", tmp_path / "p"])
    assert_one_line(status, err, [str(world["models"] / "cellmixer" / "config.json"), "out of memory"])


def test_an_image_too_large_for_memory_is_named(capsys, world, tmp_path, monkeypatch):
    from cellmixer.io import _read

    def huge(*args, **kwargs):
        raise MemoryError("Unable to allocate 93.1 TiB for an array with shape (10000000, 10000000)")

    monkeypatch.setattr(_read.ImagePlane, "read", huge)
    status, _, err = run_cli(capsys, ["train", world["data"], "-o", tmp_path / "m", *TINY])
    assert_one_line(status, err, ["epithelial_0.tif: out of memory", "split it"])
