"""The ``cellmixer`` command line: one subcommand per step, each mirroring a Python function."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from .. import __version__
from .._errors import CellmixerError
from ..models import PRECISIONS
from ..pseudolabels import THRESHOLD_METHODS, ForegroundParams
from ..training import NucleiTrainingConfig, TrainingConfig
from ._network import add_network_options, network_kwargs, tile_size

FOREGROUND_HELP = {
    "sigma_pre": "Gaussian smoothing (pixels) before the Sobel operator",
    "sigma_post": "Gaussian smoothing (pixels) of the gradient magnitude",
    "erosion_size": "side (pixels) of the grey erosion's square structuring element; 1 disables it",
    "threshold": f"{', '.join(THRESHOLD_METHODS)}, or a number on the processed gradient map",
    "log_gradient": "threshold the log of the gradient map",
    "block_size": "neighbourhood (pixels) of the 'local' threshold",
    "threshold_offset": "lowers the threshold (grows the foreground) by this much",
    "min_object_area": "drop foreground objects smaller than this (pixels)",
    "max_hole_area": "fill holes up to this size (pixels)",
}


def _threshold(value: str):
    if value in THRESHOLD_METHODS:
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"use one of {', '.join(THRESHOLD_METHODS)} or a number") from None


def _add_data_options(parser, *, classes: bool = True) -> None:
    group = parser.add_argument_group("input images")
    if classes:
        group.add_argument("--classes", nargs="+", metavar="NAME",
                           help="class folders to use, in this order (default: all, sorted)")
    group.add_argument("--pattern", default="*", help="only files whose name matches this glob (e.g. '*phase*')")
    group.add_argument("--channel", type=int, default=None, help="channel of multi-channel images (0-based)")


def _add_foreground_options(parser) -> None:
    group = parser.add_argument_group("unsupervised foreground (pseudo-labels)")
    for f in fields(ForegroundParams):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "log_gradient":
            group.add_argument("--no-log-gradient", dest="log_gradient", action="store_false",
                               help="threshold the gradient map itself, not its log")
        elif f.name == "threshold":
            group.add_argument(flag, type=_threshold, default=f.default, help=f"{FOREGROUND_HELP[f.name]} (default: %(default)s)")
        else:
            group.add_argument(flag, type=type(f.default), default=f.default,
                               help=f"{FOREGROUND_HELP[f.name]} (default: %(default)s)")


def _foreground(args) -> ForegroundParams:
    return ForegroundParams(**{f.name: getattr(args, f.name) for f in fields(ForegroundParams)})


def _add_precision_option(group, default: str) -> None:
    group.add_argument("--precision", choices=PRECISIONS, default=default,
                       help="network arithmetic; auto = bfloat16 where the CPU supports it natively "
                            "(about 3x faster), else float32 (default: %(default)s)")


def _add_tiling_options(parser) -> None:
    group = parser.add_argument_group("sliding window")
    group.add_argument("--tile-size", type=tile_size, default="auto",
                       help="tile side in pixels; auto = the model's input size: 518 for ViT models, 512 for U-Nets "
                            "(default: %(default)s)")
    group.add_argument("--overlap", type=float, default=0.25, help="fraction of a tile shared with neighbours "
                                                                   "(default: %(default)s)")
    group.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default: %(default)s)")
    _add_precision_option(group, "fp32")
    group.add_argument("--augment", action="store_true",
                       help="test-time augmentation: average over the 8 flips and rotations (8x slower)")


def _add_output_options(parser, *, output_required: bool = True, default=None) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--output", "-o", required=output_required, default=default,
                       help="output folder" + (f" (default: {default})" if default else ""))
    group.add_argument("--overwrite", action="store_true", help="replace existing result files")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def _add_optimisation_options(parser, config_class, *, augment_help: str, crop_help: str = ""):
    """The options every training shares, with the defaults of ``config_class``; returns the
    "optimisation" group for the method's own options."""
    d = config_class()
    group = parser.add_argument_group("optimisation")
    group.add_argument("--iterations", type=int, default=d.iterations, help="(default: %(default)s)")
    group.add_argument("--batch-size", type=int, default=d.batch_size, help="(default: %(default)s)")
    group.add_argument("--crop-size", type=int, default=d.crop_size, help=f"{crop_help} (default: %(default)s)".strip())
    group.add_argument("--optimizer", choices=("sgd", "adam"), default=d.optimizer, help="(default: %(default)s)")
    group.add_argument("--learning-rate", type=float, default=d.learning_rate, help="(default: %(default)s)")
    group.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum (default: %(default)s)")
    group.add_argument("--weight-decay", type=float, default=d.weight_decay, help="(default: %(default)s)")
    group.add_argument("--lr-schedule", choices=("constant", "poly"), default=d.lr_schedule,
                       help="(default: %(default)s)")
    group.add_argument("--no-augment", dest="augment", action="store_false", help=augment_help)
    group.add_argument("--seed", type=int, default=d.seed)
    group.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    _add_precision_option(group, d.precision)
    checkpoints = parser.add_argument_group("checkpoints")
    checkpoints.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                             help="iterations between checkpoints (default: %(default)s)")
    checkpoints.add_argument("--resume", action="store_true", help="continue the run in --output from its checkpoint")
    return group


