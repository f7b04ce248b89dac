"""``cellmixer typed train|predict|evaluate``: every cell its own mask and its cell type."""

from __future__ import annotations

from ..methods.typed import AdaptConfig, NuclearRoute, TypedTrainingConfig, evaluate_typed, predict_typed, train_typed
from ..io import parse_channel
from ..metrics import CocoScoring
from ..ops import InstanceSettings
from ._options import (
    CHANNEL_HELP,
    add_architecture_options,
    add_data_options,
    add_nuclear_options,
    add_output_options,
    add_plate_options,
    add_settings,
    add_tiling_options,
    add_training_options,
    architecture_kwargs,
    nuclear_kwargs,
    plane_kwargs,
    settings_args,
    training_kwargs,
)


def add_parsers(sub) -> None:
    typed = sub.add_parser("typed", help="typed cells: every cell its mask and its cell type, COCO mAP",
                           description="Cells with their type, from a CellMixer model and an instance source (no "
                                       "annotation), or from a model trained on COCO annotations; label images, "
                                       "tables, GeoJSON, COCO results, overlays; COCO mask AP.")
    steps = typed.add_subparsers(dest="step", metavar="STEP", required=True)
    class_help = ("class of each cell: 'annotation' (its COCO category), 'prefix' (image file name up to the first "
                  "underscore, e.g. LIVECell's cell line) or a CSV file with columns image, class "
                  "(default: %(default)s)")

    p = steps.add_parser("train", help="train an instance + type model on COCO annotations",
                         description="One U-Net, two heads: background / cell / boundary (as the nucleus model) and "
                                     "the cell type; weights with the lowest validation loss are kept.")
    p.add_argument("annotations", help="COCO annotation file (polygons or RLE)")
    group = p.add_argument_group("annotations")
    group.add_argument("--images", default=None, help="folder of the images (default: the annotation file's folder)")
    group.add_argument("--class-from", default="annotation", help=class_help)
    group.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                       help="the types the model knows, in order (default: all found, sorted)")
    group.add_argument("--validation", default=None, help="COCO file of validation images (default: a share of the "
                                                          "training images)")
    group.add_argument("--validation-images", default=None, help="folder of the validation images")
    add_settings(group, TypedTrainingConfig, ["validation_fraction", "line_radius", "normalization"])
    add_architecture_options(p.add_argument_group("network"), ["width", "depth"], "typed_unet")
    add_training_options(p, TypedTrainingConfig, own=("dice_weights", "type_weight"))
    p.add_argument("--channel", type=parse_channel, default=None, metavar="CHANNEL", help=CHANNEL_HELP)
    add_output_options(p)

    p = steps.add_parser("predict", help="find the cells of new images with their type",
                         description="Write <name>_labels.tif, <name>_types.tif, <name>_cells.csv, <name>.geojson, "
                                     "<name>_overlay.png, counts.csv and coco_results.json.")
    p.add_argument("model", help="model folder: `cellmixer train` (types only) or `cellmixer typed train`")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    group = p.add_argument_group("cells from a nuclear stain (every nucleus one typed cell)")
    add_nuclear_options(group)
    add_settings(group, NuclearRoute)
    group = p.add_argument_group("self-training on the images (CellMixer models)")
    group.add_argument("--adapt", action="store_true",
                       help="first fine-tune a copy of the model on the confidently typed cells of these images "
                            "(saved in OUTPUT/adapted_model), then type every cell with it; for a run over many "
                            "fields (a plate: +0.01 on the benchmark), not over one or two")
    add_settings(group, AdaptConfig, ["iterations", "confidence", "adapt_images"])
    group = p.add_argument_group("instances without a nuclear stain")
    group.add_argument("--instances", default=None,
                       help="instance source for a CellMixer model: watershed (default), components, a nucleus "
                            "model or cell-centre detector folder, or a folder of label images <name>_labels.tif; a "
                            "typed model uses its own")
    add_settings(group, InstanceSettings, ["min_distance", "min_area"], defaults={"min_area": 10})
    group.add_argument("--coco", default=None, help="COCO file listing the images: its image ids go into "
                                                    "coco_results.json")
    add_data_options(p, classes=False, planes=True)
    add_tiling_options(p, tile_size_option=False)
    add_plate_options(p)
    add_output_options(p, resume=True)
    p.add_argument("--no-overlays", dest="overlays", action="store_false", help="skip the overlay PNGs")

    p = steps.add_parser("evaluate", help="COCO mask AP of typed cells against COCO annotations",
                         description="mAP (IoU 0.50:0.95), AP50, AP75, AP small/medium/large, class-agnostic and per "
                                     "class, with LIVECell's detection limits; cell count error per image.")
    p.add_argument("predictions", help="folder written by `cellmixer typed predict`, or a COCO results file")
    p.add_argument("--truth", required=True, help="COCO annotation file")
    p.add_argument("--class-from", default="annotation", help=class_help)
    add_settings(p, CocoScoring)
    add_output_options(p, output_required=False, default="typed_evaluation")


def run(args, progress: bool) -> None:
    if args.step == "train":
        model = train_typed(
            args.annotations, args.output, images=args.images, validation=args.validation,
            validation_images=args.validation_images, classes=args.classes,
            channel=args.channel, model_options=architecture_kwargs(args), progress=progress,
            **training_kwargs(args, TypedTrainingConfig))
        info = model.config["training"]
        print(f"trained typed-cell model for {', '.join(model.config['types'])} ({info['iterations']} iterations, "
              f"kept iteration {info['selected_iteration']}) -> {args.output}")
    elif args.step == "predict":
        adapt = AdaptConfig(iterations=args.iterations, confidence=args.confidence, adapt_images=args.adapt_images)
        adapt.validate()  # without --adapt too: an option out of its range is refused, not ignored
        rows = predict_typed(args.model, args.inputs, args.output, **nuclear_kwargs(args),
                             **settings_args(args, NuclearRoute), instances=args.instances, coco=args.coco,
                             adapt=adapt if args.adapt else False,
                             pattern=args.pattern, channel=args.channel, **plane_kwargs(args),
                             min_distance=args.min_distance,
                             min_area=args.min_area, overlap=args.overlap, batch_size=args.batch_size,
                             precision=args.precision, device=args.device, augment=args.augment, overlays=args.overlays,
                             overwrite=args.overwrite, resume=args.resume, scheduler=args.scheduler,
                             progress=progress)
        print(f"found {sum(r['cells'] for r in rows)} typed cells in {len(rows)} images -> {args.output}")
    elif args.step == "evaluate":
        result = evaluate_typed(args.predictions, args.truth, class_from=args.class_from,
                                max_detections=tuple(args.max_detections), area_ranges=args.area_ranges,
                                output=args.output, overwrite=args.overwrite)
        print(result["table"])
        print(f"\nscores -> {args.output}/typed_evaluation.json")
