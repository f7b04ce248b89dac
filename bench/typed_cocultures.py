"""Typed cells in co-cultures built from real homogeneous fields: per-cell type accuracy and counts.

Data: ``../shared/data/deepcell_vanvalen2016`` (Van Valen et al. 2016): phase contrast with a paired
nuclear stain, one cell type per field. No co-culture with known types is public there, so the test
co-cultures are built from real fields held out of training:

* every cell of a test field is found from the field's own nuclear stain (the package's nucleus
  labeller, before any mixing) and takes the field's type: the ground truth of this benchmark;
* two fields of different types are composed cell by cell (:func:`cellmixer.ops.territory_mosaic`):
  each pixel comes from the field whose selected nucleus is nearest, so cells of both types touch
  along their territories, as in a confluent co-culture; phase and nuclear stain are composed alike
  (the phase images brought to one background level, the stains as imaged);
* patterns: ``half`` (left / right), ``islands`` (colonies of each type), ``scatter`` (every cell
  drawn at random, half of each type) and ``minority`` (a fifth of the cells of the first type,
  scattered among the second);
* photometric conditions: ``matched`` (both fields brought to one background level), ``one side``
  (the first field's phase at 0.6 of its exposure, not matched) and ``exposure`` (the whole mosaic at
  0.28 of its exposure, with camera noise and a gamma of 1.15: the real co-culture's phase median is
  about 4,100 counts against 13,000-15,000 in these fields).

``--protocol whole`` builds the mosaics as the issue asks, of whole cells cut by their manual masks
(:func:`compose_whole`; every scored cell keeps its whole body, so a perfect body classifier scores 1.0):
the fields with manual masks (``training_data/3T3/set1``, ``training_data/MCF10A`` and the validation
fields) become the test fields and the models train on the others (``testing_data/{3T3,MCF10A}/set1``,
``training_data/3T3/set2``).

Each row trains on the training fields of the types (the test fields and their duplicates are left
out), types the cells of every test co-culture with the package's route (nuclei from the stain,
cells from the nuclei, type from the model's probabilities over each cell) and scores each true
nucleus by the type of the predicted cell that covers most of it; ``balanced_accuracy_whole_cells`` scores
only the cells of the mixtures whose body (the nucleus grown into its cell in the field alone) the mosaic
kept (``INTACT`` of it from its own field): mixing two confluent fields cell by cell replaces part of many
bodies with the other culture's pixels, which no real co-culture does. The ``body oracle`` row types every
cell as the culture that gave most of its body: what a perfect classifier of cell bodies would score. The
classical peer is a random forest on per-nucleus features (shape, stain intensity and texture, phase context
in rings, neighbour density) trained on the nuclei of the same training fields, the folder name as the only
label: what a CellProfiler + CellProfiler Analyst user would build.

    .venv/bin/python bench/typed_cocultures.py                       # every row (about 2 h on 2 cores)
    .venv/bin/python bench/typed_cocultures.py --rows peer cellmixer  # some rows
    .venv/bin/python bench/typed_cocultures.py --model mine=models/x  # score an existing model folder too
    .venv/bin/python bench/typed_cocultures.py --protocol whole --rows peer "body oracle" \
        "both + photometric + stain input + context weight"          # whole cells, by their manual masks

Writes ``bench/results/typed_cocultures[_whole].json`` and, per row, overlays of a few test co-cultures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, RESULTS, Timer, git_commit, machine, peak_rss_mb, save_json  # noqa: E402

import cellmixer  # noqa: E402
from cellmixer.io import read_image, to_uint8, write_png  # noqa: E402
from cellmixer.ops import (  # noqa: E402
    background_stats,
    cells_from_nuclei,
    extract_foreground,
    territory_mosaic,
)

DATA = DEFAULT_DATA / "deepcell_vanvalen2016"
TESTING = "testing_data/{}/set{}/RawImages/img_000000000_{}.png"
# (phase, nuclear stain) per field; duplicates (SOURCE.txt) are listed once.
FIELDS = {
    "3T3 train1": ("training_data/3T3/set1/phase.png", "training_data/3T3/set1/nuclear.png"),
    "3T3 train2": ("training_data/3T3/set2/phase.png", "training_data/3T3/set2/nuclear.png"),
    "3T3 test1": (TESTING.format("3T3", 1, "Phase_000"), TESTING.format("3T3", 1, "DAPI_010")),
    "3T3 val": ("validation_data/3T3/RawImages/phase.tif", "validation_data/3T3/RawImages/dapi.tif"),
    "MCF10A train": ("training_data/MCF10A/phase.png", "training_data/MCF10A/nuclear.png"),
    "MCF10A test1": (TESTING.format("MCF10A", 1, "Phase_000"), TESTING.format("MCF10A", 1, "DAPI_010")),
    "MCF10A val": ("validation_data/MCF10A/RawImages/phase.tif", "validation_data/MCF10A/RawImages/dapi.tif"),
    **{f"HeLa train{i}": (f"training_data/HeLa_joint/set{i}/phase.png", f"training_data/HeLa_joint/set{i}/nuclear.png")
       for i in range(1, 6)},
    "HeLa test1": (TESTING.format("HeLa", 1, "Phase_000"), TESTING.format("HeLa", 1, "Far-red_001")),
    "HeLa val": ("validation_data/HeLa/RawImages/phase.tif", "validation_data/HeLa/RawImages/farred.tif"),
}
# Training fields per type. Left out: the test fields and their duplicates (training_data/3T3/set3 =
# testing_data/3T3/set2, of which validation_data/3T3 is a crop; testing_data/MCF10A/set2 = training_data/MCF10A).
TRAIN = {"3T3": ["3T3 train1", "3T3 train2"], "MCF10A": ["MCF10A train"],
         "HeLa": [f"HeLa train{i}" for i in range(1, 6)]}
# Test field pairs per type: the full held-out test fields and the 500 x 500 validation fields.
TEST = {"3T3": ["3T3 test1", "3T3 val"], "MCF10A": ["MCF10A test1", "MCF10A val"], "HeLa": ["HeLa test1", "HeLa val"]}
# The manual cell masks (interior, edge) of the fields that ``--protocol whole`` tests on.
MANUAL = {
    "3T3 train1": ("training_data/3T3/set1/feature_1.tif", "training_data/3T3/set1/feature_0.tif"),
    "MCF10A train": ("training_data/MCF10A/feature_1.tif", "training_data/MCF10A/feature_0.tif"),
    **{f"{t} val": (f"validation_data/{t}/Validation/{t}_validation_interior.tif",
                    f"validation_data/{t}/Validation/{t}_validation_edge.tif") for t in ("3T3", "MCF10A")},
}
# ``--protocol whole``: the mosaics of whole cells cut by their manual masks. The test fields must
# have manual masks, so the split turns round: training on the held-out test fields (a model needs no mask),
# testing on manually segmented ones (training_data/3T3/set3 still left out: 3T3 val is a crop of it).
TRAIN_WHOLE = {"3T3": ["3T3 test1", "3T3 train2"], "MCF10A": ["MCF10A test1"]}
TEST_WHOLE = {"3T3": ["3T3 train1", "3T3 val"], "MCF10A": ["MCF10A train", "MCF10A val"]}
SPLITS = {"territory": (TRAIN, TEST), "whole": (TRAIN_WHOLE, TEST_WHOLE)}
# Pixels of phase-contrast halo pasted around a whole cell's manual mask.
HALO = 3
PATTERNS = ("half", "islands", "scatter", "minority")
CONDITIONS = ("matched", "one side", "exposure")
# A true nucleus must keep this share of its pixels in the mosaic to be scored.
INTACT = 0.8
# A true nucleus is found when one predicted cell covers at least this share of it.
FOUND = 0.5
PAPER = {"Jurkat + K562 (real mix, mAcc)": 0.77, "PBMC mixes (real, mAcc)": 0.91}
TARGET = {"balanced_accuracy": 0.97, "above_peer": 0.05, "count_error": 0.05}
# Count errors are also given over the images with at least this many cells of a type: with fewer than 20,
# one cell typed wrong is already more than 5 % (the small validation fields hold 2-50 of a type).
COUNTED = 50


@dataclass
class Field:
    name: str
    type: str
    phase: np.ndarray
    stain: np.ndarray
    nuclei: np.ndarray
    foreground: np.ndarray
    cells: np.ndarray          # each nucleus grown into its cell in the field alone (its body)
    manual: np.ndarray | None = None  # the manual cell masks (1..n), where the field has them


@dataclass
class CoCulture:
    name: str
    phase: np.ndarray
    stain: np.ndarray
    truth: np.ndarray          # true nuclei, 0 elsewhere
    truth_types: dict          # nucleus label -> type name
    ignore: np.ndarray | None = None  # nuclei cut by the mosaic: neither scored nor counted
    body_kept: dict | None = None     # nucleus label -> share of its cell's body from its own field (None: all)


def load_field(data: Path, name: str, type_name: str, settings: dict) -> Field:
    phase_file, stain_file = FIELDS[name]
    phase, stain = read_image(data / phase_file), read_image(data / stain_file)
    nuclei = cellmixer.nuclei_of_stain(stain, **settings)
    foreground = extract_foreground(phase)
    cells = cells_from_nuclei(nuclei, foreground, image=phase)
    return Field(name, type_name, phase, stain, nuclei, foreground, cells, manual_cells(data, name))


def manual_cells(data: Path, name: str) -> np.ndarray | None:
    """The field's manual cells: each connected piece of the interior mask, grown over its one-pixel edge."""
    if name not in MANUAL:
        return None
    interior, edge = (read_image(data / file) > 0 for file in MANUAL[name])
    cells, _ = ndi.label(interior)
    return np.where(interior | edge, expand_labels(cells, 2), 0).astype(np.int32)


