"""Network architectures by name, so a model folder can say which one it holds, and the one range of
each architecture option (for the command line, the Python functions and model folders alike)."""

from __future__ import annotations

import dataclasses
import inspect

import torch
from torch import nn

from .._errors import CellmixerError, out_of_memory
from .._settings import check_value, flag_of, setting
from .._settings import spec as _spec
from ._segmenter import Segmenter, ViTLinear
from ._typed_unet import TypedUNet
from ._unet import UNet

# name -> constructor taking in_channels, num_classes and the architecture's own keyword options.
ARCHITECTURES: dict[str, type[nn.Module]] = {"unet": UNet, "typed_unet": TypedUNet,
                                             "segmenter": Segmenter, "vit-linear": ViTLinear}

# A network larger than this is refused before it is built: 8 GB of float32 weights (DINOv2's ViT-g has 1.1
# billion). A model folder from elsewhere cannot make cellmixer ask for terabytes.
MAX_PARAMETERS = 2_000_000_000


def _option(name: str) -> str:
    """The command-line form of an architecture option that has no flag of its own."""
    return f"--model-option {name}="


@dataclasses.dataclass(frozen=True)
class ArchitectureOptions:
    """The allowed values of every architecture option; None: the architecture's default
    (:func:`architecture_options`). The caps keep a network within what a machine can hold."""

    in_channels: int | None = setting(None, "input channels", kind=int, at_least=1, at_most=3, cli=False)
    num_classes: int | None = setting(None, "outputs, background included", kind=int, at_least=1, at_most=256,
                                      cli=False)
    width: int | None = setting(None, "U-Net channels at full resolution", kind=int, at_least=1, at_most=1024)
    depth: int | None = setting(None, "U-Net down-sampling steps", kind=int, at_least=0, at_most=8)
    norm: str | None = setting(None, "U-Net normalization", kind=str, choices=("batch", "group", "none"), cli=False,
                               flag=_option("norm"))
    instance_classes: int | None = setting(None, "typed U-Net: instance classes", kind=int, at_least=2, at_most=16,
                                           cli=False, flag=_option("instance_classes"))
    size: str | None = setting(None, "ViT size", kind=str, choices=("small", "base", "large", "giant"), cli=False,
                               flag="--vit-size")
    registers: int | None = setting(None, "ViT models: register tokens, 4 for DINOv2 *_reg weights", kind=int,
                                    at_least=0, at_most=64)
    input_size: int | None = setting(None, "ViT models: input side, a multiple of 14; prediction tiles have this "
                                           "size, use it as --crop-size too (the paper: 518)", kind=int,
                                     at_least=14, at_most=4046)
    decoder_layers: int | None = setting(None, "Segmenter decoder blocks", kind=int, at_least=1, at_most=48,
                                         cli=False, flag=_option("decoder_layers"))
    dropout: float | None = setting(None, "dropout", kind=float, at_least=0, below=1, cli=False,
                                    flag=_option("dropout"))
    mask_scale: float | None = setting(None, "Segmenter mask scale", kind=float, above=0, at_most=1000, cli=False,
                                       flag=_option("mask_scale"))
    embed_dim: int | None = setting(None, "ViT width", kind=int, at_least=1, at_most=8192, cli=False,
                                    flag=_option("embed_dim"))
    num_blocks: int | None = setting(None, "ViT blocks", kind=int, at_least=1, at_most=128, cli=False,
                                     flag=_option("num_blocks"))
    num_heads: int | None = setting(None, "ViT attention heads", kind=int, at_least=1, at_most=256, cli=False,
                                    flag=_option("num_heads"))


_OPTION_FIELDS = {f.name: f for f in dataclasses.fields(ArchitectureOptions)}


def architecture_options(name: str) -> dict:
    """The keyword options of an architecture with their defaults."""
    if name not in ARCHITECTURES:
        raise CellmixerError(f"--model {name}: unknown architecture; choose one of {', '.join(sorted(ARCHITECTURES))}.")
    signature = inspect.signature(ARCHITECTURES[name].__init__)
    return {k: p.default for k, p in signature.parameters.items()
            if k not in ("self", "in_channels", "num_classes") and p.default is not inspect.Parameter.empty}


