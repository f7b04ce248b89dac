"""Writing results safely: never overwrite without permission, never leave half-written files."""

from __future__ import annotations

import contextlib
import contextvars
import csv
import functools
import json
import os
import re
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path

try:  # POSIX; elsewhere lock_folder checks the process id in the lock file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

import numpy as np
import tifffile
from PIL import Image

from .._errors import CellmixerError


LOCK_FILE = ".cellmixer.lock"
# Temporary files of atomic_path: ".<stem>.<8 random characters>.part<suffix>" (tempfile's names included).
_PART = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.part(\.[A-Za-z0-9]+)?$")
# Locks this process holds in its current command: resolved folder -> open lock file.
_SCOPE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("cellmixer_output_locks", default=None)


def prepare_output_dir(path, *, option: str = "--output") -> Path:
    """Create ``path`` (and parents), check that files can be written into it and, inside a command
    (:func:`locks_outputs`), lock it for that command: a second run writing into the same folder is
    refused while the first runs (:func:`lock_folder`)."""
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
    held = _SCOPE.get()
    if held is not None and path.resolve() not in held:
        held[path.resolve()] = lock_folder(path, option=option)
    return path


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"process {info['pid']} on {info['host']} ({info['command']}, since {info['started']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


def lock_folder(folder, *, option: str = "--output") -> int:
    """Lock ``folder`` for this process: ``<folder>/.cellmixer.lock`` holds its process id, host,
    command and start time, and an exclusive ``flock`` on it lasts as long as the process holds the
    file open. A lock left by a process that died (killed, power cut) is not held by anyone and is
    taken over; leftover temporary files of that run (``.*.part*``) are removed then. Returns the
    open file (:func:`unlock_folder` releases it).

    Raises a :class:`CellmixerError` naming the folder and the process that holds it.
    """
    folder = Path(folder)
    path = folder / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _try_lock(fd)
        except BlockingIOError:
            text = os.read(fd, 4096).decode("utf-8", "replace")
            os.close(fd)
            raise CellmixerError(f"{option} {folder}: in use by {_holder(text)}; wait for that run to end or choose "
                                 f"another folder (if no such run is going on, remove {path}).") from None
        # its last holder may have removed the file between our open and our lock: lock the file at the path
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(
        [Path(sys.argv[0]).name, *sys.argv[1:]])[:200] if sys.argv and sys.argv[0] else "python",
        "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
    remove_stale_parts(folder)
    return fd


def _try_lock(fd: int) -> None:
    """An exclusive lock of the open file ``fd`` or BlockingIOError; released when the process ends."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    # Without flock (Windows): the process id in the file, and whether that process still runs.
    text = os.read(fd, 4096).decode("utf-8", "replace")
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        pid = int(json.loads(text)["pid"])
    except (ValueError, KeyError, TypeError):
        return
    if pid != os.getpid() and _running(pid):
        raise BlockingIOError(pid)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def unlock_folder(folder, fd: int) -> None:
    """Release the lock of :func:`lock_folder`: the lock file is removed, then closed."""
    with contextlib.suppress(OSError):
        os.unlink(Path(folder) / LOCK_FILE)
    os.close(fd)


@contextlib.contextmanager
def output_locks():
    """The scope of one command: each folder prepared for output inside it (:func:`prepare_output_dir`)
    is locked until the scope ends. Scopes nest (the outermost one holds the locks)."""
    if _SCOPE.get() is not None:
        yield
        return
    held: dict = {}
    token = _SCOPE.set(held)
    try:
        yield
    finally:
        _SCOPE.reset(token)
        for folder, fd in held.items():
            unlock_folder(folder, fd)


def locks_outputs(function):
    """Decorator of a command (a function that writes files): its output folders are locked while
    it runs (:func:`output_locks`)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with output_locks():
            return function(*args, **kwargs)

    return wrapper


def remove_stale_parts(folder, *, depth: int = 3) -> list[Path]:
    """Remove the temporary files (``.*.part*``) that a run killed while writing left in ``folder`` and
    its sub-folders (``depth`` levels); only call it with the folder locked. Returns what was removed."""
    removed = []
    folder = Path(folder)
    for root, dirs, files in os.walk(folder):
        level = len(Path(root).relative_to(folder).parts)
        dirs[:] = [d for d in dirs if not d.startswith(".")] if level < depth else []
        for name in files:
            if _PART.match(name):
                with contextlib.suppress(OSError):
                    os.unlink(Path(root) / name)
                    removed.append(Path(root) / name)
    return removed


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


def new_file_mode() -> int:
    """The permissions of a new file in this process: 0o666 less the umask (so that results shared
    with a group stay readable: some writers, safetensors among them, create their files 0600)."""
    try:
        with open("/proc/self/status") as fh:  # Linux: the umask without changing it
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def temporary_path(path) -> Path:
    """A new empty file next to ``path``, named ``.<stem>.<random>.part<suffix>``: writers that pick the
    format from the suffix still work, and a later run finds it if this one is killed
    (:func:`remove_stale_parts`). It has the permissions of a new file (the umask applies), not
    tempfile's 0600: a model folder or results shared with a group stay readable."""
    path = Path(path)
    while True:
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.part{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(path, *, overwrite: bool = False):
    """Yield a temporary path next to ``path`` (:func:`temporary_path`); on success rename it to ``path``.

    If the body raises (or the process is interrupted), the temporary file is removed and ``path``
    is left as it was; a file under the final name is always complete.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise CellmixerError(f"{path} already exists; pass --overwrite to replace it.")
    tmp = temporary_path(path)
    try:
        yield tmp
        os.chmod(tmp, new_file_mode())
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
        # zlib level 3: a 1280 x 1080 overlay in a third of the time of the default 6, and no larger
        Image.fromarray(np.ascontiguousarray(data)).save(tmp, format="PNG", compress_level=3)
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
