"""Scoring nucleus label images against ground truth, image by image and over a whole set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..._errors import CellmixerError
from ...io import (
    IMAGE_SUFFIXES,
    check_overwrite,
    locks_outputs,
    prepare_output_dir,
    read_labels,
    write_csv,
    write_json,
    write_text,
)
from ...metrics import dice_per_class, instance_scores
from ...ops import three_class_targets

PER_IMAGE_FILE = "nuclei_evaluation.csv"
SUMMARY_FILE = "nuclei_evaluation.json"


def summarize_instance_scores(rows: list[dict]) -> dict:
    """Scores of a set of images from the :func:`instance_scores` of each.

    The object-wise Jaccard is pooled (matches and object counts summed over images, as one
    large image); F1, AP and the Dice values are means over images; error counts are sums.
    """
    if not rows:
        return {}
    matched, n_true, n_pred = (sum(r[k] for r in rows) for k in ("matched", "n_true", "n_pred"))
    denominator = n_true + n_pred - matched
    summary = {"images": len(rows), "object_jaccard": matched / denominator if denominator else 1.0,
               "object_jaccard_mean": float(np.mean([r["object_jaccard"] for r in rows])),
               "matched": matched, "n_true": n_true, "n_pred": n_pred}
    for key in ("f1_50", "mean_f1", "ap_50", "average_precision", "precision_50", "recall_50"):
        summary[key] = float(np.mean([r[key] for r in rows]))
    for key in ("splits", "merges", "missed_70"):
        summary[key] = int(sum(r[key] for r in rows))
    for key in ("dice_nuclei", "dice_separations"):
        values = [r[key] for r in rows if key in r and not np.isnan(r[key])]
        if values:
            summary[key] = float(np.mean(values))
    return summary


def nucleus_scores(truth, labels, *, classes=None, exclude_border: bool = True) -> dict:
    """:func:`instance_scores` of one image plus, given the 3-class map ``classes`` (0 background,
    1 nucleus, 2 separation line), the pixel Dice of nuclei and separation lines against the
    truth's 3-class map (:func:`cellmixer.ops.three_class_targets`), on the whole image."""
    scores = instance_scores(truth, labels, exclude_border=exclude_border)
    if classes is not None:
        dice = dice_per_class(three_class_targets(truth), classes, num_classes=3)
        scores.update(dice_nuclei=float(dice[1]), dice_separations=float(dice[2]))
    return scores


def _find_truth(folder: Path, stem: str, suffix: str) -> Path | None:
    for name in (f"{stem}{suffix}", stem):
        for ext in IMAGE_SUFFIXES:
            if (folder / f"{name}{ext}").is_file():
                return folder / f"{name}{ext}"
    return None


def format_nuclei_table(results: dict) -> str:
    """Markdown table with one row per method: the columns of the paper's Tables 1 and 2 and more."""
    header = ("| Method | Dice nuclei | Dice separations | Object Jaccard | F1@0.5 | mean F1 0.5-0.9 | AP@0.5 | "
              "objects (truth) | splits | merges |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [header]
    for name, s in results.items():
        dice = [f"{s[k]:.3f}" if k in s else "-" for k in ("dice_nuclei", "dice_separations")]
        lines.append(f"| {name} | {dice[0]} | {dice[1]} | {s['object_jaccard']:.3f} | {s['f1_50']:.3f} | "
                     f"{s['mean_f1']:.3f} | {s['ap_50']:.3f} | {s['n_pred']} ({s['n_true']}) | {s['splits']} | "
                     f"{s['merges']} |")
    return "\n".join(lines)


@locks_outputs
def evaluate_nuclei(predictions, truth, *, truth_suffix: str = "", exclude_border: bool = True, output=None,
                    overwrite: bool = False) -> dict:
    """Score the nucleus label images of a folder against ground-truth label images.

    Parameters
    ----------
    predictions : str or Path
        Folder written by :func:`cellmixer.predict_nuclei` or :func:`cellmixer.label_nuclei`:
        ``<name>_labels.tif`` for each image (in sub-folders too), and ``<name>_classes.tif`` (3-class map) when
        written, for the pixel Dice.
    truth : str or Path
        Folder of ground-truth label images ``<name><truth_suffix>.<ext>`` (or ``<name>.<ext>``):
        any integer label image, or RGB(A) masks (see :func:`cellmixer.io.read_labels`).
    exclude_border : bool
        Remove objects touching the image edge from both, as Matuszewski & Ranefall do.
    output : str or Path, optional
        Folder for ``nuclei_evaluation.csv`` (one row per image), ``nuclei_evaluation.json``
        (the summary) and ``nuclei_evaluation.md`` (the table).

    Returns
    -------
    dict
        ``summary`` (:func:`summarize_instance_scores`), ``images`` (per-image rows) and
        ``table`` (markdown).
    """
    predictions, truth = Path(predictions), Path(truth)
    for option, folder in (("predictions", predictions), ("--truth", truth)):
        if not folder.is_dir():
            raise CellmixerError(f"{option} {folder}: no such folder.")
    found = sorted(predictions.rglob("*_labels.tif"))  # `nuclei label` mirrors input sub-folders
    if not found:
        raise CellmixerError(f"{predictions}: no *_labels.tif files; give the folder written by `cellmixer nuclei "
                             "predict` or `cellmixer nuclei label`.")
    out = None
    if output is not None:
        out = prepare_output_dir(output)
        check_overwrite([out / PER_IMAGE_FILE, out / SUMMARY_FILE, out / "nuclei_evaluation.md"], overwrite=overwrite)
    rows = []
    for path in found:
        stem = path.name[: -len("_labels.tif")]
        truth_path = _find_truth(truth, stem, truth_suffix)
        if truth_path is None:
            raise CellmixerError(f"{path}: no ground truth '{stem}{truth_suffix}.tif' (or .png) in {truth}; check "
                                 "--truth and --truth-suffix.")
        labels, true_labels = read_labels(path), read_labels(truth_path)
        if labels.shape != true_labels.shape:
            raise CellmixerError(f"{path}: {labels.shape[0]}x{labels.shape[1]} labels but the truth {truth_path} is "
                                 f"{true_labels.shape[0]}x{true_labels.shape[1]}; they must be of the same image.")
        classes_path = path.with_name(f"{stem}_classes.tif")
        classes = read_labels(classes_path) if classes_path.is_file() else None
        scores = nucleus_scores(true_labels, labels, classes=classes, exclude_border=exclude_border)
        rounded = {k: round(v, 6) if isinstance(v, float) else v for k, v in scores.items()}
        rows.append({"image": str(path.relative_to(predictions))[: -len("_labels.tif")], **rounded})
    summary = summarize_instance_scores(rows)
    table = format_nuclei_table({predictions.name: summary})
    if out is not None:
        write_csv(out / PER_IMAGE_FILE, rows, overwrite=overwrite)
        write_json(out / SUMMARY_FILE, {"predictions": str(predictions), "truth": str(truth),
                                        "exclude_border": exclude_border, "summary": summary}, overwrite=overwrite)
        write_text(out / "nuclei_evaluation.md", table + "\n", overwrite=overwrite)
    return {"summary": summary, "images": rows, "table": table}
