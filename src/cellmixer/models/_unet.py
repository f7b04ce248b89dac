"""A U-Net for semantic segmentation, small enough to train on a laptop CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._padding import pad_to_multiple


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'group' or 'none', got {kind!r}")


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by normalization and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: str):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=norm == "none"),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=norm == "none"),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with same-size output for any input size.

    Parameters
    ----------
    in_channels : int
        Channels of the input image (1 for grayscale microscopy).
    num_classes : int
        Output channels (logits), background included.
    width : int
        Feature channels of the first level; level ``i`` has ``width * 2**i``.
    depth : int
        Number of 2x down-sampling steps.
    norm : {'batch', 'group', 'none'}
        Normalization after each convolution.

    Notes
    -----
    Inputs whose sides are not multiples of ``2**depth`` are reflect-padded and the output is
    cropped back, so any image size works. The ReLUs are modules (not functional calls), so
    hooks can reach them (guided backpropagation needs that).

    Examples
    --------
    >>> net = UNet(num_classes=3, width=8, depth=2)
    >>> net(torch.zeros(1, 1, 30, 45)).shape
    torch.Size([1, 3, 30, 45])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 16, depth: int = 4,
                 norm: str = "batch"):
        super().__init__()
        for name, value, least in (("width", width, 1), ("depth", depth, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer of at least {least}, got {value!r}")
        self.depth = depth
        self.size_multiple = 2**depth  # inputs are padded to this; tiling aligns to it
        widths = [width * 2**i for i in range(depth + 1)]
        self.encoders = nn.ModuleList([ConvBlock(in_channels, widths[0], norm)])
        self.encoders.extend(ConvBlock(widths[i], widths[i + 1], norm) for i in range(depth))
        self.upsamplers = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.decoders = nn.ModuleList(ConvBlock(2 * widths[i], widths[i], norm) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.size_multiple)
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, decoder in zip(self.upsamplers, self.decoders):
            x = decoder(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)[..., :h, :w]