def _centroids(labels: np.ndarray) -> np.ndarray:
    n = int(labels.max(initial=0))
    return np.array(ndi.center_of_mass(np.ones_like(labels), labels, np.arange(1, n + 1))).reshape(-1, 2)


def _match(x, mask_x, ref, mask_ref) -> np.ndarray:
    """``x`` with the background mean and spread of ``ref``."""
    m, s = background_stats(x, mask_x)
    mr, sr = background_stats(ref, mask_ref)
    return ((x - m) / s * sr + mr).astype(np.float32)


def _crop(field: Field, shape, rng) -> Field:
    h, w = field.phase.shape
    y, x = int(rng.integers(h - shape[0] + 1)), int(rng.integers(w - shape[1] + 1))
    sl = (slice(y, y + shape[0]), slice(x, x + shape[1]))
    return Field(field.name, field.type, field.phase[sl], field.stain[sl], field.nuclei[sl], field.foreground[sl],
                 field.cells[sl], None if field.manual is None else field.manual[sl])


def _selection(pattern: str, centres: np.ndarray, first: bool, shape, rng, islands=None) -> np.ndarray:
    if pattern == "half":
        inside = centres[:, 1] < shape[1] / 2
    elif pattern == "islands":
        inside = islands[np.clip(centres[:, 0].astype(int), 0, shape[0] - 1),
                         np.clip(centres[:, 1].astype(int), 0, shape[1] - 1)]
    else:
        share = 0.5 if pattern == "scatter" else 0.2
        inside = rng.random(len(centres)) < share
        return np.concatenate([[False], inside if first else rng.random(len(centres)) >= share])
    return np.concatenate([[False], inside if first else ~inside])


