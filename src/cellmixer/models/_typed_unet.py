"""A U-Net with two heads on the same features: instance classes (background / cell / boundary) and cell type."""

from __future__ import annotations

import torch
from torch import nn

from ._unet import UNet


class _Heads(nn.Module):
    """Two 1x1 convolutions on the last decoder features; their logits are concatenated."""

    def __init__(self, channels: int, instance_classes: int, types: int):
        super().__init__()
        self.instance = nn.Conv2d(channels, instance_classes, 1)
        self.cell_type = nn.Conv2d(channels, types, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.instance(x), self.cell_type(x)], dim=1)


class TypedUNet(UNet):
    """U-Net whose output is ``instance_classes`` instance logits followed by cell-type logits.

    The instance head learns background / cell / boundary (the 3-class targets of
    :func:`cellmixer.ops.three_class_targets`), the type head the cell type of each
    cell pixel. Each head has its own softmax: :attr:`output_groups` tells the sliding-window
    prediction where one ends and the other starts.

    Parameters
    ----------
    in_channels : int
    num_classes : int
        All output channels: ``instance_classes`` + number of cell types (at least 1).
    width, depth, norm :
        As :class:`UNet`.
    instance_classes : int
        Channels of the instance head (3: background, cell, boundary).

    Examples
    --------
    >>> net = TypedUNet(num_classes=5, width=4, depth=2)      # 3 instance classes, 2 cell types
    >>> net(torch.zeros(1, 1, 20, 30)).shape, net.output_groups
    (torch.Size([1, 5, 20, 30]), (3, 2))
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 4, width: int = 16, depth: int = 4,
                 norm: str = "batch", instance_classes: int = 3):
        if isinstance(instance_classes, bool) or not isinstance(instance_classes, int) or instance_classes < 2:
            raise ValueError(f"instance_classes must be an integer of at least 2, got {instance_classes!r}")
        if num_classes <= instance_classes:
            raise ValueError(f"num_classes ({num_classes}) must exceed instance_classes ({instance_classes}): "
                             "at least one cell type")
        super().__init__(in_channels, num_classes, width=width, depth=depth, norm=norm)
        self.head = _Heads(width, instance_classes, num_classes - instance_classes)
        self.output_groups = (instance_classes, num_classes - instance_classes)
