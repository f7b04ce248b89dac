"""Where the network runs and in which arithmetic: written once here for every method.

``--device auto`` picks CUDA, then Apple's MPS, then the CPU. ``--precision auto`` is bfloat16 on a
CPU with native bfloat16 instructions (about 3x faster than float32 there) and on CUDA GPUs that
support it, float16 on other GPUs, float32 elsewhere; weights and losses stay float32 (autocast).
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np
import torch

from .._errors import CellmixerError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEVICES = "auto, cpu, cuda, cuda:N or mps"
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def bfloat16_supported() -> bool:
    """Whether this CPU has native bfloat16 matrix instructions (AVX512-BF16 or AMX) that oneDNN uses."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device | None = "auto", *, announce: bool = False) -> torch.device:
    """The :class:`torch.device` that ``device`` names.

    ``'auto'`` (or None) is the first CUDA GPU, else MPS, else the CPU; ``announce`` prints the
    choice on stderr. A device that this machine lacks is refused with a one-line error naming
    ``--device``.

    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("tpu")
    Traceback (most recent call last):
    ...
    cellmixer._errors.CellmixerError: --device tpu: unknown device; choose auto, cpu, cuda, cuda:N or mps.
    """
    if isinstance(device, torch.device):
        text = str(device)
    else:
        text = "auto" if device is None else str(device).strip().lower()
    if text == "auto":
        chosen = (torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else
                  torch.device("mps") if _mps_available() else torch.device("cpu"))
        if announce:
            print(f"device: {describe_device(chosen)} (--device auto)", file=sys.stderr)
        return chosen
    try:
        chosen = torch.device(text)
    except (RuntimeError, ValueError):
        raise CellmixerError(f"--device {device}: unknown device; choose {DEVICES}.") from None
    if chosen.type == "cpu":
        return torch.device("cpu")  # one CPU device: "cpu:1" is the same
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise CellmixerError(f"--device {device}: no CUDA GPU is available to torch {torch.__version__} on this "
                                 "machine; use --device cpu (or auto), or install a CUDA build of torch.")
        index = 0 if chosen.index is None else chosen.index
        if index >= torch.cuda.device_count():
            raise CellmixerError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                                 f"numbered from 0; choose one of them.")
        return torch.device("cuda", index)
    if chosen.type == "mps":
        if not _mps_available():
            raise CellmixerError(f"--device {device}: Apple's MPS backend is not available here; use --device cpu "
                                 "(or auto).")
        return chosen
    raise CellmixerError(f"--device {device}: unknown device; choose {DEVICES}.")


def describe_device(device: torch.device) -> str:
    """``'cuda:0 (NVIDIA H100)'``, ``'cpu (2 threads)'``, ``'mps'``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """The arithmetic that ``precision`` means on ``device``: ``'auto'`` -> ``'bf16'`` on a CPU that
    computes it natively (emulated bfloat16 is slow) and on CUDA GPUs that support it, ``'fp16'`` on
    other GPUs, else ``'fp32'``. float16 on the CPU is refused: it is emulated there.

    >>> resolve_precision("fp32")
    'fp32'
    """
    if precision not in PRECISIONS:
        raise CellmixerError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}.")
    kind = torch.device(device).type
    if precision == "auto":
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if kind == "mps":
            return "fp16"
        return "bf16" if bfloat16_supported() else "fp32"
    if precision == "fp16" and kind == "cpu":
        raise CellmixerError("--precision fp16: float16 is for GPUs; on the CPU use bf16 or fp32 (or auto).")
    return precision


def autocast(precision: str, device: str | torch.device = "cpu"):
    """Context in which the network runs at ``precision`` on ``device`` (weights and losses stay float32)."""
    device = torch.device(device)
    resolved = resolve_precision(precision, device)
    if resolved == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[resolved])


def to_device(array: np.ndarray, device: torch.device, *, channels_last: bool = False) -> torch.Tensor:
    """A numpy batch as a tensor on ``device``: pinned memory and a non-blocking copy on CUDA, where
    the copy then overlaps with the work already queued on the GPU."""
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    elif device.type != "cpu":
        tensor = tensor.to(device)
    if channels_last:
        tensor = tensor.contiguous(memory_format=torch.channels_last)
    return tensor


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a network's parameters (the CPU for a network without any)."""
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")
