"""``cellmixer nuclei label|train|predict|evaluate``: nucleus instances without annotation."""

from __future__ import annotations

from ..methods.nuclei import NucleiTrainingConfig, evaluate_nuclei, label_nuclei, predict_nuclei, train_nuclei
from ..ops import CLASSICAL_METHODS, ClassicalSettings, InstanceSettings
from ._options import (
    add_chunking_options,
    add_data_options,
    add_network_options,
    add_output_options,
    add_settings,
    add_tiling_options,
    add_training_options,
    chunking_args,
    network_kwargs,
    plane_kwargs,
    settings_args,
    training_kwargs,
)


def add_parsers(sub) -> None:
    nuclei = sub.add_parser("nuclei", help="nucleus instances without annotation: label, train, predict, evaluate",
                            description="Classical labels (CellProfiler's IdentifyPrimaryObjects) -> 3-class U-Net "
                                        "(background, nucleus, separation line) -> instance label images.")
    steps = nuclei.add_subparsers(dest="step", metavar="STEP", required=True)

    p = steps.add_parser("label", help="label nuclei with the classical pipeline (the training labels)",
                         description="Write <name>_labels.tif, <name>_objects.csv, <name>_rois.zip (Fiji), "
                                     "<name>.geojson (QuPath), overlays and coco_dataset.json.")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    add_settings(p.add_argument_group("classical pipeline"), ClassicalSettings)
    add_data_options(p, classes=False, planes=True)
    add_output_options(p)
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
    add_settings(group, NucleiTrainingConfig, ["validation_fraction", "line_radius", "min_solidity"])
    add_settings(group, ClassicalSettings, ["diameter_range"])
    add_network_options(p)
    add_training_options(p, NucleiTrainingConfig, own=("dice_weights",))
    add_data_options(p, classes=False)
    add_output_options(p)

    def instance_options(parser) -> None:
        add_settings(parser.add_argument_group("instances"), InstanceSettings, ["remove_border", "min_area"])

    p = steps.add_parser("predict", help="segment nuclei with a trained model",
                         description="Write <name>_labels.tif (0 background, 1..n nuclei), <name>_objects.csv, "
                                     "<name>_rois.zip (Fiji), <name>.geojson (QuPath), overlays, coco_dataset.json "
                                     "and nuclei.csv.")
    p.add_argument("model", help="model folder written by `cellmixer nuclei train`")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    instance_options(p)
    add_data_options(p, classes=False, planes=True)
    add_tiling_options(p, tile_size_option=False)
    add_chunking_options(p)
    add_output_options(p, resume=True)
    p.add_argument("--classes", action="store_true", help="also write <name>_classes.tif (3-class map)")
    p.add_argument("--no-overlays", dest="overlays", action="store_false", help="skip the overlay PNGs")

    p = steps.add_parser("evaluate", help="score nucleus label images against ground truth",
                         description="Object-wise Jaccard, F1 and AP at IoU thresholds, splits and merges, pixel Dice.")
    p.add_argument("predictions", help="folder written by `cellmixer nuclei predict` or `label`")
    p.add_argument("--truth", required=True, help="folder of ground-truth label images")
    p.add_argument("--truth-suffix", default="", help="truth of a is a<suffix>.tif (default: none)")
    p.add_argument("--keep-border", dest="exclude_border", action="store_false",
                   help="score nuclei touching the image edge too (default: removed from both, as the paper)")
    add_output_options(p, output_required=False, default="nuclei_evaluation")


def run(args, progress: bool) -> None:
    if args.step == "label":
        rows = label_nuclei(args.inputs, args.output, pattern=args.pattern, channel=args.channel,
                            **plane_kwargs(args), overlays=args.overlays, overwrite=args.overwrite, progress=progress,
                            **settings_args(args, ClassicalSettings))
        print(f"labelled {len(rows)} images ({sum(r['objects'] for r in rows)} nuclei) -> {args.output}")
    elif args.step == "train":
        model = train_nuclei(
            args.images, args.output, validation=args.validation, label_dir=args.label_dir,
            label_suffix=args.label_suffix, pattern=args.pattern, channel=args.channel,
            diameter_range=args.diameter_range, **network_kwargs(args), progress=progress,
            **training_kwargs(args, NucleiTrainingConfig))
        info = model.config["training"]
        print(f"trained nucleus model on {info['labels']} labels ({info['iterations']} iterations; kept iteration "
              f"{info['selected_iteration']}, validation loss {info['validation_loss']:.4f}) -> {args.output}")
    elif args.step == "predict":
        rows = predict_nuclei(args.model, args.inputs, args.output, pattern=args.pattern, channel=args.channel,
                              **plane_kwargs(args),
                              overlap=args.overlap, batch_size=args.batch_size, precision=args.precision,
                              device=args.device, augment=args.augment, remove_border=args.remove_border, min_area=args.min_area,
                              classes=args.classes, overlays=args.overlays, overwrite=args.overwrite,
                              chunking=chunking_args(args), resume=args.resume, progress=progress)
        print(f"segmented {len(rows)} images ({sum(r['objects'] for r in rows)} nuclei) -> {args.output}")
    elif args.step == "evaluate":
        result = evaluate_nuclei(args.predictions, args.truth, truth_suffix=args.truth_suffix,
                                 exclude_border=args.exclude_border, output=args.output, overwrite=args.overwrite)
        print(result["table"])
        print(f"\nscores -> {args.output}/nuclei_evaluation.json")
