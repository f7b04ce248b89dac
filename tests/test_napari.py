"""The napari plugin, headless (Qt's offscreen platform; OpenGL from the X server pytest-xvfb starts): the
manifest, the reader of results, and each widget run on an open image with a tiny model of its kind.

napari is slow to start: the widgets share one viewer per test, and the tests are few.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before pytest-qt makes the QApplication

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from cellmixer.demo import synthetic_culture, synthetic_nuclear_stain  # noqa: E402
from cellmixer.engine import InstanceWriter  # noqa: E402
from cellmixer.io import relabel_consecutive  # noqa: E402
from cellmixer.methods.typed import predict_typed  # noqa: E402
from cellmixer.napari import _widgets  # noqa: E402
from cellmixer.napari._reader import get_reader  # noqa: E402
from cellmixer.ops import nuclei_of_stain  # noqa: E402

WIDGETS = {"cellmixer": _widgets.CellTypesWidget, "nuclei": _widgets.NucleiWidget,
           "typed": _widgets.TypedCellsWidget, "centroids": _widgets.CellsFromNucleiWidget}
needs_display = pytest.mark.skipif(not os.environ.get("DISPLAY"),
                                   reason="napari's canvas needs OpenGL: an X server (apt-get install xvfb)")


def test_manifest_is_valid():
    """``npe2 validate cellmixer`` passes, and the manifest names every widget, the reader and the sample."""
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", "cellmixer"], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("cellmixer")
    assert {w.display_name for w in manifest.contributions.widgets} == {
        "Cell types (CellMixer)", "Nuclei", "Typed cells", "Cells from a nuclear stain"}
    assert manifest.contributions.readers[0].filename_patterns == ["*_labels.tif"]
    assert manifest.contributions.sample_data[0].key == "coculture"


def test_reader_gives_labels_with_their_table_and_typed_colours(model_kinds, tmp_path):
    image, instances, _ = synthetic_culture(["roundcell", "spindle"], shape=(96, 96), seed=5)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "well.tif", image)
    predict_typed(model_kinds["cellmixer"], [tmp_path / "in"], tmp_path / "typed", min_area=5, progress=False)
    InstanceWriter(tmp_path / "nuclei", category="nucleus").write("well", image, relabel_consecutive(instances))
    assert get_reader(str(tmp_path / "in" / "well.tif")) is None
    layers = get_reader(str(tmp_path / "typed" / "well_labels.tif"))(str(tmp_path / "typed" / "well_labels.tif"))
    (labels, meta, kind), (points, point_meta, point_kind) = layers
    assert (kind, point_kind) == ("labels", "points")
    n = int(labels.max())
    assert n > 0 and list(meta["features"]["index"]) == list(range(1, n + 1))
    assert set(meta["features"]["type"]) <= {"epithelial", "roundcell", "spindle"}
    colours = {tuple(meta["colormap"][k]) for k in range(1, n + 1)}  # one colour per type present
    assert len(colours) == len(set(meta["features"]["type"]))
    assert points.shape == (n, 2) and point_meta["face_color"].shape == (n, 4)
    (labels, meta, kind), = get_reader(str(tmp_path / "nuclei" / "well_labels.tif"))(
        str(tmp_path / "nuclei" / "well_labels.tif"))
    assert kind == "labels" and labels.max() > 0
    np.testing.assert_array_equal(meta["features"]["area"], np.bincount(labels.ravel())[1:])


def _run(widget, qtbot):
    worker = widget.run()
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)


@needs_display
def test_each_widget_runs_its_model_on_the_open_image(make_napari_viewer, qtbot, model_kinds, trained):
    """Typed cells from the suite's briefly trained CellMixer model (confident enough to find cells)."""
    models = {**model_kinds, "typed": trained[1]}
    viewer = make_napari_viewer()
    image, instances, _ = synthetic_culture(["roundcell", "spindle"], shape=(96, 112), seed=6)
    viewer.add_image(image, name="field")
    found = {}
    for kind, widget_type in WIDGETS.items():
        widget = widget_type(viewer)
        viewer.window.add_dock_widget(widget, name=widget_type.title)
        widget.reset_choices()
        widget.model_folder.value = models[kind]
        assert widget.image_layer.value is viewer.layers["field"]
        before = set(viewer.layers)
        _run(widget, qtbot)
        found[kind] = [layer for layer in viewer.layers if layer not in before]
        assert widget.status_label.value.startswith("added"), widget.status_label.value
    (classes,) = found["cellmixer"]
    assert isinstance(classes, napari.layers.Labels) and classes.data.shape == image.shape
    assert list(classes.features["class"]) == ["background", "epithelial", "roundcell", "spindle"]
    (nuclei,) = found["nuclei"]
    assert nuclei.name == "field nuclei" and len(nuclei.features) == len(np.unique(nuclei.data)) - 1
    cells, centres = found["typed"]
    assert isinstance(cells, napari.layers.Labels) and isinstance(centres, napari.layers.Points)
    assert len(cells.features) == cells.data.max() == len(centres.data) > 0
    assert set(cells.features["type"]) <= {"epithelial", "roundcell", "spindle"}
    cells, detections = found["centroids"]
    assert isinstance(detections, napari.layers.Points) and cells.data.shape == image.shape
    # with the field's nuclear stain chosen: one typed cell per nucleus of the stain (the field enlarged twice,
    # for nuclei of the classical labeller's default sizes)
    viewer.add_image(ndi.zoom(image, 2, order=1), name="large field")
    viewer.add_image(ndi.zoom(synthetic_nuclear_stain(instances, seed=7), 2, order=1), name="large field DAPI")
    widget = WIDGETS["typed"](viewer)
    viewer.window.add_dock_widget(widget, name="typed cells with a stain")
    widget.reset_choices()
    widget.model_folder.value = models["typed"]
    assert widget.method_options[0].value is None  # no stain unless chosen
    widget.image_layer.value = viewer.layers["large field"]
    widget.method_options[0].value = viewer.layers["large field DAPI"]
    before = set(viewer.layers)
    _run(widget, qtbot)
    cells, _ = [layer for layer in viewer.layers if layer not in before]
    assert cells.data.max() == nuclei_of_stain(viewer.layers["large field DAPI"].data).max() >= 3


