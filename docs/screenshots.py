"""Make the pictures of the README's "with Fiji / QuPath / napari / bioimage.io" section, headless.

    QT_QPA_PLATFORM=offscreen DISPLAY=:99 python docs/screenshots.py [--model MODEL] [--output docs]

Needs the extra [napari] and an X server for OpenGL (``Xvfb :99 &``). Trains a small CellMixer model on
generated cultures unless ``--model`` gives one (about a minute on 2 cores), types the cells of a
generated co-culture with it (``cellmixer typed predict``), and writes:

- ``napari_typed_cells.png``: napari with the co-culture, the typed cells read back from the results (cells
  coloured by type, the cell table as layer features) and the "Typed cells" widget docked;
- ``qupath_style_overlay.png``: the cells' outlines from ``<name>.geojson`` drawn as QuPath draws
  detections: each outline in its classification's colour over the image, with the class counts.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image, ImageDraw

from cellmixer.demo import DEMO_FOREGROUND, make_demo_data, synthetic_culture
from cellmixer.io import add_legend, to_uint8
from cellmixer.methods.cellmixer import train
from cellmixer.methods.typed import predict_typed


def save_small(picture: Image.Image, path: Path) -> None:
    """A PNG of at most 256 colours: a fraction of the size, the same to the eye."""
    picture.quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)


def typed_results(model, work: Path) -> Path:
    """Typed cells of a generated co-culture: the folder `cellmixer typed predict` wrote."""
    (work / "mixed").mkdir(parents=True, exist_ok=True)
    image = synthetic_culture(["roundcell", "spindle"], shape=(320, 320), seed=11)[0]
    tifffile.imwrite(work / "mixed" / "coculture.tif", image)
    predict_typed(model, [work / "mixed"], work / "typed", overwrite=True, progress=False)
    return work


def napari_picture(work: Path, output: Path) -> None:
    import napari

    viewer = napari.Viewer(title="cellmixer", show=False)
    viewer.window._qt_window.resize(1260, 680)
    viewer.open(str(work / "mixed" / "coculture.tif"))
    viewer.open(str(work / "typed" / "coculture_labels.tif"), plugin="cellmixer")
    viewer.layers["coculture cells"].opacity = 0.55
    _, widget = viewer.window.add_plugin_dock_widget("cellmixer", "Typed cells")
    widget.model_folder.value = "models/cellmixer"
    viewer.layers.selection.active = viewer.layers["coculture cells"]
    viewer.reset_view()
    picture = viewer.screenshot(canvas_only=False, flash=False)
    viewer.close()
    save_small(Image.fromarray(picture[..., :3]), output)


def qupath_picture(work: Path, output: Path) -> None:
    image = tifffile.imread(work / "mixed" / "coculture.tif")
    features = json.loads((work / "typed" / "coculture.geojson").read_text())["features"]
    scale = 2  # QuPath draws outlines over an enlarged view
    grey = Image.fromarray(to_uint8(image)).resize((image.shape[1] * scale, image.shape[0] * scale)).convert("RGB")
    draw = ImageDraw.Draw(grey)
    counts = {}
    colours = {}
    for feature in features:
        classification = feature["properties"]["classification"]
        colour = tuple(classification.get("color", (255, 0, 0)))
        counts[classification["name"]] = counts.get(classification["name"], 0) + 1
        colours[classification["name"]] = colour
        geometry = feature["geometry"]
        polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        for rings in polygons:
            draw.line([(x * scale, y * scale) for x, y in rings[0]], fill=colour, width=2)
    names = sorted(counts)
    legend = add_legend(np.asarray(grey), [f"{n} ({counts[n]})" for n in names],
                        np.array([colours[n] for n in names], np.uint8))
    save_small(Image.fromarray(legend), output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a CellMixer model folder (default: train one)")
    parser.add_argument("--output", default=str(Path(__file__).parent), help="folder of the pictures")
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    torch.set_num_threads(1)
    output = Path(args.output)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        model = args.model
        if model is None:
            make_demo_data(work / "data", types=("roundcell", "spindle"), train_per_class=4, test_per_class=0,
                           mosaics=0, progress=False)
            model = train(work / "data" / "train", work / "model", model_options={"width": 8, "depth": 3}, crop_size=96,
                          batch_size=8, iterations=300, optimizer="adam", learning_rate=5e-3,
                          lr_schedule="poly", foreground=DEMO_FOREGROUND, threads=1, progress=False)
        typed_results(model, work)
        napari_picture(work, output / "napari_typed_cells.png")
        qupath_picture(work, output / "qupath_style_overlay.png")
    print(f"pictures -> {output}")


if __name__ == "__main__":
    main()
