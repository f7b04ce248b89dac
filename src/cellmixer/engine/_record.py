"""The record of a training: its log as CSV and its curve as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_path, write_csv

LOG_FILE = "training_log.csv"
CURVE_FILE = "training_curve.png"


def moving_average(values, window: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return values
    window = max(1, min(window, len(values)))
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def plot_training_curve(path: Path, iterations, losses, *, validation=None, ylabel: str = "Tversky loss",
                        title: str = "", overwrite: bool = True) -> Path:
    """Loss per iteration, its moving average and, if given, ``validation = (iterations, losses)``."""
    from matplotlib.figure import Figure  # here: matplotlib takes half a second to import

    # A Figure without pyplot: no GUI backend is touched (napari, Jupyter), and nothing to close.
    fig = Figure(figsize=(6, 3.5), dpi=120)
    ax = fig.subplots()
    ax.plot(iterations, losses, color="0.75", lw=0.8, label="loss per iteration")
    ax.plot(iterations, moving_average(losses, max(1, len(losses) // 25)), color="C0", lw=2, label="moving average")
    if validation is not None and len(validation[0]):
        ax.plot(*validation, "o-", color="C3", lw=1.5, ms=3, label="validation loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", frameon=False)
    fig.tight_layout()
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png")
    return path


def write_training_record(folder, history: list[dict], *, ylabel: str, title: str) -> None:
    """``training_log.csv`` (one row per iteration, with the validation loss where it was computed)
    and ``training_curve.png`` of a finished training in its model folder."""
    folder = Path(folder)
    checked = [h for h in history if "validation_loss" in h]
    columns = ["iteration", "loss", "learning_rate", *(["validation_loss"] if checked else []), "elapsed_s"]
    write_csv(folder / LOG_FILE, history, overwrite=True, fieldnames=columns)
    validation = ([h["iteration"] for h in checked], [h["validation_loss"] for h in checked]) if checked else None
    plot_training_curve(folder / CURVE_FILE, [h["iteration"] for h in history], [h["loss"] for h in history],
                        validation=validation, ylabel=ylabel, title=title)
