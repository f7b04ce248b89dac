"""Progress bars that can be switched off (tests, batch jobs), and notes to the user."""

import contextlib
import contextvars
import sys

from tqdm.auto import tqdm

# Notes held back while a command checks its inputs (notes_held).
_HELD: contextvars.ContextVar = contextvars.ContextVar("cellmixer_held_notes", default=None)


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """A tqdm bar on stderr, or a silent pass-through with the same methods when ``enabled`` is False."""
    return tqdm(iterable, disable=not enabled, dynamic_ncols=True, **kwargs)


def note(message: str) -> None:
    """Print a one-line notice on stderr (between progress bars): what a person should know, not an error."""
    held = _HELD.get()
    if held is not None:
        held.append(message)
        return
    tqdm.write(f"cellmixer: {message}", file=sys.stderr)


@contextlib.contextmanager
def notes_held():
    """The notes of the block are said when it ends, and only if it ends without an error: a command
    that refuses its input after a note ends with its one line alone. Blocks nest."""
    if _HELD.get() is not None:
        yield
        return
    held: list[str] = []
    token = _HELD.set(held)
    try:
        yield
    finally:
        _HELD.reset(token)
    for message in held:
        note(message)
