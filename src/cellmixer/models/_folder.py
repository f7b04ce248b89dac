"""The files of a model folder: ``config.json`` (what it is) and ``weights.safetensors`` (its numbers)."""

from __future__ import annotations

import torch  # noqa: F401  (doctest)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT = "cellmixer-model"
FORMAT_VERSION = 1


def state_dict_mismatch(expected: dict, state: dict) -> str | None:
    """What keeps ``state`` from loading into a network whose state dict is ``expected`` (None: nothing).

    >>> state_dict_mismatch({"w": torch.zeros(2)}, {"w": torch.zeros(3)})
    'w has shape (3,), the network needs (2,)'
    """
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing:
        return f"missing {missing[:2]}"
    if unexpected:
        return f"unexpected {unexpected[:2]}"
    if wrong:
        key = wrong[0]
        return f"{key} has shape {tuple(state[key].shape)}, the network needs {tuple(expected[key].shape)}"
    return None
