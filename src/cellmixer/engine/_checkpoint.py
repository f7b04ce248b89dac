"""Checkpoints that survive an interruption: tensors in safetensors, the rest in JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .._errors import CellmixerError
from ..io import atomic_path, write_json

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"


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


def save_checkpoint(folder: Path, *, network, optimizer, rng: np.random.Generator, iteration: int,
                    history: list[dict], meta: dict) -> None:
    """Write the complete training state, each file atomically, JSON last (it marks completeness)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors, optimizer_plain = _flatten_optimizer(optimizer.state_dict())
    tensors.update({f"model.{k}": v.detach().cpu().contiguous() for k, v in network.state_dict().items()})
    with atomic_path(folder / STATE_TENSORS, overwrite=True) as tmp:
        save_file(tensors, str(tmp))
    write_json(folder / STATE_JSON, {
        "iteration": iteration,
        "rng": rng.bit_generator.state,
        "optimizer": optimizer_plain,
        "history": history,
        **meta,
    }, overwrite=True)


def read_checkpoint_meta(folder: Path) -> dict:
    path = folder / STATE_JSON
    if not path.is_file() or not (folder / STATE_TENSORS).is_file():
        raise CellmixerError(f"--resume: {folder} holds no complete checkpoint; train without --resume.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CellmixerError(f"{path}: damaged checkpoint ({exc}); train again without --resume.") from None


def restore_checkpoint(folder: Path, meta: dict, *, network, optimizer, rng: np.random.Generator) -> None:
    try:
        tensors = load_file(str(folder / STATE_TENSORS))
        network.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    except Exception as exc:  # a truncated or mismatched file
        raise CellmixerError(f"{folder / STATE_TENSORS}: cannot restore the checkpoint ({exc}); "
                             "train again without --resume.") from None
    rng.bit_generator.state = meta["rng"]