def _islands(pattern: str, shape, rng) -> np.ndarray | None:
    if pattern != "islands":
        return None
    noise = ndi.gaussian_filter(rng.normal(size=shape), 60)
    return noise > np.median(noise)


def _sources(a: Field, b: Field, condition: str, stain_gain: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Phase and stain of each field as the condition shows them: *one side*: ``a``'s phase at 0.6 of its
    exposure (and its nuclei at ``stain_gain``), else ``b``'s phase brought to ``a``'s background level."""
    phase_a = a.phase * np.float32(0.6) if condition == "one side" else a.phase
    phase_b = b.phase if condition == "one side" else _match(b.phase, b.foreground, a.phase, a.foreground)
    # The stains as imaged: the same stain and exposure in one well (matching their backgrounds would
    # scale a culture's nuclei by the glow of its cytoplasm).
    stain_a = a.stain
    if condition == "one side" and stain_gain != 1:
        background = np.float32(np.median(a.stain[a.nuclei == 0]))
        stain_a = background + (a.stain - background) * np.float32(stain_gain)
    return [(phase_a, stain_a), (phase_b, b.stain)]


def _exposed(phase: np.ndarray, condition: str, rng) -> np.ndarray:
    """*exposure*: the whole mosaic at 0.28 of its exposure, gamma 1.15 and camera noise."""
    if condition != "exposure":
        return phase
    _, noise = background_stats(phase, extract_foreground(phase))
    top = float(np.percentile(phase, 99.9))
    phase = top * np.clip(phase / top, 0, None) ** 1.15 * 0.28
    return phase + rng.normal(0, 0.5 * noise * 0.28, phase.shape).astype(np.float32)


def compose(a: Field, b: Field, pattern: str, condition: str, rng, stain_gain: float = 1.0) -> CoCulture:
    """A co-culture of ``a``'s and ``b``'s cells (same shape), with its true nuclei and their types; in the
    *one side* condition ``a``'s nuclei are also at ``stain_gain`` of their brightness above the stain's background
    (another staining or DNA content of one type, in one well)."""
    shape = a.phase.shape
    islands = _islands(pattern, shape, rng)
    sel_a = _selection(pattern, _centroids(a.nuclei), True, shape, rng, islands)
    sel_b = _selection(pattern, _centroids(b.nuclei), False, shape, rng, islands)
    mosaic, _, owner = territory_mosaic([np.stack(x) for x in _sources(a, b, condition, stain_gain)],
                                        [a.nuclei, b.nuclei], [sel_a, sel_b])
    phase, stain = mosaic
    phase = _exposed(phase, condition, rng)
    # True nuclei: every nucleus of either field that kept most of its pixels in the mosaic (the
    # unselected ones inside a selected cell's territory too); nuclei cut to less are not scored, and
    # predicted cells on them are not counted.
    source = owner // 2**20
    truth = np.zeros(shape, np.int32)
    ignore = np.zeros(shape, bool)
    types, body_kept = {}, {}
    for index, field in enumerate((a, b)):
        mine = np.where(source == index, field.nuclei, 0)
        total = np.bincount(field.nuclei.ravel())
        kept = np.bincount(mine.ravel(), minlength=len(total))
        # how much of each cell's body (grown in the field alone) the mosaic took from this field
        body = np.bincount(field.cells.ravel(), minlength=len(total))
        body_mine = np.bincount(field.cells.ravel(), weights=(source == index).ravel(), minlength=len(body))
        for label in np.flatnonzero(kept[1:]) + 1:
            if kept[label] >= INTACT * total[label]:
                types[len(types) + 1] = field.type
                truth[mine == label] = len(types)
                body_kept[len(types)] = float(body_mine[label] / max(body[label], 1))
            else:
                ignore |= mine == label
    name = f"{a.name} + {b.name}, {pattern}, {condition}"
    return CoCulture(name, phase.astype(np.float32), stain.astype(np.float32), truth, types, ignore, body_kept)


def compose_whole(a: Field, b: Field, pattern: str, condition: str, rng, stain_gain: float = 1.0) -> CoCulture:
    """A co-culture of whole cells of ``a`` and ``b``, cut by their manual masks (``Field.manual``).

    The cells the pattern selects are pasted in random order, each only where no pasted cell lies, with
    the ``HALO`` pixels of phase-contrast halo around it where they are free: the cells of both types touch
    and none is cut. The rest shows the background of ``a``: as imaged, and where ``a`` holds an unpasted
    cell, its smooth level with its noise. Every nucleus of a pasted cell keeps its cell whole; nuclei
    outside the manual cells and pasted cells without a nucleus of the labeller are neither scored nor counted.
    """
    shape = a.phase.shape
    islands = _islands(pattern, shape, rng)
    fields = (a, b)
    objects = [ndi.find_objects(f.manual) for f in fields]
    candidates = [(index, label) for index, f in enumerate(fields)
                  for label in np.flatnonzero(_selection(pattern, _centroids(f.manual), index == 0, shape, rng,
                                                         islands)) if objects[index][label - 1] is not None]
    owner = np.full(shape, -1, np.int8)  # the field each pixel comes from
    pasted = []
    for k in rng.permutation(len(candidates)):
        index, label = candidates[k]
        sl = objects[index][label - 1]
        cell = fields[index].manual[sl] == label
        if (owner[sl][cell] >= 0).any():
            continue
        owner[sl][cell] = index
        pasted.append((index, label))
    halo = expand_labels(owner.astype(np.int32) + 1, HALO) - 1
    owner = np.where(owner >= 0, owner, halo).astype(np.int8)
    background = ~ndi.binary_dilation(a.manual > 0, iterations=HALO)
    owner[(owner < 0) & background] = 0
    rest = owner < 0
    sources = _sources(a, b, condition, stain_gain)
    phase, stain = (np.where(owner == 1, sources[1][i], sources[0][i]).astype(np.float32) for i in (0, 1))
    for image, source in zip((phase, stain), sources[0]):
        image[rest] = _background_like(source, background, rng)[rest]
    phase = _exposed(phase, condition, rng)
    truth = np.zeros(shape, np.int32)
    types = {}
    ignore = np.zeros(shape, bool)
    nucleus_areas = [np.bincount(f.nuclei.ravel()) for f in fields]
    for index, label in pasted:
        f, sl = fields[index], objects[index][label - 1]
        cell = f.manual[sl] == label
        ids, inside = np.unique(f.nuclei[sl][cell], return_counts=True)
        whole = [n for n, c in zip(ids, inside) if n and c >= INTACT * nucleus_areas[index][n]]
        for n in whole:
            types[len(types) + 1] = f.type
            truth[sl][cell & (f.nuclei[sl] == n)] = len(types)
        if not whole:  # the labeller found no nucleus of this cell: what the route finds there is not counted
            ignore[sl] |= cell
    for index, f in enumerate(fields):  # nuclei shown but not scored (outside the manual cells, or cut)
        ignore |= (owner == index) & (f.nuclei > 0) & (truth == 0)
    name = f"{a.name} + {b.name}, {pattern}, {condition}"
    return CoCulture(name, phase, stain, truth, types, ignore)


def _background_like(image: np.ndarray, background: np.ndarray, rng, sigma: float = 40) -> np.ndarray:
    """The image's background level where it is hidden (a normalized Gaussian average of the background
    pixels), with the background's noise."""
    weight = ndi.gaussian_filter(background.astype(np.float32), sigma)
    level = ndi.gaussian_filter(np.where(background, image, 0).astype(np.float32), sigma)
    level = np.where(weight > 1e-3, level / np.maximum(weight, 1e-3), np.median(image[background]))
    # the pixel noise, from differences of neighbours (the level's own slopes left out)
    pairs = background[:, 1:] & background[:, :-1]
    noise = 1.4826 * float(np.median(np.abs(np.diff(image, axis=1)[pairs]))) / np.sqrt(2)
    return (level + rng.normal(0, noise, image.shape)).astype(np.float32)