@needs_display
def test_widget_errors_are_one_line_notifications(make_napari_viewer, qtbot, model_kinds, monkeypatch):
    shown = []
    monkeypatch.setattr(_widgets, "show_error", shown.append)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((40, 40), np.float32), name="blank")
    widget = _widgets.NucleiWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    widget.model_folder.value = model_kinds["cellmixer"]  # a model of the wrong kind
    _run(widget, qtbot)
    assert len(shown) == 1 and "\n" not in shown[0] and "not a nucleus model" in shown[0], shown
    widget.model_folder.value = model_kinds["cellmixer"].parent  # not a model folder
    assert widget.run() is None
    assert "not a model folder" in shown[-1]
    assert not viewer.layers["blank"].data.any() and len(viewer.layers) == 1


def test_view_command_bad_input_and_missing_extra(tmp_path, capsys, monkeypatch):
    from cellmixer.cli import main

    (tmp_path / "notes.txt").write_text("x")
    tifffile.imwrite(tmp_path / "field.tif", np.zeros((8, 8), np.uint16))
    for path, message in ((tmp_path / "missing.tif", "no such file"), (tmp_path / "notes.txt", "neither an image")):
        assert main(["view", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    monkeypatch.setitem(sys.modules, "napari", None)  # the extra is not installed
    assert main(["view", str(tmp_path / "field.tif")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'cellmixer[napari]'" in err and err.count("\n") == 1, err


@needs_display
def test_view_command_opens_image_and_results_with_the_widgets(tmp_path, trained, monkeypatch):
    from cellmixer.cli import main

    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "well.tif", synthetic_culture(["roundcell", "spindle"], shape=(96, 96),
                                                                      seed=7)[0])
    predict_typed(trained[1], [tmp_path / "in"], tmp_path / "typed", progress=False)
    viewers = []
    monkeypatch.setattr(napari, "run", lambda: viewers.append(napari.current_viewer()))  # no event loop
    assert main(["view", str(tmp_path / "in" / "well.tif"), str(tmp_path / "typed" / "well_labels.tif")]) == 0
    (viewer,) = viewers
    try:
        assert [layer.name for layer in viewer.layers] == ["well", "well cells", "well cell centres"]
        assert len(viewer.window.dock_widgets) >= 4
    finally:
        viewer.close()
