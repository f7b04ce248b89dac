"""Arithmetic precision of the network on the CPU."""

from __future__ import annotations

import contextlib

import torch

from .._errors import CellmixerError

PRECISIONS = ("auto", "bf16", "fp32")


def bfloat16_supported() -> bool:
    """Whether this CPU has native bfloat16 matrix instructions (AVX512-BF16 or AMX) that oneDNN uses."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str) -> str:
    """``'auto'`` -> ``'bf16'`` where the CPU computes it natively (about 3x faster convolutions than
    float32 here), else ``'fp32'``; without native support bfloat16 is emulated and slow."""
    if precision not in PRECISIONS:
        raise CellmixerError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}.")
    if precision == "auto":
        return "bf16" if bfloat16_supported() else "fp32"
    return precision


def autocast(precision: str):
    """Context in which the network runs at ``precision`` (weights and losses stay float32)."""
    if resolve_precision(precision) == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