def test_cocultures(fields: dict, types: list[str], seed: int, stain_gain: float = 1.0,
                    protocol: str = "territory") -> list[CoCulture]:
    rng = np.random.default_rng(seed)
    out = []
    first, second = types
    _, test = SPLITS[protocol]
    mix = compose_whole if protocol == "whole" else compose
    for fa, fb in zip(test[first], test[second]):
        a, b = fields[fa], fields[fb]
        if a.phase.shape != b.phase.shape:
            shape = tuple(min(x, y) for x, y in zip(a.phase.shape, b.phase.shape))
            a, b = _crop(a, shape, rng), _crop(b, shape, rng)
        for pattern in PATTERNS:
            for condition in CONDITIONS:
                out.append(mix(a, b, pattern, condition, rng, stain_gain))
        # the types alone (unmixed), as imaged
        for field in (a, b):
            n = int(field.nuclei.max(initial=0))
            out.append(CoCulture(f"{field.name} alone", field.phase, field.stain, field.nuclei.copy(),
                                 {k: field.type for k in range(1, n + 1)}))
    return out


# ----------------------------------------------------------------------------------------------- scoring
def score_image(coculture: CoCulture, labels: np.ndarray, cell_types: dict, nuclei: np.ndarray | None = None) -> dict:
    """Per true nucleus: found (a predicted cell covers >= FOUND of it) and, if so, its predicted type.
    Predicted cells are counted per type, except those whose nucleus (``nuclei``, labelled as the
    cells; default: the cells) lies mostly on a nucleus the mosaic cut."""
    truth = coculture.truth
    rows = []
    pairs = truth.astype(np.int64) * (int(labels.max(initial=0)) + 1) + labels
    counts = np.bincount(pairs.ravel())
    n_pred = int(labels.max(initial=0)) + 1
    area = np.bincount(truth.ravel(), minlength=int(truth.max(initial=0)) + 1)
    for t, type_name in coculture.truth_types.items():
        row = counts[t * n_pred:(t + 1) * n_pred] if t * n_pred < len(counts) else np.zeros(n_pred)
        row = np.pad(row, (0, n_pred - len(row)))
        row[0] = 0
        best = int(row.argmax())
        found = best > 0 and row[best] >= FOUND * area[t]
        whole = coculture.body_kept is None or coculture.body_kept[t] >= INTACT
        rows.append((type_name, found, cell_types.get(best) if found else None, whole))
    skipped = set()
    if coculture.ignore is not None and coculture.ignore.any():
        cores = labels if nuclei is None else nuclei
        size = np.bincount(cores.ravel())
        on_ignored = np.bincount(cores[coculture.ignore].ravel(), minlength=len(size))
        skipped = set(np.flatnonzero(on_ignored[1:] >= 0.5 * np.maximum(size[1:], 1)) + 1)
    predicted_counts = {}
    for label, name in cell_types.items():
        if label not in skipped:
            predicted_counts[name] = predicted_counts.get(name, 0) + 1
    return {"cells": rows, "predicted_counts": predicted_counts}


