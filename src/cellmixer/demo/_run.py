"""``cellmixer demo``: the whole method on generated cultures, start to finish, in a few minutes."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np

from .._errors import CellmixerError
from .._progress import progress_bar
from ..io import check_overwrite, locks_outputs, prepare_output_dir, write_json, write_text, write_tiff
from ..methods.cellmixer import TrainingConfig, evaluate, mix, predict, pseudolabel, train
from ..metrics import format_table
from ..ops import ForegroundParams, mosaic_pair
from ._synthetic import CELL_TYPES, synthetic_culture

# Foreground settings for the generated cultures: small cells, so less smoothing than the default.
DEMO_FOREGROUND = ForegroundParams(sigma_pre=1.0, sigma_post=1.0, erosion_size=9, threshold="otsu")
MOSAIC = "Mosaic Mix"


def make_demo_data(root, *, types=tuple(sorted(CELL_TYPES)), train_per_class: int = 8, test_per_class: int = 4,
                   mosaics: int = 12, shape=(256, 256), seed: int = 0, progress: bool = True) -> dict:
    """Write a generated dataset: ``train/<type>/`` (no masks), ``test/<type>/`` with ``*_masks.tif``
    instance masks, and ``mosaic/`` co-cultures with class-index masks (0 background, k type k)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    test = []
    jobs = [("train", t, i) for t in types for i in range(train_per_class)]
    jobs += [("test", t, i) for t in types for i in range(test_per_class)]
    for split, name, i in progress_bar(jobs, desc="generating cultures", unit="image", enabled=progress):
        image, instances, _ = synthetic_culture(name, shape=shape, rng=rng)
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        write_tiff(folder / f"{name}_{i:02d}.tif", image, overwrite=True)
        if split == "test":
            write_tiff(folder / f"{name}_{i:02d}_masks.tif", instances.astype(np.uint16), overwrite=True)
            test.append((name, image, instances))
    # Mosaics: cells of one held-out culture placed in the free space of another (no blending).
    pairs = [(a, b) for a, b in itertools.permutations(range(len(test)), 2) if test[a][0] != test[b][0]]
    (root / "mosaic").mkdir(parents=True, exist_ok=True)
    for n, index in enumerate(rng.choice(len(pairs), size=min(mosaics, len(pairs)), replace=False)):
        a, b = pairs[index]
        (na, ia, la), (nb, ib, lb) = test[a], test[b]
        class_a = (la > 0) * (types.index(na) + 1)
        class_b = (lb > 0) * (types.index(nb) + 1)
        image, labels = mosaic_pair(ia, class_a, ib, class_b)
        # Back to the intensity range of a real camera image.
        image = np.clip(6000 + 600 * image, 0, 65535).astype(np.uint16)
        write_tiff(root / "mosaic" / f"mosaic_{n:02d}.tif", image, overwrite=True)
        write_tiff(root / "mosaic" / f"mosaic_{n:02d}_masks.tif", labels.astype(np.uint8), overwrite=True)
    return {"classes": list(types), "train_per_class": train_per_class, "test_per_class": test_per_class,
            "mosaics": min(mosaics, len(pairs)), "shape": list(shape), "seed": seed}


