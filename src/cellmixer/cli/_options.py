"""Option groups that several commands share, each built from the settings it fills."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from .._errors import CellmixerError
from .._settings import default_of, flags_of, spec
from ..engine import DEVICES, PRECISIONS, Chunking, OptimizationSettings, Tiling
from ..io import PROJECTIONS, parse_channel
from ..models import ARCHITECTURES, VIT_SIZES, ArchitectureOptions, architecture_options
from ..ops import ForegroundParams


# The namespace attribute that lists the settings given on the command line (not left at their defaults).
GIVEN = "given_settings"


def _recording(action_class):
    """``action_class`` that also notes its destination in ``namespace.given_settings``."""

    class Recording(action_class):
        def __call__(self, parser, namespace, values, option_string=None):
            super().__call__(parser, namespace, values, option_string)
            setattr(namespace, GIVEN, {*getattr(namespace, GIVEN, ()), self.dest})

    return Recording


_STORE, _STORE_TRUE, _STORE_FALSE = (_recording(argparse._StoreAction), _recording(argparse._StoreTrueAction),
                                     _recording(argparse._StoreFalseAction))


def add_settings(group, cls, names=None, *, skip=(), defaults=None) -> None:
    """One option per field of the settings dataclass ``cls`` (those in ``names``, in that order, or all
    that have a command-line option), with the field's default, help, choices and type: the default
    is written once, in ``cls``. ``defaults`` overrides shown defaults (a method's own)."""
    by_name = {f.name: f for f in fields(cls)}
    chosen = [by_name[n] for n in names] if names is not None else [
        f for f in fields(cls) if spec(f).get("cli") and f.name not in skip]
    for f in chosen:
        s = spec(f)
        default = (defaults or {}).get(f.name, default_of(f))
        text = s.get("help", "")
        if isinstance(default, bool) or s.get("kind") is bool:
            if default:
                flags = flags_of(f) if s.get("flag") else (f"--no-{f.name.replace('_', '-')}",)
                action = group.add_argument(*flags, dest=f.name, action=_STORE_FALSE,
                                            help=f"off: {text}" if text else None)
            else:
                action = group.add_argument(*flags_of(f), dest=f.name, action=_STORE_TRUE, help=text or None)
            action.setting_field = f
            continue
        shown = " ".join(map(str, default)) if isinstance(default, (tuple, list)) else "%(default)s"
        options = dict(dest=f.name, default=default, help=text if default is None else f"{text} (default: {shown})")
        if s.get("parse") is not None:
            options["type"] = s["parse"]
        elif isinstance(default, (tuple, list)):
            options.update(type=type(default[0]), nargs=s.get("nargs") or len(default))
        elif s.get("kind") is not None or default_of(f) is not None:
            options["type"] = s.get("kind") or type(default_of(f))
        if s.get("choices") is not None:
            options["choices"] = s["choices"]
        if s.get("metavar") is not None:
            options["metavar"] = s["metavar"]
        action = group.add_argument(*flags_of(f), action=_STORE, **options)
        action.setting_field = f  # the declaration behind the option (its range: tests generate bad values)


def settings_args(args, cls, *, given_only: bool = False) -> dict:
    """The fields of ``cls`` that ``args`` holds, as keyword arguments (tuples for lists); with
    ``given_only``, those given on the command line only (the function fills in the same defaults):
    options made by :func:`add_settings` note when they are given, a command's own options count
    when their value is not the field's default."""
    given = getattr(args, GIVEN, set())

    def wanted(f) -> bool:
        if not given_only or f.name in given:
            return True
        return not spec(f).get("cli") and getattr(args, f.name) != default_of(f)

    return {f.name: tuple(v) if isinstance(v := getattr(args, f.name), list) else v
            for f in fields(cls) if hasattr(args, f.name) and wanted(f)}


CHANNEL_HELP = "channel of multi-channel images: an index (0-based) or a name from the file's metadata, e.g. DAPI"


def pixel_size(text: str) -> float:
    """``--pixel-size``: micrometres per pixel, a positive number."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("give the micrometres per pixel, a positive number such as 0.65")
    return value


def add_data_options(parser, *, classes: bool = True, planes: bool = False) -> None:
    """The "input images" group; ``planes``: also ``--project`` and ``--pixel-size`` (commands that write
    results per plane of a stack)."""
    group = parser.add_argument_group("input images")
    if classes:
        group.add_argument("--classes", nargs="+", metavar="NAME",
                           help="class folders to use, in this order (default: all, sorted)")
    group.add_argument("--pattern", default="*", help="only files whose name matches this glob (e.g. '*phase*')")
    group.add_argument("--channel", type=parse_channel, default=None, metavar="CHANNEL", help=CHANNEL_HELP)
    if planes:
        group.add_argument("--project", choices=PROJECTIONS, default=None,
                           help="z-stacks: process the projection over z of each frame (default: every plane, "
                                "written as <name>_z002_..., <name>_t003_z002_... for time series)")
        group.add_argument("--pixel-size", type=pixel_size, default=None, metavar="UM",
                           help="micrometres per pixel, for images whose files do not say (default: from the "
                                "file's metadata: OME, ImageJ, CZI, ...)")


def add_nuclear_options(group) -> None:
    """``--nuclear``, ``--nuclear-replace``, ``--nuclear-channel``: where each image's nuclear stain is."""
    group.add_argument("--nuclear", default=None, metavar="FOLDER",
                       help="folder of nuclear-stain images named like the images")
    group.add_argument("--nuclear-replace", nargs=2, default=None, metavar=("OLD", "NEW"),
                       help="the nuclear image's file name is the image's with OLD replaced by NEW "
                            "(e.g. phase DAPI)")
    group.add_argument("--nuclear-channel", type=parse_channel, default=None, metavar="CHANNEL",
                       help="the nuclear stain is this channel of the image file itself: an index (0-based) or a "
                            "name, e.g. DAPI")


def nuclear_kwargs(args) -> dict:
    """``nuclear`` (a folder or ``(old, new)``) and ``nuclear_channel`` of :func:`add_nuclear_options`."""
    if args.nuclear is not None and args.nuclear_replace is not None:
        raise CellmixerError("--nuclear and --nuclear-replace: give one way to find the nuclear images.")
    nuclear = tuple(args.nuclear_replace) if args.nuclear_replace is not None else args.nuclear
    return {"nuclear": nuclear, "nuclear_channel": args.nuclear_channel}


def plane_kwargs(args) -> dict:
    """``project`` and ``pixel_size`` of a command with ``add_data_options(planes=True)``."""
    return {"project": args.project, "pixel_size": args.pixel_size}


def add_foreground_options(parser) -> None:
    add_settings(parser.add_argument_group("unsupervised foreground (pseudo-labels)"), ForegroundParams)


def foreground_params(args) -> dict:
    """The foreground settings given on the command line (the others keep their defaults)."""
    return settings_args(args, ForegroundParams, given_only=True)


def add_device_options(group, precision: str) -> None:
    """``--device``, ``--threads`` and ``--precision``: where the network runs, and in which arithmetic."""
    group.add_argument("--device", default="auto", metavar="DEVICE",
                       help=f"{DEVICES}; auto = the first CUDA GPU, else MPS, else the CPU (default: %(default)s)")
    group.add_argument("--threads", type=thread_count, default=None,
                       help="CPU threads of this process (default: all cores; give fewer when runs share a machine)")
    group.add_argument("--precision", choices=PRECISIONS, default=precision, action=_STORE,
                       help="network arithmetic; auto = bfloat16 where the CPU supports it natively "
                            "(about 3x faster) and on GPUs that support it, float16 on other GPUs, else float32 "
                            "(default: %(default)s)")


def add_tiling_options(parser, *, tile_size_option: bool = True):
    """The "sliding window" group: the fields of :class:`cellmixer.engine.Tiling` with its defaults,
    ``--device`` and ``--precision``; returns the group."""
    group = parser.add_argument_group("sliding window")
    if tile_size_option:
        field = next(f for f in fields(Tiling) if f.name == "tile_size")
        group.add_argument("--tile-size", type=tile_size, default=default_of(field),
                           help=f"{spec(field)['help']} (default: %(default)s)")
    add_settings(group, Tiling, ["overlap", "batch_size"])
    add_device_options(group, default_of(next(f for f in fields(Tiling) if f.name == "precision")))
    add_settings(group, Tiling, ["augment"])
    return group


def add_chunking_options(parser) -> None:
    """The "large images" group: the fields of :class:`cellmixer.engine.Chunking` (chunk size, halo,
    dask scheduler) of Zarr inputs and TIFFs larger than a chunk, predicted chunk by chunk."""
    add_settings(parser.add_argument_group(
        "large images (Zarr, OME-Zarr, and TIFFs larger than a chunk: predicted chunk by chunk on dask, written "
        "as <name>.ome.zarr)"), Chunking)


def add_plate_options(parser) -> None:
    """``--scheduler`` alone, for commands that read every image whole: where the images go."""
    add_settings(parser.add_argument_group("many images (a plate) on a dask cluster"), Chunking, ["scheduler"])


def chunking_args(args) -> Chunking:
    return Chunking(**settings_args(args, Chunking))


def add_output_options(parser, *, output_required: bool = True, default=None, resume: bool = False) -> None:
    """``--output``, ``--overwrite``, ``--quiet`` and, for commands that go image by image, ``--resume``."""
    group = parser.add_argument_group("output")
    group.add_argument("--output", "-o", required=output_required, default=default,
                       help="output folder" + (f" (default: {default})" if default else ""))
    group.add_argument("--overwrite", action="store_true", help="replace existing result files")
    if resume:
        group.add_argument("--resume", action="store_true",
                           help="continue an interrupted run into --output (same options): skip the images whose "
                                "results are complete, redo the others")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


OPTIMISATION = ("iterations", "batch_size", "crop_size", "optimizer", "learning_rate", "momentum", "weight_decay",
                "lr_schedule", "augment", "seed")


def thread_count(text: str) -> int:
    """``--threads``: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("give a whole number of threads, at least 1")
    return value


def add_training_options(parser, config_class, own=()):
    """The "optimisation" group (the settings every training shares, with ``config_class``'s
    defaults, and then its ``own`` settings), ``--device``, ``--threads``, ``--precision`` and the
    "checkpoints" group; returns the "optimisation" group."""
    group = parser.add_argument_group("optimisation")
    add_settings(group, config_class, [*OPTIMISATION, *own])
    add_device_options(group, default_of(next(f for f in fields(config_class) if f.name == "precision")))
    checkpoints = parser.add_argument_group("checkpoints")
    add_settings(checkpoints, config_class, ["checkpoint_every"])
    checkpoints.add_argument("--resume", action="store_true", help="continue the run in --output from its checkpoint")
    return group


def training_kwargs(args, config_class) -> dict:
    """Keyword arguments of a training function: the settings of ``config_class`` found in ``args``
    and how to run (device, threads, resume, overwrite)."""
    return {**settings_args(args, config_class, given_only=True), "device": args.device, "threads": args.threads,
            "resume": args.resume, "overwrite": args.overwrite}



def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: write KEY=VALUE, e.g. decoder_layers=1")
    try:
        parsed = json.loads(value)  # numbers, true/false, null
    except json.JSONDecodeError:
        parsed = value
    return key.replace("-", "_"), parsed


def tile_size(value: str):
    """``--tile-size``: a number of pixels, or ``auto`` (the model's input size)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("give a number of pixels or 'auto'") from None


def add_architecture_options(group, names, architecture: str = "unet") -> None:
    """Flags of the architecture options ``names`` (ranges from :class:`cellmixer.models.ArchitectureOptions`,
    shown defaults from the architecture)."""
    add_settings(group, ArchitectureOptions, names, defaults={
        name: value for name, value in architecture_options(architecture).items() if name in names})


def architecture_kwargs(args) -> dict:
    """The architecture options given on the command line (the others keep the architecture's defaults)."""
    return settings_args(args, ArchitectureOptions, given_only=True)


def add_network_options(parser):
    """The "network" and "pretrained encoder" option groups; returns the "network" group."""
    vit = architecture_options("segmenter")
    group = parser.add_argument_group("network")
    group.add_argument("--model", default="unet", metavar="NAME",
                       help=f"architecture: {', '.join(ARCHITECTURES)}; segmenter is the paper's DINOv2 ViT encoder "
                            "with a Segmenter mask-transformer decoder (default: %(default)s)")
    add_architecture_options(group, ["width", "depth"])
    group.add_argument("--vit-size", choices=tuple(VIT_SIZES), default=None,
                       help=f"ViT models: DINOv2 ViT-S/B/L/g with patch 14 (default: {vit['size']})")
    add_settings(group, ArchitectureOptions, ["registers", "input_size"],
                 defaults={name: vit[name] for name in ("registers", "input_size")})
    group.add_argument("--model-option", dest="model_option", type=_key_value, action="append", default=[],
                       metavar="KEY=VALUE", help="any other option of the architecture, e.g. decoder_layers=1 or "
                                                 "norm=group (repeatable)")
    pretrained = parser.add_argument_group("pretrained encoder (segmenter, vit-linear)")
    add_settings(pretrained, OptimizationSettings, ["pretrained", "freeze_encoder", "encoder_lr_scale"])
    return group


def network_kwargs(args) -> dict:
    """The architecture of :func:`cellmixer.train` / :func:`cellmixer.train_nuclei` from the options (the
    pretrained encoder's options are training settings: :func:`training_kwargs`)."""
    options = architecture_kwargs(args)
    if args.vit_size is not None:
        options["size"] = args.vit_size
    options.update(dict(args.model_option))
    return {"model": args.model, "model_options": options}