def summarize(scored: list[dict], cocultures: list[CoCulture], types: list[str]) -> dict:
    per_type = {t: {"cells": 0, "found": 0, "correct": 0} for t in types}
    count_errors = {t: [] for t in types}
    count_errors_counted = {t: [] for t in types}
    mixed = {t: {"cells": 0, "correct": 0} for t in types}
    whole = {t: {"cells": 0, "correct": 0} for t in types}
    for s, c in zip(scored, cocultures):
        truth_counts = {t: 0 for t in types}
        for type_name, found, predicted, body_whole in s["cells"]:
            per_type[type_name]["cells"] += 1
            per_type[type_name]["found"] += int(found)
            per_type[type_name]["correct"] += int(predicted == type_name)
            truth_counts[type_name] += 1
            if "alone" not in c.name:
                mixed[type_name]["cells"] += 1
                mixed[type_name]["correct"] += int(predicted == type_name)
                if body_whole:
                    whole[type_name]["cells"] += 1
                    whole[type_name]["correct"] += int(predicted == type_name)
        if "alone" not in c.name:
            for t in types:
                if truth_counts[t]:
                    error = abs(s["predicted_counts"].get(t, 0) - truth_counts[t]) / truth_counts[t]
                    count_errors[t].append(error)
                    if truth_counts[t] >= COUNTED:
                        count_errors_counted[t].append(error)
    accuracy = {t: v["correct"] / v["cells"] for t, v in per_type.items() if v["cells"]}
    accuracy_found = {t: v["correct"] / v["found"] for t, v in per_type.items() if v["found"]}
    mixed_accuracy = {t: v["correct"] / v["cells"] for t, v in mixed.items() if v["cells"]}
    whole_accuracy = {t: v["correct"] / v["cells"] for t, v in whole.items() if v["cells"]}
    cells = sum(v["cells"] for v in per_type.values())
    return {
        "accuracy": {t: round(v, 4) for t, v in accuracy.items()},
        "balanced_accuracy": round(float(np.mean(list(accuracy.values()))), 4),
        "balanced_accuracy_mixtures": round(float(np.mean(list(mixed_accuracy.values()))), 4)
        if mixed_accuracy else None,  # None for the fields alone
        "balanced_accuracy_found": round(float(np.mean(list(accuracy_found.values()))), 4),
        # mixtures, only the cells whose body the mosaic kept (INTACT of it from their own field)
        "balanced_accuracy_whole_cells": round(float(np.mean(list(whole_accuracy.values()))), 4)
        if whole_accuracy else None,
        "whole_cells": {t: v["cells"] for t, v in whole.items()},
        "missed": round(1 - sum(v["found"] for v in per_type.values()) / cells, 4),
        "count_error": {t: round(float(np.mean(v)), 4) for t, v in count_errors.items() if v},
        "count_error_median": {t: round(float(np.median(v)), 4) for t, v in count_errors.items() if v},
        f"count_error_{COUNTED}": {t: round(float(np.mean(v)), 4) for t, v in count_errors_counted.items() if v},
        "cells": {t: v["cells"] for t, v in per_type.items()},
    }


def by_condition(scored, cocultures, types) -> dict:
    """Balanced accuracy and mean count error per type of each pattern, condition and the fields alone."""
    out = {}
    for key in [*PATTERNS, *CONDITIONS, "alone"]:
        chosen = [(s, c) for s, c in zip(scored, cocultures)
                  if (f", {key}" in c.name) or (key == "alone" and "alone" in c.name)]
        if chosen:
            s, c = zip(*chosen)
            summary = summarize(list(s), list(c), types)
            out[key] = {"balanced_accuracy": summary["balanced_accuracy"], "count_error": summary["count_error"],
                        "balanced_accuracy_whole_cells": summary["balanced_accuracy_whole_cells"]}
    return out


# ----------------------------------------------------------------------------------------------- rows
def run_model_row(model, cocultures, route: dict) -> tuple[list[dict], list, float]:
    scored, results, seconds = [], [], []
    route = dict(route)
    stain = route.pop("stain", True)  # False: today's route without a stain (the model's own foreground, split)
    if not stain:
        route.pop("cells", None)
    for c in cocultures:
        t = time.perf_counter()
        cells = cellmixer.segment_typed(model, c.phase, nuclear=c.stain if stain else None, **route)
        seconds.append((time.perf_counter() - t, c.phase.size))
        cell_types = {k + 1: cells.type_names[t] for k, t in enumerate(cells.types)}
        scored.append(score_image(c, cells.labels, cell_types, cells.nuclei))
        results.append(cells)
    per_field = [s / n * 1080 * 1280 for s, n in seconds]
    return scored, results, float(np.median(per_field))


