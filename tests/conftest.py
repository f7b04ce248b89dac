"""Shared fixtures: small generated cultures and one briefly trained model for the whole session.

Everything here is generated procedurally (``cellmixer.demo.synthetic_culture``), so the suite needs
no network and no real data. Anything that trains is session-scoped and tiny.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from cellmixer.demo import DEMO_FOREGROUND, synthetic_culture

# The suite shares a 2-core machine: one torch thread keeps it quick and reproducible.
torch.set_num_threads(1)

TYPES = ("epithelial", "roundcell", "spindle")  # sorted: the class order discover_dataset gives
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Settings of every tiny training run in the suite.
TINY = dict(model_options={"width": 4, "depth": 2}, crop_size=32, batch_size=2, iterations=6,
            foreground=DEMO_FOREGROUND, threads=1, progress=False)


def write_cultures(root: Path, *, types=TYPES, per_class: int = 2, shape=(96, 96), seed: int = 0,
                   masks: bool = False) -> Path:
    """``root/<type>/<type>_<i>.tif`` homogeneous cultures (uint16), optionally with instance masks."""
    rng = np.random.default_rng(seed)
    for name in types:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image, instances, _ = synthetic_culture(name, shape=shape, rng=rng)
            tifffile.imwrite(folder / f"{name}_{i}.tif", image)
            if masks:
                tifffile.imwrite(folder / f"{name}_{i}_masks.tif", instances.astype(np.uint16))
    return root


def tree_snapshot(folder: Path) -> dict:
    """Relative path -> (bytes, mtime_ns) of every file below ``folder``."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def culture_dir(tmp_path_factory) -> Path:
    """Three classes, two 96x96 homogeneous cultures each, no masks (training data)."""
    return write_cultures(tmp_path_factory.mktemp("cultures"), shape=(96, 96), seed=1)


@pytest.fixture(scope="session")
def annotated_dir(tmp_path_factory) -> Path:
    """Held-out homogeneous cultures with ``*_masks.tif`` instance masks (evaluation data)."""
    return write_cultures(tmp_path_factory.mktemp("annotated"), per_class=1, shape=(80, 96), seed=2, masks=True)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A width-8 U-Net trained briefly (CellMixer mode) so that its predictions are confident.

    Returns ``(model, folder)``; tests must not write into the folder.
    """
    from cellmixer.methods.cellmixer import train

    root = tmp_path_factory.mktemp("trained")
    data = write_cultures(root / "data", per_class=3, shape=(192, 192), seed=3)
    folder = root / "model"
    model = train(data, folder, model_options={"width": 8, "depth": 4}, crop_size=64, batch_size=8,
                  iterations=120, optimizer="adam", learning_rate=5e-3, lr_schedule="poly",
                  mixing="blend", photometric=False, context_weight=0,  # the model the tiling tests' bounds were set on
                  foreground=DEMO_FOREGROUND, threads=1, progress=False, seed=0)
    return model, folder


@pytest.fixture
def model_copy(trained, tmp_path) -> Path:
    """A private copy of the trained model's folder (config and weights only), safe to damage."""
    _, folder = trained
    copy = tmp_path / "model_copy"
    copy.mkdir()
    for name in ("config.json", "weights.safetensors"):
        shutil.copy2(folder / name, copy / name)
    return copy


@pytest.fixture(scope="session")
def make_cultures():
    """The :func:`write_cultures` helper, for tests that need their own data folder."""
    return write_cultures


@pytest.fixture(scope="session")
def snapshot():
    """The :func:`tree_snapshot` helper: compare a folder before and after a refused command."""
    return tree_snapshot


@pytest.fixture(scope="session")
def tiny():
    """Keyword arguments of a tiny training run (seconds on one CPU thread)."""
    return dict(TINY)


@pytest.fixture(scope="session")
def console():
    """Run the installed ``cellmixer`` console script in a subprocess."""
    return run_console


def console_script() -> Path:
    """The installed ``cellmixer`` entry point next to this interpreter."""
    path = Path(sys.executable).parent / ("cellmixer.exe" if os.name == "nt" else "cellmixer")
    if not path.exists():
        pytest.skip(f"console script not installed next to {sys.executable} (pip install -e . creates it)")
    return path


def run_console(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(console_script()), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


@pytest.fixture(scope="session")
def deepcell() -> Path:
    """The real DeepCell 2016 data at ../shared/data, or a skip when this checkout has none."""
    path = REAL_DATA / "deepcell_vanvalen2016"
    if not path.is_dir():
        pytest.skip(f"real data not available at {path}")
    return path


def write_nuclei(folder: Path, *, count: int = 3, shape=(96, 96), seed: int = 0) -> Path:
    """Fluorescence-like fields of bright round nuclei on a dark background (``n<i>.tif``)."""
    from scipy import ndimage as ndi

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for i in range(count):
        cells = np.zeros(shape, bool)
        for cy, cx in rng.uniform(10, min(shape) - 10, (8, 2)):
            cells |= (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(4, 7) ** 2
        image = ndi.gaussian_filter(cells.astype(float), 1.0) * 2000 + 300 + rng.normal(0, 30, shape)
        tifffile.imwrite(folder / f"n{i}.tif", np.clip(image, 0, 65535).astype(np.uint16))
    return folder


@pytest.fixture(scope="session")
def model_kinds(culture_dir, tmp_path_factory) -> dict:
    """One tiny model folder of each method (seconds of training each): kind -> folder.

    ``cellmixer`` (cell types), ``nuclei`` (3 classes), ``typed`` (instance and type heads, trained on
    COCO annotations of generated cultures) and ``centroids`` (a cell-centre detector trained on points).
    """
    from cellmixer.io import relabel_consecutive
    from cellmixer.methods.cellmixer import train
    from cellmixer.methods.centroids import train_centroids
    from cellmixer.methods.nuclei import train_nuclei
    from cellmixer.methods.typed import label_annotations, train_typed

    root = tmp_path_factory.mktemp("model_kinds")
    tiny = dict(model_options={"width": 4, "depth": 2}, batch_size=2, iterations=4, threads=1, progress=False)
    train(culture_dir, root / "cellmixer", crop_size=32, foreground=DEMO_FOREGROUND, **tiny)
    train_nuclei(write_nuclei(root / "nuclei_images"), root / "nuclei", crop_size=32, diameter_range=(6, 20), **tiny)
    images, annotations, points = [], [], {}
    rng = np.random.default_rng(0)
    (root / "coco").mkdir()
    for i, name in enumerate(("roundcell", "spindle", "roundcell", "spindle")):
        image, instances, _ = synthetic_culture(name, shape=(64, 64), rng=rng)
        file_name = f"{name}_{i}.tif"
        tifffile.imwrite(root / "coco" / file_name, image)
        labels = relabel_consecutive(instances)
        images.append({"id": i + 1, "file_name": file_name, "height": 64, "width": 64})
        annotations += label_annotations(labels, image_id=i + 1, category_ids=[1] * int(labels.max()),
                                         first_id=len(annotations) + 1)
        points[file_name] = np.array([np.argwhere(labels == k).mean(axis=0) for k in range(1, labels.max() + 1)])
    coco = root / "coco" / "annotations.json"
    coco.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "cell"}]}))
    train_typed(coco, root / "typed", class_from="prefix", validation_fraction=0.25, crop_size=32,
                checkpoint_every=2, **tiny)
    train_centroids(sorted((root / "coco").glob("*.tif")), root / "centroids", points=points, sigma=3.0,
                    crop_size=32, checkpoint_every=1000, **tiny)
    return {kind: root / kind for kind in ("cellmixer", "nuclei", "typed", "centroids")}
