"""The DINOv2 vision transformer (Oquab et al. 2023) in plain torch, with the official parameter names.

Module and parameter names follow facebookresearch/dinov2 (``patch_embed.proj``, ``blocks.N.attn.qkv``,
``blocks.N.ls1.gamma``, ...), so the official checkpoints load as they are; see
:mod:`cellmixer.models._pretrained` for the Hugging Face naming.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PATCH_SIZE = 14
# DINOv2's sizes (dinov2/models/vision_transformer.py): embedding width, blocks, heads, MLP ratio, feed-forward.
# ViT-g ("vit_giant2") uses a SwiGLU feed-forward whose hidden width is 2/3 of 4 x 1536, rounded to 8 (4096).
VIT_SIZES = {
    "small": dict(embed_dim=384, num_blocks=12, num_heads=6, mlp_ratio=4.0, ffn="mlp"),
    "base": dict(embed_dim=768, num_blocks=12, num_heads=12, mlp_ratio=4.0, ffn="mlp"),
    "large": dict(embed_dim=1024, num_blocks=24, num_heads=16, mlp_ratio=4.0, ffn="mlp"),
    "giant": dict(embed_dim=1536, num_blocks=40, num_heads=24, mlp_ratio=4.0, ffn="swiglu"),
}
SIZE_LETTERS = {"small": "S", "base": "B", "large": "L", "giant": "g"}
# ImageNet statistics the DINOv2 weights were trained with (RGB in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYERNORM_EPS = 1e-6


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class Attention(nn.Module):
    """Multi-head self-attention with one fused query/key/value projection (``qkv``) and ``proj``."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return F.dropout(self.proj(x.transpose(1, 2).reshape(b, n, c)), self.dropout, self.training)


class Mlp(nn.Module):
    """``fc1`` -> GELU -> ``fc2``."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(F.gelu(self.fc1(x)), self.dropout, self.training)
        return F.dropout(self.fc2(x), self.dropout, self.training)


class SwiGLUFFN(nn.Module):
    """SwiGLU feed-forward of ViT-g: ``w12`` (both halves at once) -> silu(x1) * x2 -> ``w3``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch (``gamma``)."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))``.

    ``layerscale=None`` leaves LayerScale out (the Segmenter decoder's blocks).
    """

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, ffn: str = "mlp",
                 layerscale: float | None = 1.0, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYERNORM_EPS)
        self.attn = Attention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=LAYERNORM_EPS)
        hidden = int(dim * mlp_ratio)
        self.mlp = SwiGLUFFN(dim, hidden) if ffn == "swiglu" else Mlp(dim, hidden, dropout)
        self.ls1 = LayerScale(dim, layerscale) if layerscale is not None else nn.Identity()
        self.ls2 = LayerScale(dim, layerscale) if layerscale is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping 14x14 patches projected to the embedding width by one strided convolution (``proj``)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int = PATCH_SIZE):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, h * w, dim)


class VisionTransformer(nn.Module):
    """DINOv2's ViT encoder: patch size 14, class token, optional register tokens, LayerScale.

    Parameters
    ----------
    embed_dim, num_blocks, num_heads : int
        Width, depth and attention heads (see ``VIT_SIZES`` for DINOv2's S/B/L/g).
    mlp_ratio : float
        Hidden width of the feed-forward layers over ``embed_dim``.
    ffn : {'mlp', 'swiglu'}
        Feed-forward kind: GELU MLP (ViT-S/B/L) or SwiGLU (ViT-g).
    registers : int
        Register tokens (Darcet et al. 2024; DINOv2's ``*_reg`` weights have 4).
    input_size : int
        Image side (a multiple of 14) the position embeddings are stored for: 518 (a 37 x 37 grid) as
        in the DINOv2 checkpoints. Other input sizes interpolate them bicubically, as DINOv2 does.
    in_channels : int
        Channels of the patch projection (3 for DINOv2's RGB weights).
    layerscale : float
        Initial LayerScale value: 1.0 as DINOv2's torch.hub models are built (pretrained weights
        replace it; DINOv2's own pre-training starts from 1e-5, which leaves the blocks nearly idle
        for the first thousands of iterations).

    Notes
    -----
    ``forward`` takes (B, in_channels, H, W) with H and W multiples of 14 and returns the
    normalized patch tokens (B, H/14 * W/14, embed_dim), class and register tokens dropped.
    DINOv2's ``mask_token`` (masked-image pre-training only) is not part of this module.
    """

    def __init__(self, *, embed_dim: int = 384, num_blocks: int = 12, num_heads: int = 6, mlp_ratio: float = 4.0,
                 ffn: str = "mlp", registers: int = 0, input_size: int = 518, in_channels: int = 3,
                 layerscale: float = 1.0):
        super().__init__()
        if ffn not in ("mlp", "swiglu"):
            raise ValueError(f"ffn must be 'mlp' or 'swiglu', got {ffn!r}")
        self.embed_dim = embed_dim
        self.num_registers = registers
        self.patch_size = PATCH_SIZE
        grid = input_size // PATCH_SIZE
        self.patch_embed = PatchEmbed(in_channels, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, registers, embed_dim)) if registers else None
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, ffn=ffn, layerscale=layerscale)
                                    for _ in range(num_blocks))
        self.norm = nn.LayerNorm(embed_dim, eps=LAYERNORM_EPS)
        # DINOv2's initialisation (timm's ViT scheme).
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        self.apply(_init_linear)

    @property
    def grid_size(self) -> int:
        """Side of the stored position-embedding grid (37 for 518-pixel inputs)."""
        return math.isqrt(self.pos_embed.shape[1] - 1)

    def position_embeddings(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Position embeddings (1, 1 + grid_h * grid_w, dim) for a grid of patches.

        As DINOv2's ``interpolate_pos_encoding``: bicubic, no anti-aliasing, scale factors
        ``(grid + 0.1) / stored_grid`` (the 0.1 avoids floating-point rounding of the output size).
        """
        stored = self.grid_size
        if grid_h == stored and grid_w == stored:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = patch_pos.float().reshape(1, stored, stored, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, scale_factor=((grid_h + 0.1) / stored, (grid_w + 0.1) / stored),
                                  mode="bicubic", antialias=False)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1).to(self.pos_embed.dtype)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % PATCH_SIZE or w % PATCH_SIZE:
            raise ValueError(f"input sides must be multiples of {PATCH_SIZE}, got {h} x {w}")
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        tokens = tokens + self.position_embeddings(h // PATCH_SIZE, w // PATCH_SIZE)
        if self.register_tokens is not None:
            registers = self.register_tokens.expand(len(tokens), -1, -1)
            tokens = torch.cat([tokens[:, :1], registers, tokens[:, 1:]], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 1 + self.num_registers:]


def vit_settings(size: str, *, embed_dim: int | None = None, num_blocks: int | None = None,
                 num_heads: int | None = None) -> dict:
    """The settings of DINOv2's ViT of ``size``, with any of width, depth and heads replaced."""
    if size not in VIT_SIZES:
        raise ValueError(f"size must be one of {', '.join(VIT_SIZES)}, got {size!r}")
    settings = dict(VIT_SIZES[size])
    for name, value in (("embed_dim", embed_dim), ("num_blocks", num_blocks), ("num_heads", num_heads)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            settings[name] = value
    return settings
