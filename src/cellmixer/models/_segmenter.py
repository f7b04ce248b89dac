"""Segmentation networks on a DINOv2 ViT encoder: the Segmenter mask transformer and a linear decoder.

Segmenter: Strudel et al., *Segmenter: Transformer for Semantic Segmentation*, ICCV 2021. The CellMixer
paper trains "a dinov2 encoder and a Segmenter decoder" at 518 x 518 (appendix A.1.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._padding import pad_to_multiple
from ._vit import IMAGENET_MEAN, IMAGENET_STD, PATCH_SIZE, Block, VisionTransformer, _init_linear, vit_settings


def _check_int(name: str, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer of at least {least}, got {value!r}")


class MaskTransformer(nn.Module):
    """Segmenter's decoder: learnable class embeddings processed jointly with the patch tokens.

    The patch tokens (projected by ``proj_dec``) and one embedding per class (``cls_emb``) pass
    through transformer blocks together; each class mask is the scalar product of the L2-normalised
    patch and class embeddings, followed by a LayerNorm over the classes (``mask_norm``).

    ``mask_scale`` is the initial gain of ``mask_norm``. Segmenter starts it at 1, which suits its
    150 classes; but a LayerNorm over C values is bounded by sqrt(C - 1), so with 3 or 4 classes gain 1
    caps the softmax near 0.76 and the gain has to grow for thousands of iterations before the
    masks can become confident (a fixed batch is not even fitted in 100 steps). Gain 5 removes that.
    """

    def __init__(self, num_classes: int, encoder_dim: int, *, dim: int, num_blocks: int, num_heads: int,
                 dropout: float = 0.0, mask_scale: float = 5.0):
        super().__init__()
        self.num_classes = num_classes
        self.proj_dec = nn.Linear(encoder_dim, dim)
        self.cls_emb = nn.Parameter(torch.zeros(1, num_classes, dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads, layerscale=None, dropout=dropout) for _ in range(num_blocks))
        self.decoder_norm = nn.LayerNorm(dim)
        # initialised in place: a network sized on the meta device skips that (models.parameter_count)
        self.proj_patch = nn.Parameter(nn.init.normal_(torch.empty(dim, dim), std=dim**-0.5))
        self.proj_classes = nn.Parameter(nn.init.normal_(torch.empty(dim, dim), std=dim**-0.5))
        self.mask_norm = nn.LayerNorm(num_classes)
        self.apply(_init_linear)
        nn.init.trunc_normal_(self.cls_emb, std=0.02)
        nn.init.constant_(self.mask_norm.weight, mask_scale)

    def forward(self, tokens: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
        x = self.proj_dec(tokens)
        x = torch.cat([x, self.cls_emb.expand(len(x), -1, -1)], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.decoder_norm(x)
        patches = F.normalize(x[:, :-self.num_classes] @ self.proj_patch, dim=-1)
        classes = F.normalize(x[:, -self.num_classes:] @ self.proj_classes, dim=-1)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))  # (B, patches, classes)
        return masks.transpose(1, 2).reshape(len(x), self.num_classes, grid_h, grid_w)


class LinearDecoder(nn.Module):
    """One linear layer from each patch token to class logits (Segmenter's linear baseline)."""

    def __init__(self, num_classes: int, encoder_dim: int):
        super().__init__()
        self.head = nn.Linear(encoder_dim, num_classes)
        self.apply(_init_linear)

    def forward(self, tokens: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
        return self.head(tokens).transpose(1, 2).reshape(len(tokens), -1, grid_h, grid_w)


class _ViTSegmentation(nn.Module):
    """A DINOv2 encoder (``.encoder``), a decoder of patch tokens, and bilinear upsampling to the input size.

    Inputs of any size are padded to multiples of 14 and the output is cropped back. A single
    input channel (the network input, normalized by the model's ``normalization``) is read as grey
    values with ImageNet's mean grey level and contrast and replicated to the three channels with
    ImageNet's per-channel normalization, the input DINOv2's weights expect; the mapping is fixed
    (not learned) and applied with or without pretrained weights, so both have the same parameters.
    """

    size_multiple = PATCH_SIZE

    def __init__(self, in_channels: int, *, size: str, registers: int, input_size: int, embed_dim, num_blocks,
                 num_heads):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey, replicated to RGB) or 3, got {in_channels!r}")
        _check_int("registers", registers, 0)
        _check_int("input_size", input_size, PATCH_SIZE)
        if input_size % PATCH_SIZE:
            raise ValueError(f"input_size must be a multiple of {PATCH_SIZE} (e.g. 518 or 224), got {input_size}")
        self.settings = vit_settings(size, embed_dim=embed_dim, num_blocks=num_blocks, num_heads=num_heads)
        self.size = size
        self.input_size = input_size  # training crops and prediction tiles default to this
        self.encoder = VisionTransformer(**self.settings, registers=registers, input_size=input_size, in_channels=3)
        # CPU tensors even when the network is sized on the meta device (models.parameter_count)
        mean, std = torch.tensor(IMAGENET_MEAN, device="cpu"), torch.tensor(IMAGENET_STD, device="cpu")
        if in_channels == 1:  # grey g = mean(mean) + mean(std) * x, then (g - mean_c) / std_c per channel
            gain, shift = std.mean() / std, (mean.mean() - mean) / std
        else:
            gain, shift = torch.ones(3), torch.zeros(3)
        self.register_buffer("input_gain", gain.reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", shift.reshape(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, PATCH_SIZE)
        padded = x.shape[-2:]
        x = x * self.input_gain + self.input_shift  # (B, 1 or 3, H, W) -> (B, 3, H, W)
        tokens = self.encoder(x)
        masks = self.decoder(tokens, padded[0] // PATCH_SIZE, padded[1] // PATCH_SIZE)
        return F.interpolate(masks, size=padded, mode="bilinear", align_corners=False)[..., :h, :w]


class Segmenter(_ViTSegmentation):
    """DINOv2 ViT encoder with Segmenter's mask-transformer decoder (Strudel et al. 2021).

    Parameters
    ----------
    in_channels : int
        1 (grey microscopy, replicated to RGB) or 3.
    num_classes : int
        Output classes, background included.
    size : {'small', 'base', 'large', 'giant'}
        DINOv2's ViT-S/14, ViT-B/14, ViT-L/14 or ViT-g/14 (SwiGLU feed-forward).
    registers : int
        Register tokens: 0, or 4 for DINOv2's ``*_reg`` weights.
    input_size : int
        Training crop and prediction tile side, a multiple of 14 (518 as the paper and DINOv2);
        other sizes work too (position embeddings are interpolated).
    decoder_layers : int
        Transformer blocks of the decoder (Segmenter: 2).
    dropout : float
        Dropout in the decoder blocks (Segmenter trains with 0.1; 0 keeps runs reproducible on resume).
    mask_scale : float
        Initial gain of the LayerNorm over the class masks (Segmenter: 1; see :class:`MaskTransformer`
        for why 5 with few classes).
    embed_dim, num_blocks, num_heads : int, optional
        Replace the width, depth or heads of ``size`` (small networks for tests; such encoders
        cannot take DINOv2 weights).

    Examples
    --------
    >>> net = Segmenter(1, 3, embed_dim=32, num_blocks=1, num_heads=2, input_size=56)
    >>> net(torch.zeros(1, 1, 30, 45)).shape
    torch.Size([1, 3, 30, 45])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, size: str = "small", registers: int = 0,
                 input_size: int = 518, decoder_layers: int = 2, dropout: float = 0.0, mask_scale: float = 5.0,
                 embed_dim: int | None = None, num_blocks: int | None = None, num_heads: int | None = None):
        super().__init__(in_channels, size=size, registers=registers, input_size=input_size, embed_dim=embed_dim,
                         num_blocks=num_blocks, num_heads=num_heads)
        _check_int("decoder_layers", decoder_layers, 1)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if not mask_scale > 0:
            raise ValueError(f"mask_scale must be positive, got {mask_scale!r}")
        dim = self.settings["embed_dim"]
        self.decoder = MaskTransformer(num_classes, dim, dim=dim, num_blocks=decoder_layers,
                                       num_heads=self.settings["num_heads"], dropout=dropout, mask_scale=mask_scale)


class ViTLinear(_ViTSegmentation):
    """DINOv2 ViT encoder with a linear decoder of each patch token (options as :class:`Segmenter`)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, size: str = "small", registers: int = 0,
                 input_size: int = 518, embed_dim: int | None = None, num_blocks: int | None = None,
                 num_heads: int | None = None):
        super().__init__(in_channels, size=size, registers=registers, input_size=input_size, embed_dim=embed_dim,
                         num_blocks=num_blocks, num_heads=num_heads)
        self.decoder = LinearDecoder(num_classes, self.settings["embed_dim"])
