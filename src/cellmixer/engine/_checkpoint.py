"""Checkpoints that survive an interruption at any moment: one folder written whole, then put in place.

A checkpoint is the folder ``checkpoint/`` of a model folder: ``state.safetensors`` (weights and the
optimiser's tensors), ``best.safetensors`` (the weights that scored best on validation, if kept) and
``state.json`` (iteration, random state, loss history, settings). A new one is written into
``.checkpoint.new/`` (each file flushed to disk, ``state.json`` last), then the old folder is renamed
away, the new one renamed into place and the old one removed. Killed anywhere, the model folder holds
the old checkpoint, the new one, or both; :func:`recover_checkpoint` keeps the newest complete one. The
files of one checkpoint carry the same random ``unit`` stamp, so files of two checkpoints never mix.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .._errors import CellmixerError
from ..io import new_file_mode
from ..models import state_dict_mismatch

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
BEST_TENSORS = "best.safetensors"
NEW, OLD = ".checkpoint.new", ".checkpoint.old"  # beside checkpoint/, while one replaces the other


def _flatten_optimizer(state_dict: dict) -> tuple[dict, dict]:
    tensors, plain = {}, {"param_groups": state_dict["param_groups"], "state": {}}
    for index, entries in state_dict["state"].items():
        plain["state"][str(index)] = {}
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain["state"][str(index)][name] = value
    return tensors, plain


def _unflatten_optimizer(tensors: dict, plain: dict) -> dict:
    state = {int(i): dict(entries) for i, entries in plain["state"].items()}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def _synced(path: Path) -> None:
    """Flush ``path`` (a file or a folder entry list) to the disk: a power cut does not undo it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder
        pass
    finally:
        os.close(fd)


