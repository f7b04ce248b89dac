"""Padding network inputs to the size a network needs, so that any image size works."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Extend ``x`` (..., H, W) at its bottom and right to sides that are multiples of ``multiple``.

    Mirrored pixels (reflect) where the image is larger than the padding, repeated edge pixels
    otherwise; crop the network's output back with ``[..., :H, :W]``.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if not (pad_h or pad_w):
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
