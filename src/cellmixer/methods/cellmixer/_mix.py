"""The ``mix`` command: write example artificial mixtures to look at before training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..._progress import progress_bar
from ..._settings import check_settings, setting, setting_like, settings_from, takes_settings
from ...engine import OptimizationSettings
from ...io import (
    add_legend,
    check_overwrite,
    class_colors,
    discover_dataset,
    locks_outputs,
    overlay_labels,
    prepare_output_dir,
    to_uint8,
    write_csv,
    write_png,
    write_tiff,
)
from ...ops import ForegroundParams, mix_pair
from ._data import CropSampler, load_pseudolabelled
from ._train import TrainingConfig


@dataclass(frozen=True)
class MixSettings:
    """Settings of :func:`mix` (their one home: defaults, ranges, help)."""

    number: int = setting(16, "mixtures to write", at_least=1, at_most=100_000, flag=("--number", "-n"))
    crop_size: int = setting_like(OptimizationSettings, "crop_size", 256, help="crop side in pixels")
    lam: float = setting_like(TrainingConfig, "lam", 0.5, help="weight of the first crop")
    kind: str = setting("blend", "CellMixer mixup, or cells side by side as training's --mixing mosaic",
                        choices=("blend", "mosaic"))
    seed: int = setting_like(OptimizationSettings, "seed", 0, help="seeds the choice of crops")

    def __post_init__(self):
        check_settings(self)


@locks_outputs
@takes_settings(MixSettings)
def mix(data, output, *, classes=None, pattern: str = "*", channel: int | None = None, nuclear=None,
        nuclear_channel=None, foreground: ForegroundParams | dict | None = None, overwrite: bool = False,
        progress: bool = True, **settings) -> list[dict]:
    """Make ``number`` artificial mixtures of two cultures of different classes, as training does.

    Writes ``mixture_NNN.tif`` (float32 image), ``mixture_NNN_masks.tif`` (uint8 class map),
    ``mixture_NNN.png`` (both source crops with their pseudo-labels, the mixture, and the mixture's
    labels, with a legend) and ``mixtures.csv`` (where each crop came from).

    Parameters
    ----------
    data : str or Path
        Folder with one sub-folder per cell type (at least two).
    output : str or Path
    number : int
        Mixtures to write.
    crop_size : int
        Side of the square crops (smaller images are used whole, cropped to a common size).
    lam : float
        Mixup weight of the first crop (blend only).
    kind : {'blend', 'mosaic'}
        CellMixer's mixup (:func:`mix_pair`) or the cells of both crops composed around their
        nuclei or cell seeds (training's ``mixing='mosaic'``, :class:`CropSampler`).
    classes, pattern, channel, nuclear, nuclear_channel, foreground :
        As for training (the nuclear stain cuts the mosaics around the nuclei).
    seed : int
    overwrite, progress : bool
    """
    config = settings_from(MixSettings, settings, function="mix")
    number, crop_size, lam, kind, seed = config.number, config.crop_size, config.lam, config.kind, config.seed
    params = ForegroundParams(**foreground) if isinstance(foreground, dict) else (foreground or ForegroundParams())
    dataset = discover_dataset(data, classes=classes, pattern=pattern, min_classes=2, exclude=[output])
    out = prepare_output_dir(output)
    names = [f"mixture_{i:03d}" for i in range(number)]
    check_overwrite([out / "mixtures.csv"] + [out / f"{n}{s}" for n in names for s in (".tif", "_masks.tif", ".png")],
                    overwrite=overwrite)
    items = load_pseudolabelled(dataset, foreground=params, channel=channel, seeds=kind == "mosaic", nuclear=nuclear,
                                nuclear_channel=nuclear_channel, progress=progress)
    sampler = CropSampler(items, len(dataset.classes) + 1, crop_size=crop_size, mixing=kind, augment_params=None)
    by_class = {}
    for item in items:
        by_class.setdefault(item.class_index, []).append(item)
    rng = np.random.default_rng(seed)
    colors = class_colors(len(dataset.classes))
    rows = []
    for name in progress_bar(names, desc="mixing", unit="mixture", enabled=progress):
        k1, k2 = rng.choice(sorted(by_class), size=2, replace=False)
        a = by_class[k1][rng.integers(len(by_class[k1]))]
        b = by_class[k2][rng.integers(len(by_class[k2]))]
        h = min(crop_size, a.image.shape[0], b.image.shape[0])
        w = min(crop_size, a.image.shape[1], b.image.shape[1])
        ya, xa = rng.integers(a.image.shape[0] - h + 1), rng.integers(a.image.shape[1] - w + 1)
        yb, xb = rng.integers(b.image.shape[0] - h + 1), rng.integers(b.image.shape[1] - w + 1)
        crop_a = (a.image[ya:ya + h, xa:xa + w], a.labels[ya:ya + h, xa:xa + w])
        crop_b = (b.image[yb:yb + h, xb:xb + w], b.labels[yb:yb + h, xb:xb + w])
        if kind == "blend":
            image, labels = mix_pair(*crop_a, *crop_b, lam=lam, normalize=False)
        else:
            image, labels, _ = sampler.mosaic(rng, (*crop_a, a.seeds[ya:ya + h, xa:xa + w], None),
                                              (*crop_b, b.seeds[yb:yb + h, xb:xb + w], None))
        write_tiff(out / f"{name}.tif", image, overwrite=overwrite)
        write_tiff(out / f"{name}_masks.tif", labels, overwrite=overwrite)
        views = [overlay_labels(to_uint8(crop_a[0]), crop_a[1], colors), overlay_labels(to_uint8(crop_b[0]), crop_b[1], colors),
                 np.repeat(to_uint8(image)[..., None], 3, axis=-1), overlay_labels(to_uint8(image), labels, colors)]
        gap = np.full((h, 4, 3), 255, np.uint8)
        panel = np.concatenate([v for view in views for v in (view, gap)][:-1], axis=1)
        write_png(out / f"{name}.png", add_legend(panel, dataset.classes, colors), overwrite=overwrite)
        rows.append({"mixture": name, "kind": kind, "lam": lam if kind == "blend" else "",
                     "first_image": str(a.path), "first_class": dataset.classes[k1 - 1], "first_y": ya, "first_x": xa,
                     "second_image": str(b.path), "second_class": dataset.classes[k2 - 1], "second_y": yb,
                     "second_x": xb, "height": h, "width": w})
    write_csv(out / "mixtures.csv", rows, overwrite=overwrite)
    return rows
