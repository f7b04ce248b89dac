"""CellMixer vs baseline on real phase-contrast cultures (DeepCell 2016 data, Van Valen et al.).

Training uses only each culture's folder name as its label (no masks): NIH-3T3, HeLa-S3 and MCF10A
fields, deduplicated, with the field behind validation_data/3T3 left out. Evaluation uses the
manual interior masks of validation_data/{3T3,HeLa,MCF10A}: the culture's class inside cells,
background outside, cell edges not scored (see docs/benchmarks.md). "Unmixed" scores the three
validation images; "Artificial Mix" the six ordered pairs of them mixed by CellMixer's rule with
their ground-truth masks.

    python bench/cellmixer_deepcell.py [--data ../shared/data/deepcell_vanvalen2016]
    python bench/cellmixer_deepcell.py --models segmenter     # the paper's architecture, on its own

Prints the table in the layout of the paper's Table 1 and writes bench/results/cellmixer_deepcell.json
(plus PNGs of every prediction). Exits 0 with a message if the data folder is absent.

``--models`` picks the rows: ``baseline`` and ``cellmixer`` are U-Nets (the default, as ``--modes``);
``segmenter`` is CellMixer training of a DINOv2 ViT encoder with a Segmenter decoder, randomly
initialised (no DINOv2 weights offline), with its own ``--segmenter-*`` settings (800 iterations: about
6 minutes on 2 CPU cores); run alone, it writes bench/results/cellmixer_deepcell_segmenter.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, RESULTS, Timer, git_commit, machine, peak_rss_mb, save_json  # noqa: E402

import cellmixer  # noqa: E402
from cellmixer.io import ImageDataset, read_image, write_png  # noqa: E402
from cellmixer.methods.cellmixer import NOT_ANNOTATED, EvaluationImage, artificial_mixtures, evaluation_panel, score
from cellmixer.metrics import confusion_matrix, format_table, segmentation_scores
from cellmixer.ops import ForegroundParams, extract_foreground  # noqa: E402

CLASSES = ["3T3", "HeLa", "MCF10A"]
PHASE = "RawImages/img_000000000_Phase_000.png"
# One entry per unique field (SOURCE.txt): training_data/3T3/set3 == testing_data/3T3/set2 is the field that
# validation_data/3T3 is cropped from, so both stay out; testing_data/MCF10A/set2 == training_data/MCF10A.
TRAINING_FIELDS = {
    "3T3": ["training_data/3T3/set1/phase.png", "training_data/3T3/set2/phase.png", f"testing_data/3T3/set1/{PHASE}"],
    "HeLa": [f"training_data/HeLa_joint/set{i}/phase.png" for i in range(1, 6)] + [f"testing_data/HeLa/set1/{PHASE}"],
    "MCF10A": ["training_data/MCF10A/phase.png", f"testing_data/MCF10A/set1/{PHASE}"],
}
VALIDATION = {"3T3": "3T3", "HeLa": "hela", "MCF10A": "MCF10A"}  # folder -> file prefix of the manual masks
# The paper's Table 1 (Jurkat / K562 / PBMC brightfield; mAcc and mIoU columns are per-class Acc and IoU).
PAPER_TABLE1 = {
    "Baseline": {"Unmixed": {"mAcc": 96.79, "mIoU": 89.48}, "Artificial Mix": {"mAcc": 79.13, "mIoU": 70.35}},
    "CellMixer": {"Unmixed": {"mAcc": 95.85, "mIoU": 84.88}, "Artificial Mix": {"mAcc": 94.14, "mIoU": 85.60}},
}


def validation_items(root: Path) -> list[EvaluationImage]:
    items = []
    for k, name in enumerate(CLASSES, start=1):
        folder = root / "validation_data" / name
        prefix = VALIDATION[name]
        image = read_image(folder / "RawImages" / "phase.tif")
        interior = read_image(folder / "Validation" / f"{prefix}_validation_interior.tif") > 0
        edge = read_image(folder / "Validation" / f"{prefix}_validation_edge.tif") > 0
        truth = np.where(interior, k, 0)
        truth[edge & ~interior] = NOT_ANNOTATED  # membranes between touching cells: neither cell nor background
        items.append(EvaluationImage(name, image, truth.astype(np.int64), k))
    return items


def leakage_check(root: Path, dataset: ImageDataset, items: list[EvaluationImage]) -> dict:
    """Normalized cross-correlation of each validation image against every training field.

    Images are 2x down-sampled and high-pass filtered first, so that shared illumination patterns
    (vignetting, dust on the optics) do not count as overlap: a validation image cropped from a
    training field scores ~1.0, unrelated fields ~0.1-0.25.
    """
    from scipy import ndimage as ndi
    from skimage.feature import match_template
    from skimage.transform import downscale_local_mean

    def small(image):
        image = downscale_local_mean(image, 2)
        image = image - ndi.gaussian_filter(image, 10)
        return (image - image.mean()) / (image.std() + 1e-6)

    fields = [small(read_image(p)) for p in dataset.paths]
    worst = {}
    for item in items:
        template = small(item.image)
        worst[item.name] = round(max(float(match_template(f, template).max()) for f in fields), 3)
    pairs = [round(float(np.corrcoef(fields[i].ravel(), fields[j].ravel())[0, 1]), 3)
             for i in range(len(fields)) for j in range(i + 1, len(fields)) if fields[i].shape == fields[j].shape]
    return {"validation_vs_training_max_ncc": worst, "training_pairs_max_corr": max(pairs) if pairs else None}


def overlaps_not_scored(mixtures: list[EvaluationImage], items: list[EvaluationImage]) -> list[EvaluationImage]:
    """The same mixtures with pixels where both cultures have a cell left out: the blend is symmetric
    (lam = 0.5), so no model can tell which culture the rule puts on top there."""
    by_name = {item.name: item for item in items}
    result = []
    for mixture in mixtures:
        first, second = (by_name[n] for n in mixture.name.split(" + "))
        both = (first.truth != 0) & (second.truth != 0)
        result.append(EvaluationImage(mixture.name, mixture.image, np.where(both, NOT_ANNOTATED, mixture.truth)))
    return result


def mixture_bounds(items: list[EvaluationImage], mixtures: list[EvaluationImage], params: ForegroundParams) -> dict:
    """What two reference "models" score, to read the results against:

    - ``perfect``: every cell segmented and typed exactly; on a mixture, pixels covered by both
      cultures get one fixed class (the blend is symmetric, so no model can know which culture the
      rule put on top: one fixed choice is right in one of the two orders);
    - ``pseudo_labels``: the unsupervised foreground masks with the image's true class, mixed by the
      same rule with the same fixed choice on doubly covered pixels (a network that reproduced its
      training labels exactly).
    """
    n = len(CLASSES) + 1
    by_name = {item.name: item for item in items}
    masks = {item.name: extract_foreground(item.image, **params.to_dict()) * item.class_index for item in items}

    def mixed(first, second, a, b):
        prediction = np.where(b > 0, b, a)
        prediction[(a > 0) & (b > 0)] = min(first.class_index, second.class_index)
        return prediction

    def miou(pairs):
        matrix = sum(confusion_matrix(t, p, num_classes=n, ignore_value=NOT_ANNOTATED) for t, p in pairs)
        return round(segmentation_scores(matrix)["mIoU"], 4)

    pairs = [(by_name[m.name.split(" + ")[0]], by_name[m.name.split(" + ")[1]], m) for m in mixtures]
    overlap = [float(((a.truth > 0) & (b.truth > 0)).sum() / ((a.truth > 0) | (b.truth > 0)).sum()) for a, b, _ in pairs]
    return {
        "share_of_cell_pixels_covered_by_both": round(float(np.mean(overlap)), 3),
        "perfect": {"Unmixed": 1.0, "Artificial Mix": miou(
            (m.truth, mixed(a, b, np.maximum(a.truth, 0), np.maximum(b.truth, 0))) for a, b, m in pairs)},
        "pseudo_labels": {"Unmixed": miou((i.truth, masks[i.name]) for i in items), "Artificial Mix": miou(
            (m.truth, mixed(a, b, masks[a.name], masks[b.name])) for a, b, m in pairs)},
    }


def foreground_iou(root: Path, items: list[EvaluationImage], params: ForegroundParams) -> dict:
    """IoU of the unsupervised masks against the manual masks (cells = interior or edge)."""
    result = {}
    for item in items:
        mask = extract_foreground(item.image, **params.to_dict())
        truth = item.truth != 0  # interior or edge
        result[f"validation/{item.name}"] = round(float((mask & truth).sum() / (mask | truth).sum()), 4)
    for name, paths in TRAINING_FIELDS.items():
        for path in paths:
            folder = (root / path).parent
            features = [sorted(folder.glob(f"feature_{i}.*")) for i in (0, 1)]
            if not all(features):
                continue
            truth = (read_image(features[0][0]) > 0) | (read_image(features[1][0]) > 0)
            mask = extract_foreground(read_image(root / path), **params.to_dict())
            result[f"training/{path}"] = round(float((mask & truth).sum() / (mask | truth).sum()), 4)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "deepcell_vanvalen2016")
    parser.add_argument("--output", type=Path, default=RESULTS / "cellmixer_deepcell")
    parser.add_argument("--json", type=Path, default=None,
                        help="default: results/cellmixer_deepcell.json (cellmixer_deepcell_segmenter.json for "
                             "--models segmenter)")
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=192)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--lr-schedule", default="poly")
    parser.add_argument("--mix-probability", type=float, default=1.0)
    parser.add_argument("--boundary-ignore", type=int, default=0)
    parser.add_argument("--tversky", type=float, nargs=2, default=(0.3, 0.7), metavar=("ALPHA", "BETA"))
    parser.add_argument("--modes", nargs="+", default=["baseline", "cellmixer"])
    parser.add_argument("--models", nargs="+", choices=("baseline", "cellmixer", "segmenter"), default=None,
                        help="rows to train and score (default: the U-Net rows of --modes)")
    group = parser.add_argument_group("segmenter row (DINOv2 ViT + Segmenter decoder, random initialisation)")
    group.add_argument("--vit-size", default="small")
    group.add_argument("--segmenter-iterations", type=int, default=800)
    group.add_argument("--segmenter-batch-size", type=int, default=4)
    group.add_argument("--segmenter-crop-size", type=int, default=168,
                       help="crop side, also the model's input size and prediction tile (a multiple of 14)")
    group.add_argument("--segmenter-scale", type=float, default=0.5)
    group.add_argument("--segmenter-optimizer", default="adam")
    group.add_argument("--segmenter-learning-rate", type=float, default=2e-4)
    parser.add_argument("--augment", action="store_true", help="test-time augmentation (8 flips and rotations)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = args.models if args.models is not None else args.modes
    if args.json is None:
        args.json = RESULTS / ("cellmixer_deepcell_segmenter.json" if rows == ["segmenter"] else
                               "cellmixer_deepcell.json")
    if not (args.data / "validation_data").is_dir():
        print(f"DeepCell data not found at {args.data}; skipping (give --data).")
        return 0
    total = Timer()
    paths = [args.data / p for name in CLASSES for p in TRAINING_FIELDS[name]]
    labels = [k for k, name in enumerate(CLASSES, start=1) for _ in TRAINING_FIELDS[name]]
    dataset = ImageDataset(classes=CLASSES, root=args.data, paths=paths, labels=labels)
    items = validation_items(args.data)
    params = ForegroundParams()
    leakage = leakage_check(args.data, dataset, items)
    print("leakage check (max NCC of validation images in training fields):", leakage)
    fg = foreground_iou(args.data, items, params)
    print("unsupervised foreground IoU:", fg)
    mixtures = artificial_mixtures(items, limit=100, seed=args.seed)
    bounds = mixture_bounds(items, mixtures, params)
    print("mIoU of reference label maps (perfect / pseudo-labels), overlaps given one fixed class:", bounds)
    sets = {"Unmixed": items, "Artificial Mix": mixtures}
    unscored_overlaps = overlaps_not_scored(mixtures, items)
    results, timings, models = {}, {}, {}
    out = args.output
    (out / "predictions").mkdir(parents=True, exist_ok=True)
    for mode in rows:
        name = {"cellmixer": "CellMixer", "baseline": "Baseline", "segmenter": "CellMixer (Segmenter)"}[mode]
        if mode == "segmenter":  # CellMixer mixtures; the network and its optimisation differ
            network = dict(model="segmenter", model_options={"size": args.vit_size,
                                                             "input_size": args.segmenter_crop_size},
                           scale=args.segmenter_scale, iterations=args.segmenter_iterations,
                           batch_size=args.segmenter_batch_size, crop_size=args.segmenter_crop_size,
                           optimizer=args.segmenter_optimizer, learning_rate=args.segmenter_learning_rate)
        else:
            network = dict(mode=mode, model_options={"width": args.width, "depth": args.depth}, scale=args.scale,
                           iterations=args.iterations, batch_size=args.batch_size, crop_size=args.crop_size,
                           optimizer=args.optimizer, learning_rate=args.learning_rate)
        t = Timer()
        models[name] = cellmixer.train(
            dataset, out / "models" / mode, **network, lr_schedule=args.lr_schedule,
            mix_probability=args.mix_probability, boundary_ignore=args.boundary_ignore, foreground=params,
            tversky_alpha=args.tversky[0], tversky_beta=args.tversky[1],
            seed=args.seed, overwrite=True, mixing="blend", photometric=False,  # the paper's mixup, as published
            checkpoint_every=max(250, network["iterations"] // 4))
        timings[f"train_{mode}_s"] = t()
        t = Timer()
        results[name] = {}
        for set_name, set_items in sets.items():
            scores, predictions = score(models[name], set_items, augment=args.augment)
            results[name][set_name] = scores
            for item, prediction in zip(set_items, predictions):
                slug = "".join(c if c.isalnum() else "_" for c in f"{name}_{set_name}_{item.name}")
                write_png(out / "predictions" / f"{slug}.png",
                          evaluation_panel(item, prediction, CLASSES), overwrite=True)
            if set_name == "Artificial Mix":  # the same predictions, scored without the ambiguous overlaps
                matrix = sum(confusion_matrix(i.truth, p, num_classes=len(CLASSES) + 1, ignore_value=NOT_ANNOTATED)
                             for i, p in zip(unscored_overlaps, predictions))
                results[name]["Mix, overlaps not scored"] = segmentation_scores(matrix, ["background", *CLASSES])
        timings[f"evaluate_{mode}_s"] = t()
    table = format_table(results)
    print(table)
    summary = {}
    for name, by_set in results.items():
        summary[name] = {s: {"mAcc": round(100 * v["mAcc"], 2), "mIoU": round(100 * v["mIoU"], 2)}
                         for s, v in by_set.items()}
    targets = {}
    if "CellMixer" in results and "Baseline" in results:
        cm, bl = results["CellMixer"], results["Baseline"]
        targets = {
            "cellmixer_mix_minus_unmixed_mIoU": round(cm["Artificial Mix"]["mIoU"] - cm["Unmixed"]["mIoU"], 4),
            "cellmixer_minus_baseline_mix_mIoU": round(cm["Artificial Mix"]["mIoU"] - bl["Artificial Mix"]["mIoU"], 4),
        }
        targets["mix_within_0.05_of_unmixed"] = targets["cellmixer_mix_minus_unmixed_mIoU"] >= -0.05
        targets["at_least_0.15_above_baseline"] = targets["cellmixer_minus_baseline_mix_mIoU"] >= 0.15
        print("targets:", targets)
    timings["total_s"] = total()
    print("timings:", timings)
    payload = {
        "command": "python bench/" + Path(__file__).name + " " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": str(args.data),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        | {"foreground": params.to_dict()},
        "training_images": {name: TRAINING_FIELDS[name] for name in CLASSES},
        "machine": machine(), "commit": git_commit(), "leakage_check": leakage, "foreground_iou": fg, "mixture_bounds": bounds,
        "results": results, "summary": summary, "paper_table1": PAPER_TABLE1, "targets": targets,
        "timings": timings, "peak_rss_mb": round(peak_rss_mb(), 1), "table": table,
    }
    path = save_json(args.json, payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
