"""Network architectures by name, so a model folder can say which one it holds."""

from __future__ import annotations

import inspect

from torch import nn

from .._errors import CellmixerError
from ._segmenter import Segmenter, ViTLinear
from ._typed_unet import TypedUNet
from ._unet import UNet

# name -> constructor taking in_channels, num_classes and the architecture's own keyword options.
ARCHITECTURES: dict[str, type[nn.Module]] = {"unet": UNet, "typed_unet": TypedUNet,
                                             "segmenter": Segmenter, "vit-linear": ViTLinear}


def architecture_options(name: str) -> dict:
    """The keyword options of an architecture with their defaults."""
    if name not in ARCHITECTURES:
        raise CellmixerError(f"--model {name}: unknown architecture; choose one of {', '.join(sorted(ARCHITECTURES))}.")
    signature = inspect.signature(ARCHITECTURES[name].__init__)
    return {k: p.default for k, p in signature.parameters.items()
            if k not in ("self", "in_channels", "num_classes") and p.default is not inspect.Parameter.empty}


def build_network(spec: dict) -> nn.Module:
    """Build a network from ``{"name": ..., "in_channels": ..., "num_classes": ..., **options}``."""
    spec = dict(spec)
    name = spec.pop("name", None)
    allowed = architecture_options(name)
    unknown = set(spec) - set(allowed) - {"in_channels", "num_classes"}
    if unknown:
        raise CellmixerError(f"architecture '{name}' has no option(s) {', '.join(sorted(unknown))}; "
                             f"its options are {', '.join(sorted(allowed))}.")
    try:
        return ARCHITECTURES[name](**spec)
    except (TypeError, ValueError) as exc:  # an option of the wrong type or out of range
        raise CellmixerError(f"architecture '{name}': {exc}; check its options.") from None
