"""``cellmixer pseudolabel|mix|train|predict|evaluate``: cell types from homogeneous cultures (CellMixer)."""

from __future__ import annotations

from ..methods.cellmixer import (
    EvaluationSettings,
    MixSettings,
    TrainingConfig,
    evaluate,
    mix,
    predict,
    pseudolabel,
    train,
)
from ._options import (
    add_chunking_options,
    add_data_options,
    add_foreground_options,
    add_nuclear_options,
    add_network_options,
    add_output_options,
    add_settings,
    add_tiling_options,
    add_training_options,
    chunking_args,
    foreground_params,
    network_kwargs,
    nuclear_kwargs,
    plane_kwargs,
    settings_args,
    training_kwargs,
)


def add_parsers(sub) -> None:
    p = sub.add_parser("pseudolabel", help="write unsupervised foreground masks labelled by class, with QC pictures",
                       description="Find cells without annotation and label them with their folder's class.")
    p.add_argument("data", help="folder with one sub-folder of images per cell type")
    add_data_options(p)
    add_foreground_options(p)
    add_output_options(p)
    p.add_argument("--no-overlays", dest="overlays", action="store_false", help="skip the QC PNGs")

    p = sub.add_parser("mix", help="write example artificial mixtures of two cultures",
                       description="Blend (or place side by side) crops of two cell types as training does.")
    p.add_argument("data", help="folder with one sub-folder of images per cell type")
    group = p.add_argument_group("mixtures")
    add_settings(group, MixSettings)
    add_nuclear_options(group)
    add_data_options(p)
    add_foreground_options(p)
    add_output_options(p)

    p = sub.add_parser("train", help="train a cell-type segmentation model",
                       description="Train from folders of homogeneous cultures; the folder name is the only label.")
    p.add_argument("data", help="folder with one sub-folder of images per cell type")
    group = p.add_argument_group("method")
    add_settings(group, TrainingConfig, ["mode", "mixing", "lam", "mix_probability", "normalization", "photometric",
                                         "nuclear_input"])
    add_nuclear_options(group)
    add_settings(add_network_options(p), TrainingConfig, ["scale"])
    add_training_options(p, TrainingConfig, own=("tversky_alpha", "tversky_beta", "boundary_ignore", "context_weight"))
    add_data_options(p)
    add_foreground_options(p)
    add_output_options(p)

    p = sub.add_parser("predict", help="label new images with a trained model",
                       description="Write <name>_labels.tif (0 background, k = k-th class), overlays and a CSV.")
    p.add_argument("model", help="model folder written by `cellmixer train`")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    add_data_options(p, classes=False, planes=True)
    add_nuclear_options(p.add_argument_group("nuclear stain (for models trained with one)"))
    add_tiling_options(p)
    add_chunking_options(p)
    add_output_options(p, resume=True)
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
    add_settings(group, EvaluationSettings)
    group.add_argument("--names", nargs="+", default=None, help="row names for the models")
    add_nuclear_options(p.add_argument_group("nuclear stain (for models trained with one)"))
    add_data_options(p, classes=False)
    add_tiling_options(p)
    add_output_options(p, output_required=False, default="evaluation")
    p.add_argument("--no-overlays", dest="overlays", action="store_false", help="skip the per-image PNGs")



def run(args, progress: bool) -> None:
    if args.command == "pseudolabel":
        rows = pseudolabel(args.data, args.output, classes=args.classes, pattern=args.pattern, channel=args.channel,
                           foreground=foreground_params(args), overlays=args.overlays, overwrite=args.overwrite,
                           progress=progress)
        print(f"pseudo-labelled {len(rows)} images -> {args.output}")
    elif args.command == "mix":
        rows = mix(args.data, args.output, classes=args.classes, pattern=args.pattern, channel=args.channel,
                   **nuclear_kwargs(args), foreground=foreground_params(args), overwrite=args.overwrite,
                   progress=progress, **settings_args(args, MixSettings))
        print(f"wrote {len(rows)} mixtures -> {args.output}")
    elif args.command == "train":
        model = train(args.data, args.output, classes=args.classes, pattern=args.pattern, channel=args.channel,
                      **nuclear_kwargs(args),
                      **network_kwargs(args), foreground=foreground_params(args), progress=progress,
                      **training_kwargs(args, TrainingConfig))
        info = model.config["training"]
        print(f"trained {info['mode']} model for {', '.join(model.classes)} "
              f"({info['iterations']} iterations, final loss {info['final_loss']:.4f}) -> {args.output}")
    elif args.command == "predict":
        rows = predict(args.model, args.inputs, args.output, pattern=args.pattern, channel=args.channel,
                       **nuclear_kwargs(args), **plane_kwargs(args),
                       tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size,
                       probabilities=args.probabilities, overlays=args.overlays, precision=args.precision,
                       device=args.device, augment=args.augment, chunking=chunking_args(args),
                       overwrite=args.overwrite, resume=args.resume, progress=progress)
        print(f"predicted {len(rows)} images -> {args.output}")
    elif args.command == "evaluate":
        result = evaluate(args.models, args.data, model_names=args.names, masks_dir=args.masks_dir,
                          mask_suffix=args.mask_suffix, pattern=args.pattern, channel=args.channel,
                          **nuclear_kwargs(args), **settings_args(args, EvaluationSettings),
                          tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size,
                          precision=args.precision, device=args.device, augment=args.augment, output=args.output,
                          overlays=args.overlays,
                          overwrite=args.overwrite, progress=progress)
        print(result["table"])
        print(f"\nscores -> {args.output}/evaluation.json")
