"""``cellmixer centroids label|train|predict|evaluate``: instances from one point per cell, or from a nuclear stain."""

from __future__ import annotations

import dataclasses

from .._settings import default_of, field_of, spec
from ..methods.centroids import (
    CentroidSegmentation,
    CentroidTiling,
    CentroidTrainingConfig,
    Rescaling,
    evaluate_centroids,
    label_centroids,
    predict_centroids,
    train_centroids,
)
from ..metrics import PointMatching
from ..ops import ClassicalSettings
from ._options import (
    add_architecture_options,
    add_data_options,
    add_device_options,
    add_nuclear_options,
    add_output_options,
    add_plate_options,
    add_settings,
    add_training_options,
    architecture_kwargs,
    nuclear_kwargs,
    plane_kwargs,
    settings_args,
    training_kwargs,
)

DESCRIPTION = ("Points (a CSV, ImageJ ROIs, or the nuclei of a paired nuclear stain: no annotation) -> U-Net "
               "detector of cell centres -> guided backpropagation from each cell -> one graph cut per cell -> "
               "instance label images (Nishimura et al. 2019).")


def _add_source_options(parser) -> None:
    group = parser.add_argument_group("cell points (give one source)")
    group.add_argument("--points", default=None, help="CSV with columns image,x,y (x = column, y = row, pixels)")
    group.add_argument("--rois", default=None,
                       help="folder of ImageJ ROIs <image name>.zip or .roi (points or outlines)")
    add_nuclear_options(group)
    add_settings(group, ClassicalSettings, ["diameter_range", "method"])  # of the nuclear stain


def _source_kwargs(args) -> dict:
    return dict(points=args.points, rois=args.rois, **nuclear_kwargs(args), **settings_args(args, ClassicalSettings))


def _add_segmentation_options(parser) -> None:
    """The detection and graph-cut settings (default: the model's), the cell windows per backward pass."""
    fields = [f.name for f in dataclasses.fields(CentroidSegmentation) if spec(f).get("cli")]
    detection = ["threshold", "min_area"]
    no_defaults = {name: None for name in fields}  # the model's settings apply unless given
    add_settings(parser.add_argument_group("detection (default: the model's settings)"), CentroidSegmentation,
                 detection, defaults=no_defaults)
    group = parser.add_argument_group("guided backpropagation and graph cut (default: the model's settings)")
    add_settings(group, CentroidSegmentation, [n for n in fields if n not in detection], defaults=no_defaults)
    add_settings(group, CentroidTiling, ["batch_size"])


def add_parsers(sub) -> None:
    """Register ``cellmixer centroids`` and its steps on the main parser's sub-parsers."""
    centroids = sub.add_parser("centroids", help="cell instances from points or a nuclear stain: label, train, "
                                                 "predict, evaluate", description=DESCRIPTION)
    steps = centroids.add_subparsers(dest="step", metavar="STEP", required=True)

    p = steps.add_parser("label", help="write the cell points of each image (to check or correct them)",
                         description="Write points.csv (image,x,y), <name>_points.png and points.json.")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    _add_source_options(p)
    add_settings(p, CentroidTrainingConfig, ["sigma"])  # of the --likelihood maps
    p.add_argument("--likelihood", action="store_true", help="also write <name>_likelihood.tif (training target)")
    add_data_options(p, classes=False)
    add_output_options(p)
    p.add_argument("--no-overlays", dest="overlays", action="store_false", help="skip the PNGs")

    p = steps.add_parser("train", help="train the cell-centre detector on points",
                         description="Gaussian likelihood maps of the points -> U-Net with the mean squared error.")
    p.add_argument("images", nargs="+", help="image files or folders (phase contrast, DIC, brightfield)")
    _add_source_options(p)
    group = p.add_argument_group("network")
    add_architecture_options(group, ["width", "depth"])
    add_settings(group, CentroidTrainingConfig, ["scale", "sigma"])
    add_training_options(p, CentroidTrainingConfig)
    add_data_options(p, classes=False)
    add_output_options(p)

    p = steps.add_parser("predict", help="segment cells with a trained detector",
                         description="Write <name>_labels.tif (0 background, 1..n cells), <name>_objects.csv, "
                                     "<name>_detections.csv, <name>_overlay.png and cells.csv.")
    p.add_argument("model", help="model folder written by `cellmixer centroids train`")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    _add_segmentation_options(p)
    group = p.add_argument_group("network")
    add_settings(group, Rescaling)
    add_settings(group, CentroidTiling, ["tile_size"])
    add_device_options(group, default_of(field_of(CentroidTiling, "precision")))
    add_data_options(p, classes=False, planes=True)
    add_plate_options(p)
    add_output_options(p, resume=True)
    p.add_argument("--no-overlays", dest="overlays", action="store_false", help="skip the overlay PNGs")

    p = steps.add_parser("evaluate", help="score cells against ground truth (F-measure, mDice, F1, AP)",
                         description="Detection F-measure (one-to-one within --max-distance), the paper's mDice, "
                                     "F1 and AP at IoU 0.5, AP over 0.50:0.95.")
    p.add_argument("predictions", help="folder written by `cellmixer centroids predict`")
    p.add_argument("--truth", required=True, help="folder of ground truth: label images or ImageJ ROIs (.zip, .roi)")
    p.add_argument("--truth-suffix", default="", help="truth of a is a<suffix>.tif or .zip (default: none)")
    add_settings(p, PointMatching)
    add_output_options(p, output_required=False, default="centroid_evaluation")


def run(args, progress: bool) -> None:
    """Run the ``cellmixer centroids`` step of ``args``."""
    if args.step == "label":
        rows = label_centroids(args.inputs, args.output, pattern=args.pattern, channel=args.channel, sigma=args.sigma,
                               likelihood=args.likelihood, overlays=args.overlays, overwrite=args.overwrite,
                               progress=progress, **_source_kwargs(args))
        print(f"wrote the points of {len(rows)} images ({sum(r['points'] for r in rows)} cells) -> "
              f"{args.output}/points.csv")
    elif args.step == "train":
        model = train_centroids(args.images, args.output, pattern=args.pattern, channel=args.channel,
                                model_options=architecture_kwargs(args), progress=progress,
                                **_source_kwargs(args), **training_kwargs(args, CentroidTrainingConfig))
        info = model.config["training"]
        print(f"trained the cell-centre detector on {info['train_images']} images, {info['points']} points "
              f"({info['iterations']} iterations, final loss {info['final_loss']:.4f}) -> {args.output}")
    elif args.step == "predict":
        rows = predict_centroids(args.model, args.inputs, args.output, pattern=args.pattern, channel=args.channel,
                                 **plane_kwargs(args), overlays=args.overlays, overwrite=args.overwrite,
                                 resume=args.resume, scheduler=args.scheduler, progress=progress, rescale=args.rescale,
                                 batch_size=args.batch_size, tile_size=args.tile_size, precision=args.precision,
                                 device=args.device, **settings_args(args, CentroidSegmentation, given_only=True))
        print(f"segmented {len(rows)} images ({sum(r['objects'] for r in rows)} cells) -> {args.output}")
    elif args.step == "evaluate":
        result = evaluate_centroids(args.predictions, args.truth, truth_suffix=args.truth_suffix,
                                    max_distance=args.max_distance, output=args.output, overwrite=args.overwrite)
        print(result["table"])
        print(f"\nscores -> {args.output}/centroid_evaluation.json")
