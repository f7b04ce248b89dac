"""Writing results safely: never overwrite without permission, never leave half-written files."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from .._errors import CellmixerError


def prepare_output_dir(path, *, option: str = "--output") -> Path:
    """Create ``path`` (and parents) and check that files can be written into it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CellmixerError(f"{option} {path}: exists and is not a folder; choose a folder path.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".cellmixer-write-test-"):
            pass
    except OSError as exc:
        raise CellmixerError(
            f"{option} {path}: cannot write here ({exc.strerror or exc}); choose a writable folder."
        ) from None
    return path


def check_overwrite(paths, *, overwrite: bool) -> None:
    """Refuse, before any work starts, to replace existing files unless ``overwrite``."""
    if overwrite:
        return
    existing = [Path(p) for p in paths if Path(p).exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise CellmixerError(
            f"{existing[0]}{more} already exists; pass --overwrite to replace, or choose another output folder."
        )


@contextlib.contextmanager
def atomic_path(path, *, overwrite: bool = False):
    """Yield a temporary path next to ``path``; on success rename it to ``path``.

    The temporary name keeps the suffix, so writers that pick the format from it still work. If
    the body raises, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise CellmixerError(f"{path} already exists; pass --overwrite to replace it.")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".part{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_tiff(path, data: np.ndarray, *, overwrite: bool = False, **kwargs) -> Path:
    """Write ``data`` as a zlib-compressed TIFF, atomically."""
    kwargs.setdefault("compression", "zlib")
    with atomic_path(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, data, **kwargs)
    return Path(path)


def write_png(path, data: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write a uint8 grayscale (H, W) or RGB (H, W, 3) array as PNG, atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        Image.fromarray(np.ascontiguousarray(data)).save(tmp, format="PNG")
    return Path(path)


def write_text(path, text: str, *, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path, obj, *, overwrite: bool = False) -> Path:
    return write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n", overwrite=overwrite)


def write_csv(path, rows: list[dict], *, overwrite: bool = False, fieldnames=None) -> Path:
    """Write a list of dicts as CSV, with the keys of the first row as header unless given."""
    if fieldnames is None:
        fieldnames = list(rows[0]) if rows else []
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
    return Path(path)
