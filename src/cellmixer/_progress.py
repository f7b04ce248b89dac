"""Progress bars that can be switched off (tests, batch jobs), and notes to the user."""

import sys

from tqdm.auto import tqdm


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """A tqdm bar on stderr, or a silent pass-through with the same methods when ``enabled`` is False."""
    return tqdm(iterable, disable=not enabled, dynamic_ncols=True, **kwargs)


def note(message: str) -> None:
    """Print a one-line notice on stderr (between progress bars): what a person should know, not an error."""
    tqdm.write(f"cellmixer: {message}", file=sys.stderr)
