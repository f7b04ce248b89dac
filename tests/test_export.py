"""bioimage.io export: the torch-only network equals the package's prediction, the package validates and
passes bioimage.io's own test, and bad inputs are one-line errors."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage as ndi

from cellmixer import SegmentationModel
from cellmixer._errors import CellmixerError
from cellmixer.cli import main
from cellmixer.demo import DEMO_FOREGROUND, synthetic_culture, synthetic_nuclear_stain
from cellmixer.engine import input_statistics
from cellmixer.export import BackgroundStatistics, ExportedNetwork, export_bioimageio, network_source
from cellmixer.export._network import component_areas, normalize_nuclear_stain
from cellmixer.ops import ForegroundParams
from cellmixer.ops import normalize_nuclear_stain as ops_normalize_nuclear_stain

bioimageio_spec = pytest.importorskip("bioimageio.spec")
bioimageio_core = pytest.importorskip("bioimageio.core")


@pytest.fixture(scope="module")
def image():
    return synthetic_culture(["roundcell", "spindle"], shape=(150, 170), seed=4)[0]


@pytest.mark.parametrize("threshold", ["li", "otsu", "triangle", "local", 2.5])
def test_background_statistics_in_torch_equal_the_package(image, threshold):
    settings = ForegroundParams(**{**DEMO_FOREGROUND.to_dict(), "threshold": threshold}).to_dict()
    expected = input_statistics(image, {"method": "background", "foreground": settings})
    module = BackgroundStatistics(**settings)
    got = module(torch.from_numpy(image.astype(np.float32)))
    scripted = torch.jit.script(module)(torch.from_numpy(image.astype(np.float32)))
    assert got == pytest.approx(expected, rel=1e-9)
    assert scripted == pytest.approx(expected, rel=1e-9)


def test_nuclear_stain_normalization_in_torch_equals_the_package():
    rng = np.random.default_rng(3)
    stains = [synthetic_nuclear_stain(synthetic_culture(["roundcell", "spindle"], shape=(120, 140), rng=rng)[1],
                                      rng=rng) for _ in range(3)]
    stains += [rng.gamma(2.0, 300.0, (61, 47)), np.full((9, 9), 7.0)]
    scripted = torch.jit.script(normalize_nuclear_stain)
    for stain in stains:
        expected = ops_normalize_nuclear_stain(stain)
        x = torch.from_numpy(np.asarray(stain, np.float32))
        np.testing.assert_array_equal(normalize_nuclear_stain(x).numpy(), expected)
        np.testing.assert_array_equal(scripted(x).numpy(), expected)


def test_component_areas_equal_scipy_labels():
    rng = np.random.default_rng(0)
    for fraction in (0.3, 0.6):
        mask = ndi.gaussian_filter(rng.random((70, 90)), 1.5) > 0.5 - fraction / 5
        labels, _ = ndi.label(mask)
        expected = np.where(mask, np.bincount(labels.ravel())[labels], 0)
        np.testing.assert_array_equal(component_areas(torch.from_numpy(mask)).numpy(), expected)


# Input scales as the methods train them: CellMixer and cell-centre models have a --scale option.
@pytest.mark.parametrize("kind, scale", [("cellmixer", 1.0), ("cellmixer", 0.5), ("typed", 1.0), ("nuclei", 1.0),
                                         ("centroids", 1.0), ("centroids", 0.5)])
def test_exported_network_predicts_as_the_package(model_kinds, image, kind, scale):
    """Normalization, input scale and activation built in: the same probabilities as SegmentationModel.predict."""
    model = SegmentationModel.load(model_kinds[kind])
    model.config["input_scale"] = scale
    normalization = model.config["normalization"]
    if normalization.get("method") == "tile":  # tiles normalized on their own: equal for one tile
        image = image[:normalization["tile_size"], :normalization["tile_size"]]
    _, expected = model.predict(image, probabilities=True)
    background = normalization.get("foreground") if normalization.get("method", "background") == "background" else None
    exported = ExportedNetwork(model.config["architecture"], background, scale)
    exported.network.load_state_dict(model.network.state_dict())
    x = image.astype(np.float32)
    if background is None:  # the standard preprocessing bioimage.io applies (one tile: the whole image)
        offset, spread = input_statistics(x, normalization)
        x = (x - x.mean()) / x.std() if offset is None else (x - offset) / spread
    with torch.inference_mode():
        got = torch.jit.script(exported.eval())(torch.from_numpy(x[None, None]))[0].numpy()
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_network_source_runs_without_cellmixer(tmp_path, model_kinds):
    """The architecture file imports torch only: it runs where cellmixer is not installed."""
    (tmp_path / "arch.py").write_text(network_source())
    model = SegmentationModel.load(model_kinds["cellmixer"])
    torch.save(model.network.state_dict(), tmp_path / "net.pt")
    script = (
        "import sys, builtins, torch\n"
        "sys.path.insert(0, '.')\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    assert not name.startswith('cellmixer'), name\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "import arch\n"
        f"net = arch.ExportedNetwork({model.config['architecture']!r}, "
        f"{model.config['normalization']['foreground']!r})\n"
        "net.network.load_state_dict(torch.load('net.pt'))\n"
        "print(tuple(net.eval()(torch.rand(1, 1, 40, 50) * 1000).shape))\n")
    result = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"(1, {model.num_classes}, 40, 50)"


KINDS = ("cellmixer", "nuclei", "typed", "centroids")
# The input normalization of each kind of model in its package: built in, or bioimage.io's standard step.
PREPROCESSING = {"cellmixer": None, "nuclei": "zero_mean_unit_variance", "typed": "zero_mean_unit_variance",
                 "centroids": "scale_range"}


@pytest.fixture(scope="module")
def packages(model_kinds, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bioimageio")
    return {kind: export_bioimageio(model_kinds[kind], folder / f"{kind}.zip", authors=["Test Author"])
            for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_package_validates_and_passes_bioimageio_test(packages, kind):
    from bioimageio.core import test_model
    from bioimageio.spec import ValidationContext, load_model_description
    from bioimageio.spec.model import v0_5

    with ValidationContext(perform_io_checks=True):
        descr = load_model_description(packages[kind])
    assert isinstance(descr, v0_5.ModelDescr), getattr(descr, "validation_summary", descr)
    assert descr.weights.pytorch_state_dict is not None and descr.weights.torchscript is not None
    assert [c.url for c in descr.cite][0] is not None and len(descr.cite) == 2
    assert descr.covers and descr.documentation is not None
    assert ("built into the network" in descr.description) == (PREPROCESSING[kind] is None)
    steps = [step.id for step in descr.inputs[0].preprocessing if step.id != "ensure_dtype"]
    assert steps == ([PREPROCESSING[kind]] if PREPROCESSING[kind] else []), steps
    for weights in ("pytorch_state_dict", "torchscript"):
        summary = test_model(packages[kind], weight_format=weights)
        assert summary.status == "passed", summary.format()


@pytest.mark.parametrize("kind", KINDS)
def test_bioimageio_prediction_equals_the_package(packages, model_kinds, kind):
    """bioimage.io's prediction on the test input (its own preprocessing, the exported weights) equals cellmixer's."""
    from bioimageio.core import predict

    with zipfile.ZipFile(packages[kind]) as archive:
        test_input = np.load(archive.open("test_input.npy"))
    result = predict(model=packages[kind], inputs=test_input)
    got = next(iter(result.members.values())).data.values[0]
    model = SegmentationModel.load(model_kinds[kind])
    labels, expected = model.predict(test_input[0, 0], probabilities=True)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_array_equal(got.argmax(axis=0), labels)


def test_rdf_records_classes_and_normalization(packages):
    with zipfile.ZipFile(packages["cellmixer"]) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        names = set(archive.namelist())
    assert {"cellmixer_network.py", "weights.pt", "weights_torchscript.pt", "test_input.npy", "test_output.npy",
            "cover.png", "README.md", "rdf.yaml"} <= names
    channels = rdf["outputs"][0]["axes"][1]["channel_names"]
    assert channels == ["background", "epithelial", "roundcell", "spindle"]
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["background"]["threshold"] == \
        DEMO_FOREGROUND.threshold
    assert rdf["authors"] == [{"name": "Test Author"}]


def test_classes_named_like_cell_lines_become_valid_channel_names(model_kinds, tmp_path):
    """bioimage.io channel names are Python identifiers: a class called 3T3 must not stop the export."""
    from bioimageio.spec import ValidationContext, load_model_description

    model = SegmentationModel.load(model_kinds["cellmixer"])
    model.config["classes"] = ["3T3", "MCF10A", "T cell"]
    package = export_bioimageio(model, tmp_path / "lines.zip")
    with ValidationContext(perform_io_checks=False):
        descr = load_model_description(package)
    assert [str(c) for c in descr.outputs[0].axes[1].channel_names] == ["background", "_3T3", "MCF10A", "T_cell"]
    with zipfile.ZipFile(package) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
    assert rdf["config"]["cellmixer"]["model"]["classes"] == ["3T3", "MCF10A", "T cell"]  # the names as trained


# ------------------------------------------------------------------------------------------- bad input
def test_cli_export_and_its_bad_inputs(model_kinds, tmp_path, capsys, monkeypatch):
    out = tmp_path / "model.zip"
    assert main(["export", str(model_kinds["centroids"]), "--bioimageio", str(out), "--quiet"]) == 0
    assert zipfile.is_zipfile(out)
    before = out.read_bytes()
    cases = [
        ([str(model_kinds["centroids"]), "--bioimageio", str(out)], "already exists; pass --overwrite"),
        ([str(tmp_path), "--bioimageio", str(tmp_path / "b.zip")], "config.json: missing"),
        ([str(model_kinds["typed"]), "--bioimageio", str(tmp_path / "b.tar")], "ending in .zip"),
    ]
    for args, message in cases:
        assert main(["export", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert out.read_bytes() == before
    assert main(["export", str(model_kinds["typed"]), "--bioimageio", str(tmp_path / "d.zip"), "--license", "x"]) == 2
    err = capsys.readouterr().err
    assert "--license x: not an SPDX licence" in err and err.count("\n") == 1, err
    assert not (tmp_path / "d.zip").exists() and not list(tmp_path.glob(".cellmixer-export-*"))
    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)  # the extra is not installed
    assert main(["export", str(model_kinds["typed"]), "--bioimageio", str(tmp_path / "c.zip")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'cellmixer[bioimageio]'" in err and err.count("\n") == 1


def test_export_refuses_a_vit_model(model_kinds, tmp_path):
    model = SegmentationModel.load(model_kinds["cellmixer"])
    model.config["architecture"] = {**model.config["architecture"], "name": "segmenter"}  # as a ViT model's
    with pytest.raises(CellmixerError, match="supports U-Net models"):
        export_bioimageio(model, tmp_path / "vit.zip")