class _NoInitialization(torch.overrides.TorchFunctionMode):
    """Skips the in-place initialisations (``normal_``, ``uniform_``, ...) and the arithmetic on buffers of a
    network built on the meta device: only its shapes are wanted, and those operations are slow there."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name.endswith("_") and not name.endswith("__"):
            tensor = next((a for a in (*args, *(kwargs or {}).values()) if isinstance(a, torch.Tensor)), None)
            if tensor is not None and tensor.is_meta:
                return tensor
        return func(*args, **(kwargs or {}))


def parameter_count(spec: dict) -> int:
    """Parameters of the network ``spec`` describes, counted without allocating it (meta device)."""
    spec = dict(spec)
    name = spec.pop("name")
    with torch.device("meta"), _NoInitialization():
        network = ARCHITECTURES[name](**spec)
    return sum(p.numel() for p in network.parameters())


def build_network(spec: dict, *, source: str | None = None) -> nn.Module:
    """Build a network from ``{"name": ..., "in_channels": ..., "num_classes": ..., **options}``, checked
    first by :func:`check_network` (errors name the option, or the file ``source`` and its key)."""
    count = check_network(spec, source=source)
    options = {k: v for k, v in spec.items() if k != "name"}
    what = f"{source}: the network" if source else f"the {spec['name']} network ({count / 1e6:.1f} million parameters)"
    with out_of_memory(what, "choose a smaller --width or --depth, or free memory"):
        return ARCHITECTURES[spec["name"]](**options)


def check_network(spec: dict, *, source: str | None = None) -> int:
    """Check a network's description without allocating it: every option against
    :class:`ArchitectureOptions`, the size against :data:`MAX_PARAMETERS`. Errors name the
    command-line option, or, with ``source`` (the file the spec was read from), the file and its key.
    Returns the number of parameters."""
    if not isinstance(spec, dict):
        raise CellmixerError(f"{source}: \"architecture\" is not an object." if source else "give the architecture "
                             "as a dict.")
    spec = dict(spec)
    name = spec.pop("name", None)
    check_options(name, spec, source=source)
    try:
        count = parameter_count({"name": name, **spec})
    except (TypeError, ValueError) as exc:  # an option out of the range of this architecture
        where = f"{source}: " if source else ""
        raise CellmixerError(f"{where}architecture '{name}': {exc}; check its options.") from None
    if count > MAX_PARAMETERS:
        given = " ".join(f"{flag_of(_OPTION_FIELDS[k])} {v}" for k, v in spec.items()
                         if k in _OPTION_FIELDS and _spec(_OPTION_FIELDS[k]).get("cli"))
        what = f"{source}: \"architecture\"" if source else (given or f"--model {name}")
        raise CellmixerError(f"{what}: a network of {count / 1e9:.1f} billion parameters ({4 * count / 2**30:.0f} "
                             f"GiB); the limit is {MAX_PARAMETERS / 1e9:g} billion: choose a smaller width or depth.")
    return count


def check_options(name: str, options: dict, *, source: str | None = None) -> None:
    """Check the options of the architecture ``name`` (not yet its size, which needs all of them):
    each is one of its options and within :class:`ArchitectureOptions`. Errors name the option, or
    the file ``source`` and its key."""

    def bad(key: str, message: str):
        where = f'{source}: "architecture.{key}"' if source else None
        raise CellmixerError(f"{where}: {message}" if where else message)

    if name not in ARCHITECTURES:
        if source:
            bad("name", f"unknown architecture {name!r}; choose one of {', '.join(sorted(ARCHITECTURES))}.")
        architecture_options(name)  # the --model message
    allowed = architecture_options(name)
    unknown = set(options) - set(allowed) - {"in_channels", "num_classes"}
    if unknown:
        key = sorted(unknown)[0]
        option = "" if source or key not in _OPTION_FIELDS else f"{flag_of(_OPTION_FIELDS[key])}: "
        bad(key, f"{option}architecture '{name}' has no option(s) {key}; its options are "
                 f"{', '.join(sorted(allowed))}.")
    for key, value in options.items():
        if key in _OPTION_FIELDS:
            try:
                check_value(_OPTION_FIELDS[key], value, key=f"architecture.{key}" if source else None)
            except CellmixerError as exc:
                raise CellmixerError(f"{source}: {exc}" if source else str(exc)) from None
