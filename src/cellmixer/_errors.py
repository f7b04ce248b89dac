"""The one exception type that the command line turns into a one-line message, and out-of-memory
errors turned into it where the work that ran out is known."""

from __future__ import annotations

import contextlib
import re


class CellmixerError(Exception):
    """A problem with the user's input: a file, an option or a model folder.

    The message names what is wrong and what to do about it. The command line prints it on one
    line and exits with status 2, without a traceback.
    """


# torch reports a failed allocation as a RuntimeError (CPU: "DefaultCPUAllocator: can't allocate memory",
# CUDA: torch.OutOfMemoryError "CUDA out of memory", MPS: "MPS backend out of memory"); numpy as MemoryError.
_OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "not enough memory")
_ASKED = re.compile(r"tried to allocate ([0-9.]+) ?(bytes|[KMGT]i?B)", re.IGNORECASE)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed memory allocation (of numpy, torch on any device, or Python)."""
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in _OUT_OF_MEMORY)


def _asked(exc: BaseException) -> str:
    match = _ASKED.search(str(exc))
    if not match:
        return ""
    amount, unit = match.groups()
    if unit == "bytes":
        return f" ({float(amount) / 2**30:.1f} GiB asked)"
    return f" ({amount} {unit} asked)"


@contextlib.contextmanager
def out_of_memory(what: str, fix: str):
    """Turn a failed allocation inside the block into a :class:`CellmixerError`:
    ``"{what}: out of memory (N GiB asked); {fix}."``.

    >>> with out_of_memory("training batch", "lower --batch-size"):
    ...     raise MemoryError()
    Traceback (most recent call last):
    ...
    cellmixer._errors.CellmixerError: training batch: out of memory; lower --batch-size.
    """
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise CellmixerError(f"{what}: out of memory{_asked(exc)}; {fix}.") from exc