@locks_outputs
def demo(output="demo_output", *, seed: int = 0, iterations: int = 600, batch_size: int = 8, crop_size: int = 128,
         train_per_class: int = 8, overwrite: bool = False, progress: bool = True) -> dict:
    """Generate cultures, pseudo-label them, train the baseline and CellMixer, and compare them.

    The generated homogeneous cultures (three cell types that differ in size, shape, texture and
    clumping) are labelled only by their folder. Both models are trained on the same pseudo-labels
    and evaluated on held-out unmixed images, artificial mixtures (CellMixer's blend, with
    ground-truth masks) and mosaic mixtures (cells of two types side by side, not blended).

    Writes into ``output``: ``data/``, ``pseudolabels/`` (QC pictures), ``mixtures/`` (examples),
    ``models/{baseline,cellmixer}/``, ``evaluation/`` (per-image PNGs), ``predictions/`` (CellMixer
    on the mosaics), ``results.md`` and ``results.json``.

    Returns
    -------
    dict
        ``results`` ({model: {set: scores}}), ``table`` (markdown), ``cellmixer_wins`` and timings.
    """
    start = time.perf_counter()
    TrainingConfig(iterations=iterations, seed=seed, batch_size=batch_size, crop_size=crop_size).validate()
    out = prepare_output_dir(output)
    check_overwrite([out / "results.md", out / "results.json"], overwrite=overwrite)
    if (out / "data").exists() and not overwrite:
        raise CellmixerError(f"{out / 'data'} already exists; pass --overwrite to regenerate the demo, "
                             "or choose another --output.")
    timings = {}
    t = time.perf_counter()
    info = make_demo_data(out / "data", train_per_class=train_per_class, seed=seed, progress=progress)
    pseudolabel(out / "data" / "train", out / "pseudolabels", foreground=DEMO_FOREGROUND, overwrite=True,
                progress=progress)
    mix(out / "data" / "train", out / "mixtures", number=6, crop_size=crop_size, foreground=DEMO_FOREGROUND,
        seed=seed, overwrite=True, progress=progress)
    timings["data_s"] = round(time.perf_counter() - t, 1)
    models = {}
    for mode in ("baseline", "cellmixer"):
        t = time.perf_counter()
        models[mode] = train(out / "data" / "train", out / "models" / mode, mode=mode, iterations=iterations,
                             batch_size=batch_size, crop_size=crop_size, optimizer="adam", learning_rate=1e-3,
                             lr_schedule="poly", mixing="blend", photometric=False,  # the paper's comparison
                             foreground=DEMO_FOREGROUND, seed=seed, overwrite=True,
                             progress=progress)
        timings[f"train_{mode}_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    names = ["Baseline", "CellMixer"]
    held_out = evaluate(list(models.values()), out / "data" / "test", model_names=names, seed=seed,
                        output=out / "evaluation" / "held_out", overwrite=True, progress=progress)
    mosaic = evaluate(list(models.values()), out / "data" / "mosaic", model_names=names,
                      output=out / "evaluation" / "mosaic", overwrite=True, progress=progress)
    predict(models["cellmixer"], out / "data" / "mosaic", out / "predictions", overwrite=True, progress=progress)
    timings["evaluate_s"] = round(time.perf_counter() - t, 1)
    results = {name: {**held_out["results"][name], MOSAIC: mosaic["results"][name]["Unmixed"]} for name in names}
    table = format_table(results)
    wins = {s: results["CellMixer"][s]["mIoU"] > results["Baseline"][s]["mIoU"] for s in ("Artificial Mix", MOSAIC)}
    timings["total_s"] = round(time.perf_counter() - start, 1)
    summary = {"data": info, "settings": {"iterations": iterations, "batch_size": batch_size, "crop_size": crop_size,
                                          "foreground": DEMO_FOREGROUND.to_dict()},
               "results": results, "cellmixer_wins": wins, "timings": timings}
    write_json(out / "results.json", summary, overwrite=overwrite)
    write_text(out / "results.md", table + "\n", overwrite=overwrite)
    return {**summary, "table": table}


def print_demo_report(summary: dict, output) -> None:
    print("\nSemantic segmentation of generated cultures (percent; Acc = per-class accuracy):\n")
    print(summary["table"])
    for name, won in summary["cellmixer_wins"].items():
        b = summary["results"]["Baseline"][name]["mIoU"]
        c = summary["results"]["CellMixer"][name]["mIoU"]
        print(f"\n{name}: CellMixer mIoU {100 * c:.1f} vs baseline {100 * b:.1f} -> "
              f"{'CellMixer better' if won else 'baseline better'}", end="")
    print(f"\n\nDone in {summary['timings']['total_s']:.0f} s. Results, models and pictures are in {output}/ "
          "(start with results.md, pseudolabels/*_qc.png, mixtures/*.png and predictions/*_overlay.png).")