def save_checkpoint(folder: Path, *, network, optimizer, rng: np.random.Generator, iteration: int,
                    history: list[dict], meta: dict, best: dict | None = None) -> None:
    """Write the complete training state as one unit (see the module's notes). ``best`` is
    ``{"iteration", "validation_loss", "state"}`` of the weights kept by validation, or None."""
    folder = Path(folder)
    new, old = folder.with_name(NEW), folder.with_name(OLD)
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    unit = uuid.uuid4().hex
    stamp = {"unit": unit, "iteration": str(iteration)}
    tensors, optimizer_plain = _flatten_optimizer(optimizer.state_dict())
    tensors.update({f"model.{k}": v.detach().cpu().contiguous() for k, v in network.state_dict().items()})
    save_file(tensors, str(new / STATE_TENSORS), metadata=stamp)
    if best is not None:
        save_file({k: v.contiguous() for k, v in best["state"].items()}, str(new / BEST_TENSORS), metadata=stamp)
    state = {"unit": unit, "iteration": iteration, "rng": rng.bit_generator.state, "optimizer": optimizer_plain,
             "history": history, **meta,
             "best": None if best is None else {k: v for k, v in best.items() if k != "state"}}
    (new / STATE_JSON).write_text(json.dumps(state, indent=1) + "\n")
    mode = new_file_mode()
    for name in os.listdir(new):
        os.chmod(new / name, mode)  # safetensors writes 0600: the umask decides, as for every file
        _synced(new / name)
    _synced(new)
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.rename(folder, old)
    os.rename(new, folder)
    _synced(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def _stamp(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


def _complete(folder: Path) -> bool:
    """Whether ``folder`` holds all the files of one checkpoint (not whether their content is sound)."""
    try:
        state = json.loads((folder / STATE_JSON).read_text())
        files = [STATE_TENSORS, *([BEST_TENSORS] if state.get("best") is not None else [])]
        return all(_stamp(folder / name).get("unit") == state["unit"] for name in files)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError):
        return False


def recover_checkpoint(folder: Path) -> None:
    """Leave ``folder`` (``checkpoint/``) as the newest complete checkpoint after a run that was killed
    while writing one, and remove the unfinished ones beside it."""
    folder = Path(folder)
    new, old = folder.with_name(NEW), folder.with_name(OLD)
    if not folder.exists():
        # killed between the two renames (the new one is complete), or while writing the very first one
        for candidate in (new, old):
            if candidate.is_dir() and _complete(candidate):
                try:
                    os.rename(candidate, folder)
                except FileNotFoundError:  # another process of the run (torchrun) recovered it first
                    pass
                break
    for leftover in (new, old):
        shutil.rmtree(leftover, ignore_errors=True)


def remove_checkpoint(folder: Path) -> None:
    """Remove the checkpoint ``folder`` and anything a killed run left beside it (``--overwrite``)."""
    folder = Path(folder)
    for path in (folder, folder.with_name(NEW), folder.with_name(OLD)):
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------- reading
def _whole(value, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_state(state, path: Path) -> None:
    """The checkpoint's own entries (not the settings: :func:`resume_settings` checks those)."""

    def bad(key: str, need: str):
        raise CellmixerError(f"{path}: damaged checkpoint (\"{key}\" {need}); train again without --resume.")

    if not isinstance(state, dict):
        bad("", "is not an object")
    if not _whole(state.get("iteration")):
        bad("iteration", "must be a whole number")
    history = state.get("history")
    if not isinstance(history, list) or len(history) != state["iteration"]:
        bad("history", f"must list the {state['iteration']} iterations done")
    for entry in history:
        if (not isinstance(entry, dict) or not _whole(entry.get("iteration"), 1) or not _number(entry.get("loss"))
                or not _number(entry.get("learning_rate", 0.0))):
            bad("history", "holds an entry without a whole iteration and a loss")
    try:
        np.random.default_rng().bit_generator.state = state.get("rng")
    except (TypeError, ValueError, KeyError):
        bad("rng", "is not a random state")
    optimizer = state.get("optimizer")
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("param_groups"), list) \
            or not isinstance(optimizer.get("state"), dict):
        bad("optimizer", "must hold param_groups and state")
    if not isinstance(state.get("training"), dict):
        bad("training", "is missing")
    best = state.get("best")
    if best is not None and (not isinstance(best, dict) or not _whole(best.get("iteration"))
                             or not _number(best.get("validation_loss"))):
        bad("best", "must hold an iteration and a validation loss")


def read_checkpoint_meta(folder: Path) -> dict:
    """The ``state.json`` of the checkpoint ``folder``, checked: after a run killed while checkpointing,
    the newest complete checkpoint (:func:`recover_checkpoint`); files of two checkpoints, damaged
    files or entries of the wrong kind are refused with one line naming the file."""
    folder = Path(folder)
    recover_checkpoint(folder)
    path = folder / STATE_JSON
    if not path.is_file() or not (folder / STATE_TENSORS).is_file():
        raise CellmixerError(f"--resume: {folder} holds no complete checkpoint; train without --resume.")
    try:
        state = json.loads(path.read_text(), parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CellmixerError(f"{path}: damaged checkpoint (not valid JSON: {str(exc)[:80]}); train again without "
                             "--resume.") from None
    _check_state(state, path)
    files = [STATE_TENSORS, *([BEST_TENSORS] if state.get("best") is not None else [])]
    for name in files:
        try:
            unit = _stamp(folder / name).get("unit")
        except (OSError, SafetensorError, ValueError) as exc:
            raise CellmixerError(f"{folder / name}: damaged checkpoint ({str(exc)[:80]}); train again without "
                                 "--resume.") from None
        if state.get("unit") is not None and unit != state["unit"]:
            raise CellmixerError(f"{folder / name}: of another checkpoint than {STATE_JSON}; train again without "
                                 "--resume.")
    return state


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _load_tensors(path: Path) -> dict:
    try:
        return load_file(str(path))
    except (OSError, SafetensorError, ValueError) as exc:
        raise CellmixerError(f"{path}: damaged checkpoint ({str(exc)[:80]}); train again without --resume.") from None


def restore_checkpoint(folder: Path, meta: dict, *, network, optimizer, rng: np.random.Generator) -> dict | None:
    """Load the checkpoint ``folder`` (its ``state.json`` is ``meta``, :func:`read_checkpoint_meta`) into
    ``network``, ``optimizer`` and ``rng``; returns the best weights it kept (as for
    :func:`save_checkpoint`) or None."""
    tensors = _load_tensors(folder / STATE_TENSORS)
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    detail = state_dict_mismatch(network.state_dict(), weights)
    if detail:
        raise CellmixerError(f"{folder / STATE_TENSORS}: does not fit the network ({detail}); train again without "
                             "--resume.")
    network.load_state_dict(weights)
    try:
        optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
        raise CellmixerError(f"{folder / STATE_JSON}: the optimiser's state does not fit ({str(exc)[:80]}); train "
                             "again without --resume.") from None
    rng.bit_generator.state = meta["rng"]
    if meta.get("best") is None:
        return None
    state = _load_tensors(folder / BEST_TENSORS)
    detail = state_dict_mismatch(network.state_dict(), state)
    if detail:
        raise CellmixerError(f"{folder / BEST_TENSORS}: does not fit the network ({detail}); train again without "
                             "--resume.")
    return {**meta["best"], "state": state}