def _optimisation_kwargs(args) -> dict:
    names = ("iterations", "batch_size", "crop_size", "optimizer", "learning_rate", "momentum", "weight_decay",
             "lr_schedule", "augment", "seed", "threads", "precision", "checkpoint_every", "resume", "overwrite")
    return {name: getattr(args, name) for name in names}


def _add_nuclei_parser(sub) -> None:
    from ..pseudolabels import CLASSICAL_METHODS

    nuclei = sub.add_parser("nuclei", help="nucleus instances without annotation: label, train, predict, evaluate",
                            description="Classical labels (CellProfiler's IdentifyPrimaryObjects) -> 3-class U-Net "
                                        "(background, nucleus, separation line) -> instance label images.")
    steps = nuclei.add_subparsers(dest="step", metavar="STEP", required=True)

    def classical_options(group) -> None:
        group.add_argument("--diameter", type=int, nargs=2, default=(10, 50), metavar=("MIN", "MAX"),
                           help="typical nucleus diameter range in pixels (default: 10 50)")

    p = steps.add_parser("label", help="label nuclei with the classical pipeline (the training labels)",
                         description="Write <name>_labels.tif, <name>_objects.csv and overlays for each image.")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    group = p.add_argument_group("classical pipeline")
    group.add_argument("--method", choices=CLASSICAL_METHODS, default="shape/intensity",
                       help="declumping/dividing lines, or the consensus of the 3 best (default: %(default)s)")
    classical_options(group)
    _add_data_options(p, classes=False)
    _add_output_options(p)
    p.add_argument("--no-overlays", dest="overlays", action="store_false", help="skip the overlay PNGs")

    p = steps.add_parser("train", help="train a 3-class nucleus model on classical labels",
                         description="Label the images classically, train a U-Net on the 3-class targets with the "
                                     "log-Dice loss, keep the weights with the lowest validation loss.")
    p.add_argument("images", nargs="+", help="image files or folders of nuclei")
    group = p.add_argument_group("labels")
    group.add_argument("--labels", choices=(*CLASSICAL_METHODS, "files"), default=None,
                       help="classical method, or 'files' to read label images (default: shape/intensity, or files "
                            "with --label-dir)")
    group.add_argument("--label-dir", default=None, help="folder of label images <name><suffix>.tif")
    group.add_argument("--label-suffix", default="_labels", help="(default: %(default)s)")
    group.add_argument("--validation", nargs="+", default=None,
                       help="validation images or folders (default: --validation-fraction of the images)")
    group.add_argument("--validation-fraction", type=float, default=0.2, help="(default: %(default)s)")
    group.add_argument("--line-radius", type=int, default=1,
                       help="separation-line pixels have another nucleus this close (default: %(default)s)")
    group.add_argument("--min-solidity", type=float, default=0.0,
                       help="leave classical objects less convex than this out of the loss, e.g. 0.9 (mostly "
                            "unsplit clumps; default: %(default)s keeps all)")
    classical_options(group)
    add_network_options(p)
    group = _add_optimisation_options(p, NucleiTrainingConfig, crop_help="crops, and tiles at prediction",
                                      augment_help="no flips and rotations")
    group.add_argument("--dice-weights", type=float, nargs=3, default=(0.2, 0.4, 0.4), metavar=("BG", "N", "SL"),
                       help="log-Dice weights (default: 0.2 0.4 0.4)")
    _add_data_options(p, classes=False)
    _add_output_options(p)

    def instance_options(parser) -> None:
        group = parser.add_argument_group("instances")
        group.add_argument("--remove-border", action="store_true", help="drop nuclei touching the image edge")
        group.add_argument("--min-area", type=int, default=0, help="drop nuclei smaller than this (pixels)")

    p = steps.add_parser("predict", help="segment nuclei with a trained model",
                         description="Write <name>_labels.tif (0 background, 1..n nuclei), <name>_objects.csv, "
                                     "overlays and nuclei.csv.")
    p.add_argument("model", help="model folder written by `cellmixer nuclei train`")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    instance_options(p)
    _add_data_options(p, classes=False)
    group = p.add_argument_group("sliding window")
    group.add_argument("--overlap", type=float, default=0.25, help="(default: %(default)s)")
    group.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default: %(default)s)")
    _add_precision_option(group, "fp32")
    group.add_argument("--augment", action="store_true", help="average over the 8 flips and rotations (8x slower)")
    _add_output_options(p)
    p.add_argument("--classes", action="store_true", help="also write <name>_classes.tif (3-class map)")
    p.add_argument("--no-overlays", dest="overlays", action="store_false", help="skip the overlay PNGs")

    p = steps.add_parser("evaluate", help="score nucleus label images against ground truth",
                         description="Object-wise Jaccard, F1 and AP at IoU thresholds, splits and merges, pixel Dice.")
    p.add_argument("predictions", help="folder written by `cellmixer nuclei predict` or `label`")
    p.add_argument("--truth", required=True, help="folder of ground-truth label images")
    p.add_argument("--truth-suffix", default="", help="truth of a is a<suffix>.tif (default: none)")
    p.add_argument("--keep-border", dest="exclude_border", action="store_false",
                   help="score nuclei touching the image edge too (default: removed from both, as the paper)")
    _add_output_options(p, output_required=False, default="nuclei_evaluation")