def adapted_model(args, folder, cocultures, route: dict, name: str) -> Path:
    """The model adapted (``typed predict --adapt``) to the test co-cultures, as a user adapts it to the
    images being analysed: their cells typed by the model itself, the confident ones its labels."""
    out = args.output / "adapted" / name.replace(" ", "_")
    if (out / "config.json").exists():
        return out
    from cellmixer.methods.typed import AdaptConfig, adapt_model

    config = AdaptConfig(**json.loads(args.adapt_options))
    chosen = np.unique(np.linspace(0, len(cocultures) - 1, min(len(cocultures), config.adapt_images)).round())
    model = cellmixer.SegmentationModel.load(folder)
    adapt_model(model, [(cocultures[i].phase, cocultures[i].stain, cocultures[i].name) for i in chosen.astype(int)],
                out, config, segment=lambda image, stain, name, probs: cellmixer.segment_typed(
                    model, image, nuclear=stain, probabilities=probs, **route),
                threads=args.threads, progress=False)
    return out


def save_overlays(out: Path, name: str, cocultures, results, count: int = 4) -> None:
    from cellmixer.methods.typed._write import typed_overlay  # the package's own overlay

    first_pair = cocultures[0].name.split(",")[0]  # the full-size fields
    chosen = [i for i, c in enumerate(cocultures) if c.name.startswith(first_pair) and "matched" in c.name][:count]
    for i in chosen:
        safe = "".join(ch if ch.isalnum() else "_" for ch in f"{name}_{cocultures[i].name}")[:120]
        write_png(out / f"{safe}.png", typed_overlay(cocultures[i].phase, results[i]), overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--types", nargs=2, default=["3T3", "MCF10A"])
    parser.add_argument("--rows", nargs="*", default=None, help="rows to run (default: all; none with --model)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=FOLDER",
                        help="also score an existing model folder")
    parser.add_argument("--cells", default="grow", help="cell bodies of the route (nuclei, grow, graphcut)")
    parser.add_argument("--route", default="{}", help="with --model: JSON of segment_typed options, e.g. "
                                                      "'{\"augment\": true}' or '{\"stain\": false}'")
    parser.add_argument("--adapt", action="store_true", help="with --model: adapt it to the test co-cultures first")
    parser.add_argument("--adapt-options", default="{}", help="with --adapt: JSON of AdaptConfig settings, e.g. "
                                                              "'{\"iterations\": 100, \"adapt_images\": 4}'")
    parser.add_argument("--iterations", type=int, default=None, help="override every row's iterations")
    parser.add_argument("--train", default="{}", help="JSON of training options that override every model row's, "
                                                      "e.g. '{\"batch_size\": 4}' (give its own --output)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--stain-gain", type=float, default=1.0,
                        help="the 'one side' mixtures' first field's nuclei at this gain of their brightness above "
                             "the stain's background (default: as imaged)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the test co-cultures and the peer's forest")
    parser.add_argument("--train-seed", type=int, default=0, help="seed of the models' training (its spread: run 0, 1, 2)")
    parser.add_argument("--protocol", choices=list(SPLITS), default="territory",
                        help="territory: every held-out cell, mixed by nearest nucleus; whole: whole cells cut by "
                             "their manual masks (training and test fields swapped)")
    parser.add_argument("--output", type=Path, default=None, help="default: bench/results/typed_cocultures[_whole]")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    stem = "typed_cocultures" + ("" if args.protocol == "territory" else f"_{args.protocol}")
    args.output = args.output or RESULTS / stem
    args.json = args.json or RESULTS / f"{stem}.json"
    args.train_fields, args.test_fields = SPLITS[args.protocol]
    unknown = [t for t in args.types if t not in args.test_fields]
    if unknown:
        parser.error(f"--types: --protocol {args.protocol} has no fields of {', '.join(unknown)}; "
                     f"choose among {', '.join(args.test_fields)}.")
    if not args.data.is_dir():
        print(f"{args.data}: no data; skipped.")
        return
    timer = Timer()
    args.output.mkdir(parents=True, exist_ok=True)
    nucleus_settings = {}
    fields = {}
    for t in args.types:
        for name in args.train_fields[t] + args.test_fields[t]:
            fields[name] = load_field(args.data, name, t, nucleus_settings)
    cocultures = test_cocultures(fields, args.types, args.seed, args.stain_gain, args.protocol)
    print(f"{len(cocultures)} test images, {sum(len(c.truth_types) for c in cocultures)} true nuclei "
          f"({timer():.0f} s)", flush=True)
    report = {"command": " ".join(sys.argv), "commit": git_commit(), "machine": machine(), "types": args.types,
              "protocol": args.protocol, "test_images": [c.name for c in cocultures], "rows": {}, "paper": PAPER,
              "target": TARGET}
    rows = ROWS if args.rows is None else {k: ROWS[k] for k in args.rows}
    for name, row in rows.items():
        row_timer = Timer()
        result = row(args, fields, cocultures)
        result["wall_time_s"] = row_timer()
        report["rows"][name] = result
        print(name, json.dumps({k: v for k, v in result.items() if k != "by_condition"}), flush=True)
        print("   by condition:", result.get("by_condition"), flush=True)
        save_json(args.json, report)
    for spec in args.model:
        name, folder = spec.split("=", 1)
        route = {"cells": args.cells, **json.loads(args.route)}
        adapted = {}
        if args.adapt:
            folder = str(adapted_model(args, folder, cocultures, route, name))
            training = json.loads((Path(folder) / "config.json").read_text())["training"]
            adapted = {"adapt": {k: training.get(k)
                                 for k in ("iterations", "confidence", "adapt_images", "wall_time_s")}}
        scored, results, seconds = run_model_row(folder, cocultures, route)
        result = {**summarize(scored, cocultures, args.types), "by_condition": by_condition(scored, cocultures, args.types),
                  "predict_s_per_field": round(seconds, 2), **adapted}
        save_overlays(args.output, name, cocultures, results)
        report["rows"][name] = result
        print(name, json.dumps({k: v for k, v in result.items() if k != "by_condition"}), flush=True)
        print("   by condition:", result["by_condition"], flush=True)
    report["wall_time_s"] = timer()
    report["peak_rss_mb"] = round(peak_rss_mb(), 1)
    save_json(args.json, report)
    print(f"-> {args.json} ({timer():.0f} s)")

# ----------------------------------------------------------------------------------------------- classical peer
RINGS = ((0, 6), (6, 15), (15, 30), (30, 60))  # pixels outside the nucleus


def nucleus_features(phase: np.ndarray, stain: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    """About 60 features per nucleus, as a CellProfiler pipeline measures them (MeasureObjectSizeShape,
    MeasureObjectIntensity, MeasureTexture, rings of MeasureObjectIntensity around the nucleus,
    MeasureObjectNeighbors): the stain as imaged, the phase image normalized by its background."""
    from skimage.feature import graycomatrix, graycoprops
    from skimage.measure import regionprops
    from scipy.spatial import cKDTree

    fg = extract_foreground(phase)
    mean, spread = background_stats(phase, fg)
    p = (phase - mean) / spread
    s = stain / 65535.0  # as CellProfiler scales a 16-bit image: the same stain reads the same in every field
    grad = ndi.gaussian_gradient_magnitude(p, 1.5)
    n = int(nuclei.max(initial=0))
    if n == 0:
        return np.zeros((0, 0))
    distance, (rows, cols) = ndi.distance_transform_edt(nuclei == 0, return_indices=True)
    nearest = nuclei[rows, cols]
    index = np.arange(1, n + 1)

    def ring_stats(values, lo_d, hi_d):
        ring = (distance > lo_d) & (distance <= hi_d)
        lab = np.where(ring, nearest, 0)
        with np.errstate(invalid="ignore"):  # an empty ring: no value (0 below)
            m = ndi.mean(values, lab, index)
            sd = ndi.standard_deviation(values, lab, index)
        return np.nan_to_num(np.asarray(m)), np.nan_to_num(np.asarray(sd))

    columns = []
    props = regionprops(nuclei, intensity_image=s)
    shape = np.array([[r.area, r.perimeter, r.eccentricity, r.solidity, r.axis_major_length, r.axis_minor_length,
                       r.extent, r.equivalent_diameter_area] for r in props])
    columns.append(shape)
    stain_stats = []
    for r in props:
        v = r.image_intensity[r.image]
        q = np.quantile(v, [0.1, 0.5, 0.9])
        top = max(float(r.image_intensity.max()), 1e-9)
        crop = np.clip(r.image_intensity / top * 63, 0, 63).astype(np.uint8)
        glcm = graycomatrix(crop, [1, 3], [0, np.pi / 2], levels=64, symmetric=True, normed=True)
        tex = [graycoprops(glcm, prop).mean() for prop in ("contrast", "homogeneity", "energy", "correlation")]
        stain_stats.append([v.mean(), v.std(), v.min(), v.max(), *q, v.sum(), *tex])
    columns.append(np.array(stain_stats))
    inside = [np.asarray(ndi.mean(x, nuclei, index)) for x in (p, grad)]
    inside += [np.asarray(ndi.standard_deviation(p, nuclei, index))]
    columns.append(np.stack(inside, axis=1))
    for lo_d, hi_d in RINGS:
        for values in (p, grad, fg.astype(np.float32), s):
            columns.append(np.stack(ring_stats(values, lo_d, hi_d), axis=1))
    centres = _centroids(nuclei)
    tree = cKDTree(centres)
    k = min(6, n)
    dist, _ = tree.query(centres, k=k)
    dist = np.pad(dist, ((0, 0), (0, 6 - k)), constant_values=1000)[:, 1:]
    neighbours = [np.array([len(x) - 1 for x in tree.query_ball_point(centres, r)]) for r in (50, 100, 150)]
    columns.append(np.concatenate([dist, np.stack(neighbours, axis=1)], axis=1))
    return np.concatenate(columns, axis=1).astype(np.float64)


def peer_row(args, fields, cocultures) -> dict:
    try:
        from sklearn.ensemble import RandomForestClassifier
    except ImportError:
        sys.exit("the peer row needs scikit-learn: .venv/bin/pip install -e '.[bench]' (or give --rows without peer)")

    timer = Timer()
    x, y = [], []
    for t in args.types:
        for name in args.train_fields[t]:
            f = fields[name]
            x.append(nucleus_features(f.phase, f.stain, f.nuclei))
            y += [t] * len(x[-1])
    forest = RandomForestClassifier(n_estimators=500, class_weight="balanced", random_state=args.seed, n_jobs=1)
    forest.fit(np.concatenate(x), np.array(y))
    train_s = timer()
    scored, seconds = [], []
    for c in cocultures:
        t = time.perf_counter()
        nuclei = cellmixer.nuclei_of_stain(c.stain)
        features = nucleus_features(c.phase, c.stain, nuclei)
        predicted = forest.predict(features) if len(features) else []
        seconds.append((time.perf_counter() - t) / c.phase.size * 1080 * 1280)
        scored.append(score_image(c, nuclei, {k + 1: v for k, v in enumerate(predicted)}))
    return {**summarize(scored, cocultures, args.types), "by_condition": by_condition(scored, cocultures, args.types),
            "features": int(np.concatenate(x).shape[1]), "train_s": train_s,
            "predict_s_per_field": round(float(np.median(seconds)), 2)}


def body_oracle_row(args, fields, cocultures) -> dict:
    """The bound of typing each cell by its body: every true nucleus found, and typed as the culture that gave
    most of its cell's body (the mosaic gives part of many bodies to the other culture). A perfect classifier
    of cell bodies scores this; a model above it must read the nucleus against its body."""
    scored = []
    for c in cocultures:
        types = {}
        for t, own in c.truth_types.items():
            mostly_own = c.body_kept is None or c.body_kept[t] >= 0.5
            types[t] = own if mostly_own else next(x for x in args.types if x != own)
        scored.append(score_image(c, c.truth, types))
    return {**summarize(scored, cocultures, args.types), "by_condition": by_condition(scored, cocultures, args.types)}


# ----------------------------------------------------------------------------------------------- model rows
def training_folder(args, fields, types) -> Path:
    """A class folder per type with links to its training fields: ``<field>_phase.png`` and
    ``<field>_nuclear.png`` (trained with ``pattern="*phase*"``, ``nuclear=("phase", "nuclear")``)."""
    root = args.output / "training_data"
    for t in types:
        (root / t).mkdir(parents=True, exist_ok=True)
        for name in args.train_fields[t]:
            for kind, file in zip(("phase", "nuclear"), FIELDS[name]):
                link = root / t / (name.replace(" ", "_") + f"_{kind}" + Path(file).suffix)
                if not link.exists():
                    link.symlink_to((args.data / file).resolve())
    return root


def model_row(name: str, train_options: dict, route: dict | None = None):
    """Train a CellMixer model with the package's defaults changed by ``train_options`` (reused when its
    folder exists), then type the test co-cultures with the route (``route`` changes its defaults)."""
    def row(args, fields, cocultures) -> dict:
        folder = args.output / "models" / (name if not args.train_seed else f"{name}_seed{args.train_seed}")
        options = {**EXPERIMENT, **train_options, "seed": args.train_seed}
        if args.iterations:
            options["iterations"] = args.iterations
        options.update(json.loads(args.train))
        timer = Timer()
        if not (folder / "config.json").exists():
            cellmixer.train(training_folder(args, fields, args.types), folder, pattern="*phase*",
                            nuclear=("phase", "nuclear"), threads=args.threads, progress=False, **options)
        train_s = json.loads((folder / "config.json").read_text())["training"].get("wall_time_s", timer())
        scored, results, seconds = run_model_row(str(folder), cocultures, {"cells": args.cells, **(route or {})})
        save_overlays(args.output, name, cocultures, results)
        return {**summarize(scored, cocultures, args.types), "by_condition": by_condition(scored, cocultures, args.types),
                "train_s": train_s, "training": options, "route": route or {},
                "predict_s_per_field": round(seconds, 2)}
    return row


# Training settings every model row shares (besides the package's defaults).
EXPERIMENT = dict(optimizer="adam", lr_schedule="poly", crop_size=192)

# Each row's settings as measured; the ones it does not name are the package's defaults.
PLAIN = {"nuclear_input": False, "context_weight": 0}  # the phase image alone, every pixel weighed alike
ROWS: dict = {
    "peer": peer_row,
    "body oracle": body_oracle_row,
    "baseline": model_row("baseline", {"mode": "baseline", "photometric": False, **PLAIN}),
    "cellmixer (blend)": model_row("cellmixer_blend", {"mixing": "blend", "photometric": False, **PLAIN}),
    "mosaic": model_row("mosaic", {"mixing": "mosaic", "photometric": False, **PLAIN}),
    "both": model_row("both", {"mixing": "both", "photometric": False, **PLAIN}),
    "both + photometric": model_row("both_photometric", {"mixing": "both", "photometric": True, **PLAIN}),
    "mosaic + photometric": model_row("mosaic_photometric", {"mixing": "mosaic", "photometric": True, **PLAIN}),
    "both + photometric + flat field": model_row("both_photometric_flatfield", {"mixing": "both", "photometric": True,
                                                                               "normalization": "flatfield", **PLAIN}),
    "both + photometric + stain input": model_row("both_photometric_stain", {"mixing": "both", "photometric": True,
                                                                            "nuclear_input": True,
                                                                            "context_weight": 0}),
    # the defaults: the stain is an input of the network too, and cells among another type weigh more
    "both + photometric + stain input + context weight": model_row(
        "both_photometric_stain_context", {"mixing": "both", "photometric": True, "nuclear_input": True,
                                           "context_weight": 2.0}),
}


if __name__ == "__main__":
    main()