def _run_nuclei(args, progress: bool) -> None:
    if args.step == "label":
        from ..pseudolabels import label_nuclei

        rows = label_nuclei(args.inputs, args.output, method=args.method, pattern=args.pattern, channel=args.channel,
                            diameter_range=tuple(args.diameter), overlays=args.overlays, overwrite=args.overwrite,
                            progress=progress)
        print(f"labelled {len(rows)} images ({sum(r['objects'] for r in rows)} nuclei) -> {args.output}")
    elif args.step == "train":
        from ..training import train_nuclei

        model = train_nuclei(
            args.images, args.output, validation=args.validation, labels=args.labels, label_dir=args.label_dir,
            label_suffix=args.label_suffix, pattern=args.pattern, channel=args.channel,
            diameter_range=tuple(args.diameter), **network_kwargs(args),
            dice_weights=tuple(args.dice_weights), line_radius=args.line_radius, min_solidity=args.min_solidity,
            validation_fraction=args.validation_fraction, progress=progress, **_optimisation_kwargs(args))
        info = model.config["training"]
        print(f"trained nucleus model on {info['labels']} labels ({info['iterations']} iterations; kept iteration "
              f"{info['selected_iteration']}, validation loss {info['validation_loss']:.4f}) -> {args.output}")
    elif args.step == "predict":
        from ..inference import predict_nuclei

        rows = predict_nuclei(args.model, args.inputs, args.output, pattern=args.pattern, channel=args.channel,
                              overlap=args.overlap, batch_size=args.batch_size, precision=args.precision,
                              augment=args.augment, remove_border=args.remove_border, min_area=args.min_area,
                              classes=args.classes, overlays=args.overlays, overwrite=args.overwrite,
                              progress=progress)
        print(f"segmented {len(rows)} images ({sum(r['objects'] for r in rows)} nuclei) -> {args.output}")
    elif args.step == "evaluate":
        from ..metrics import evaluate_nuclei

        result = evaluate_nuclei(args.predictions, args.truth, truth_suffix=args.truth_suffix,
                                 exclude_border=args.exclude_border, output=args.output, overwrite=args.overwrite)
        print(result["table"])
        print(f"\nscores -> {args.output}/nuclei_evaluation.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellmixer",
        description="Cell-type segmentation trained from homogeneous cultures: no masks drawn. "
                    "Put the images of each cell type in DATA/<type>/, then: pseudolabel (check the "
                    "unsupervised masks), mix (look at artificial mixtures), train, predict, evaluate.")
    parser.add_argument("--version", action="version", version=f"cellmixer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("pseudolabel", help="write unsupervised foreground masks labelled by class, with QC pictures",
                       description="Find cells without annotation and label them with their folder's class.")
    p.add_argument("data", help="folder with one sub-folder of images per cell type")
    _add_data_options(p)
    _add_foreground_options(p)
    _add_output_options(p)
    p.add_argument("--no-overlays", dest="overlays", action="store_false", help="skip the QC PNGs")

    p = sub.add_parser("mix", help="write example artificial mixtures of two cultures",
                       description="Blend (or place side by side) crops of two cell types as training does.")
    p.add_argument("data", help="folder with one sub-folder of images per cell type")
    group = p.add_argument_group("mixtures")
    group.add_argument("--number", "-n", type=int, default=16, help="mixtures to write (default: %(default)s)")
    group.add_argument("--crop-size", type=int, default=256, help="crop side in pixels (default: %(default)s)")
    group.add_argument("--lam", type=float, default=0.5, help="weight of the first crop (default: %(default)s)")
    group.add_argument("--kind", choices=("blend", "mosaic"), default="blend",
                       help="CellMixer mixup, or cells side by side (default: %(default)s)")
    group.add_argument("--seed", type=int, default=0)
    _add_data_options(p)
    _add_foreground_options(p)
    _add_output_options(p)

    p = sub.add_parser("train", help="train a cell-type segmentation model",
                       description="Train from folders of homogeneous cultures; the folder name is the only label.")
    p.add_argument("data", help="folder with one sub-folder of images per cell type")
    group = p.add_argument_group("method")
    group.add_argument("--mode", choices=("cellmixer", "baseline"), default="cellmixer",
                       help="train on artificial mixtures (cellmixer) or homogeneous crops (baseline)")
    group.add_argument("--lam", type=float, default=0.5, help="mixup weight (default: %(default)s)")
    group.add_argument("--mix-probability", type=float, default=1.0,
                       help="share of samples that are mixtures (default: %(default)s)")
    group = add_network_options(p)
    group.add_argument("--scale", type=float, default=1.0,
                       help="resize images by this factor for the network, e.g. 0.5 for large cells (default: %(default)s)")
    group = _add_optimisation_options(p, TrainingConfig, augment_help="no flips, blur, noise or intensity changes")
    group.add_argument("--tversky-alpha", type=float, default=0.3, help="weight of false positives (default: %(default)s)")
    group.add_argument("--tversky-beta", type=float, default=0.7, help="weight of false negatives (default: %(default)s)")
    group.add_argument("--boundary-ignore", type=int, default=0,
                       help="leave pseudo-label pixels this close to an outline out of the loss (default: %(default)s)")
    _add_data_options(p)
    _add_foreground_options(p)
    _add_output_options(p)

    p = sub.add_parser("predict", help="label new images with a trained model",
                       description="Write <name>_labels.tif (0 background, k = k-th class), overlays and a CSV.")
    p.add_argument("model", help="model folder written by `cellmixer train`")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    _add_data_options(p, classes=False)
    _add_tiling_options(p)
    _add_output_options(p)
    p.add_argument("--probabilities", action="store_true", help="also write <name>_probabilities.tif")
    p.add_argument("--no-overlays", dest="overlays", action="store_false", help="skip the overlay PNGs")

    p = sub.add_parser("evaluate", help="score models against ground-truth masks (Table 1 layout)",
                       description="Per-class accuracy and IoU, mAcc and mIoU, on unmixed images and on "
                                   "artificial mixtures of them.")
    p.add_argument("models", nargs="+", help="model folder(s) with the same classes")
    group = p.add_argument_group("ground truth")
    group.add_argument("--data", required=True, help="DATA/<class>/ folders of annotated homogeneous cultures, or "
                                                     "a folder of mixed cultures with class-index masks")
    group.add_argument("--masks-dir", default=None, help="folder of the masks (default: beside the images)")
    group.add_argument("--mask-suffix", default="_masks", help="mask of a.tif is a<suffix>.tif (default: %(default)s)")
    group.add_argument("--ignore-value", type=int, default=None,
                       help="mask value of pixels not annotated (default: none for DATA/<class>/ folders, where "
                            "any non-zero pixel is a cell; 255 for class-index masks of mixed cultures)")
    group.add_argument("--artificial", type=int, default=100, help="artificial mixtures to score; 0 for none "
                                                                   "(default: %(default)s)")
    group.add_argument("--lam", type=float, default=0.5, help="mixup weight (default: %(default)s)")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--names", nargs="+", default=None, help="row names for the models")
    _add_data_options(p, classes=False)
    _add_tiling_options(p)
    _add_output_options(p, output_required=False, default="evaluation")
    p.add_argument("--no-overlays", dest="overlays", action="store_false", help="skip the per-image PNGs")

    _add_nuclei_parser(sub)
    from ._typed import add_typed_parser

    add_typed_parser(sub)
    from ._centroids import add_centroids_parser

    add_centroids_parser(sub)

    p = sub.add_parser("demo", help="run everything on generated cultures (a few minutes, no download)",
                       description="Generate three cell types, train baseline and CellMixer, compare them.")
    p.add_argument("--iterations", type=int, default=600, help="per model (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    _add_output_options(p, output_required=False, default="demo_output")
    return parser


def run(args) -> int:
    progress = not args.quiet
    if args.command == "pseudolabel":
        from ..pseudolabels import pseudolabel

        rows = pseudolabel(args.data, args.output, classes=args.classes, pattern=args.pattern, channel=args.channel,
                           foreground=_foreground(args), overlays=args.overlays, overwrite=args.overwrite,
                           progress=progress)
        print(f"pseudo-labelled {len(rows)} images -> {args.output}")
    elif args.command == "mix":
        from ..mixing import mix

        rows = mix(args.data, args.output, number=args.number, crop_size=args.crop_size, lam=args.lam, kind=args.kind,
                   classes=args.classes, pattern=args.pattern, channel=args.channel, foreground=_foreground(args),
                   seed=args.seed, overwrite=args.overwrite, progress=progress)
        print(f"wrote {len(rows)} mixtures -> {args.output}")
    elif args.command == "train":
        from ..training import train

        model = train(args.data, args.output, classes=args.classes, pattern=args.pattern, channel=args.channel,
                      mode=args.mode, **network_kwargs(args),
                      scale=args.scale,
                      lam=args.lam, mix_probability=args.mix_probability, tversky_alpha=args.tversky_alpha,
                      tversky_beta=args.tversky_beta, boundary_ignore=args.boundary_ignore,
                      foreground=_foreground(args), progress=progress, **_optimisation_kwargs(args))
        info = model.config["training"]
        print(f"trained {info['mode']} model for {', '.join(model.classes)} "
              f"({info['iterations']} iterations, final loss {info['final_loss']:.4f}) -> {args.output}")
    elif args.command == "predict":
        from ..inference import predict

        rows = predict(args.model, args.inputs, args.output, pattern=args.pattern, channel=args.channel,
                       tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size,
                       probabilities=args.probabilities, overlays=args.overlays, precision=args.precision,
                       augment=args.augment,
                       overwrite=args.overwrite, progress=progress)
        print(f"predicted {len(rows)} images -> {args.output}")
    elif args.command == "evaluate":
        from ..metrics import evaluate

        result = evaluate(args.models, args.data, model_names=args.names, masks_dir=args.masks_dir,
                          mask_suffix=args.mask_suffix, pattern=args.pattern, channel=args.channel,
                          ignore_value=args.ignore_value, artificial=args.artificial, lam=args.lam, seed=args.seed,
                          tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size,
                          precision=args.precision, augment=args.augment, output=args.output, overlays=args.overlays,
                          overwrite=args.overwrite, progress=progress)
        print(result["table"])
        print(f"\nscores -> {args.output}/evaluation.json")
    elif args.command == "nuclei":
        _run_nuclei(args, progress)
    elif args.command == "typed":
        from ._typed import run_typed

        run_typed(args, progress)
    elif args.command == "centroids":
        from ._centroids import run_centroids

        run_centroids(args, progress)
    elif args.command == "demo":
        from ..demo import demo
        from ..demo._run import print_demo_report

        summary = demo(args.output, seed=args.seed, iterations=args.iterations, overwrite=args.overwrite,
                       progress=progress)
        print_demo_report(summary, args.output)
    return 0


def _command_name(args) -> str:
    return f"{args.command} {args.step}" if getattr(args, "step", None) else args.command


def main(argv=None) -> int:
    """Entry point of the ``cellmixer`` command; returns the exit status."""
    from ..training import TrainingInterrupted

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except TrainingInterrupted as exc:
        print(f"cellmixer: {exc}", file=sys.stderr)
        return 130
    except CellmixerError as exc:
        print(f"cellmixer {_command_name(args)}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cellmixer: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"cellmixer {_command_name(args)}: error: out of memory; use a smaller --tile-size, --batch-size or "
              "--crop-size.", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permission denied, ... while writing or reading
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"cellmixer {_command_name(args)}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
