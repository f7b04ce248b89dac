"""The ``evaluate`` command: score models on annotated images, unmixed and artificially mixed."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..._errors import CellmixerError
from ..._progress import progress_bar
from ..._settings import check_settings, setting, setting_like, settings_from, split_settings, takes_settings
from ...engine import OptimizationSettings, SegmentationModel, Tiling, as_tiling, load_model
from ...io import (
    add_legend,
    check_overwrite,
    class_colors,
    find_mask,
    list_images,
    locks_outputs,
    overlay_labels,
    prepare_output_dir,
    read_image,
    read_nuclear,
    to_uint8,
    write_json,
    write_png,
    write_text,
)
from ...metrics import confusion_matrix, format_table, segmentation_scores
from ...ops import mix_pair, normalize_nuclear_stain
from ._train import TrainingConfig

UNMIXED = "Unmixed"
ARTIFICIAL = "Artificial Mix"
NOT_ANNOTATED = -1  # value in ground-truth class maps of pixels that are not scored
MIXED_IGNORE_DEFAULT = 255


@dataclass(frozen=True)
class EvaluationSettings:
    """Settings of :func:`evaluate` (their one home: defaults, ranges, help)."""

    ignore_value: int | None = setting(None, "mask value of pixels not annotated (default: none for DATA/<class>/ "
                                             "folders, where any non-zero pixel is a cell; 255 for class-index "
                                             "masks of mixed cultures)", kind=int, at_least=0, at_most=255)
    artificial: int = setting(100, "artificial mixtures to score; 0 for none", at_least=0, at_most=100_000)
    lam: float = setting_like(TrainingConfig, "lam", 0.5, help="mixup weight")
    seed: int = setting_like(OptimizationSettings, "seed", 0, help="seeds the choice of pairs to mix")

    def __post_init__(self):
        check_settings(self)


@dataclass
class EvaluationImage:
    """An image with its ground-truth class map (0 background, k class k, -1 not annotated), and its
    nuclear stain where one is given."""

    name: str
    image: np.ndarray
    truth: np.ndarray
    class_index: int | None = None  # set for images of homogeneous cultures
    stain: np.ndarray | None = None


def load_evaluation_images(data, class_names, *, masks_dir=None, mask_suffix: str = "_masks", pattern: str = "*",
                           channel: int | str | None = None, channel_option: str = "--channel",
                           ignore_value: int | None = None, nuclear=None,
                           nuclear_channel: int | str | None = None) -> list[EvaluationImage]:
    """Read annotated images from ``data``.

    If ``data`` has sub-folders named after classes (homogeneous cultures), each image's mask may
    be binary (0/1 or 0/255) or an instance label image: its non-zero pixels get the folder's
    class. Otherwise (mixed cultures) masks hold class indices directly: 0 background, k the k-th
    class. Mask pixels equal to ``ignore_value`` are not annotated and not scored; by default no
    value for homogeneous cultures and 255 for mixed ones. The mask of ``a.tif`` is
    ``a<mask_suffix>.<ext>`` beside it, or a file of the same stem in ``masks_dir``. The nuclear stain
    of each image (for models that read one) is found as :func:`cellmixer.io.read_nuclear` finds it
    (``nuclear``: a folder or ``(old, new)`` of the file name; ``nuclear_channel``: a channel of the file).
    """
    data = Path(data)
    if not data.is_dir():
        raise CellmixerError(f"--data {data}: no such evaluation folder.")
    if masks_dir is not None and not Path(masks_dir).is_dir():
        raise CellmixerError(f"--masks-dir {masks_dir}: no such folder; give the folder of the ground-truth masks, "
                             "or leave the option out for masks beside the images.")
    homogeneous, folders = _class_folders(data, class_names, masks_dir=masks_dir, mask_suffix=mask_suffix,
                                          pattern=pattern)
    if ignore_value is None and not homogeneous:
        ignore_value = MIXED_IGNORE_DEFAULT
    if ignore_value is not None and not homogeneous and 0 <= ignore_value <= len(class_names):
        raise CellmixerError(f"--ignore-value {ignore_value}: class-index masks use 0..{len(class_names)} for "
                             f"background and the model's classes; give a value above {len(class_names)} (e.g. "
                             f"{MIXED_IGNORE_DEFAULT}).")
    if ignore_value == 0 and homogeneous:
        raise CellmixerError("--ignore-value 0: in masks of homogeneous cultures 0 is the background; give the value "
                             "of pixels that are not annotated.")
    items = []
    for folder, k in folders:
        for path in list_images(folder, pattern=pattern, mask_suffix=mask_suffix):
            if masks_dir is not None and Path(masks_dir).resolve() == path.parent.resolve():
                continue
            mask_path = find_mask(path, masks_dir=masks_dir, mask_suffix=mask_suffix)
            if mask_path is None:
                raise CellmixerError(f"{path}: no ground-truth mask found (expected {path.stem}{mask_suffix}.tif "
                                     "beside it, or give --masks-dir).")
            image = read_image(path, channel=channel, option=channel_option)
            mask = read_image(mask_path).astype(np.int64)
            if mask.shape != image.shape:
                raise CellmixerError(f"{mask_path}: mask is {mask.shape[0]}x{mask.shape[1]} but its image is "
                                     f"{image.shape[0]}x{image.shape[1]}; they must match.")
            stain = read_nuclear(path, nuclear=nuclear, nuclear_channel=nuclear_channel, shape=image.shape)
            ignore = mask == ignore_value if ignore_value is not None else np.zeros(mask.shape, bool)
            if k is not None:
                truth = np.where(mask > 0, k, 0)
            else:
                bad = (mask > len(class_names)) & ~ignore
                if bad.any():
                    raise CellmixerError(f"{mask_path}: holds value {int(mask[bad].max())} but the model has "
                                         f"{len(class_names)} classes; use 0..{len(class_names)} (or {ignore_value} "
                                         "for pixels not annotated).")
                truth = mask
            truth = np.where(ignore, NOT_ANNOTATED, truth).astype(np.int64)
            name = str(path.relative_to(data).with_suffix(""))
            items.append(EvaluationImage(name, image, truth, k, None if stain is None else stain[0]))
    if not items:
        raise CellmixerError(f"{data}: no images found to evaluate on.")
    return items


def _class_folders(data: Path, class_names, *, masks_dir, mask_suffix: str, pattern: str):
    """Whether ``data`` holds homogeneous cultures (images only in sub-folders: each must be named after
    a class of the model) or mixed cultures (images in ``data`` itself), and the folders to read with
    their class index (None for class-index masks)."""
    masks = Path(masks_dir).resolve() if masks_dir is not None else None
    subfolders = sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")
                        and p.resolve() != masks and list_images(p, pattern=pattern, mask_suffix=mask_suffix))
    top_level = [p for p in list_images(data, pattern=pattern, mask_suffix=mask_suffix) if p.parent == data]
    if top_level or not subfolders:
        return False, [(data, None)]
    unknown = [name for name in subfolders if name not in class_names]
    if unknown:
        lower = {name.lower(): name for name in class_names}
        hint = "".join(f"; {name} differs from the model's {lower[name.lower()]} in case" for name in unknown
                       if name.lower() in lower)
        raise CellmixerError(f"--data {data}: its sub-folder(s) {', '.join(unknown)} are not classes of the model "
                             f"({', '.join(class_names)}){hint}; name each folder of homogeneous cultures after its "
                             "class, or put mixed cultures with class-index masks directly in the folder.")
    return True, [(data / name, class_names.index(name) + 1) for name in subfolders]


def artificial_mixtures(items: list[EvaluationImage], *, lam: float = 0.5, limit: int = 100,
                        seed: int = 0) -> list[EvaluationImage]:
    """Mix annotated homogeneous images pairwise by the CellMixer rule, with ground-truth masks.

    Every ordered pair of images of different classes is a candidate (the order matters: the
    second image's cells are on top); at most ``limit`` are drawn at random. Pairs of different
    sizes are cropped to their common top-left part.
    """
    pairs = [(a, b) for a, b in itertools.permutations(items, 2)
             if a.class_index is not None and b.class_index is not None and a.class_index != b.class_index]
    rng = np.random.default_rng(seed)
    if len(pairs) > limit:
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), size=limit, replace=False))]
    mixtures = []
    for a, b in pairs:
        h, w = min(a.image.shape[0], b.image.shape[0]), min(a.image.shape[1], b.image.shape[1])
        ta, tb = a.truth[:h, :w], b.truth[:h, :w]
        image, _ = mix_pair(a.image[:h, :w], ta > 0, b.image[:h, :w], tb > 0, lam=lam)
        # the stains blended as training blends them: each normalized by its own nuclei first
        stain = None if a.stain is None or b.stain is None else (
            lam * normalize_nuclear_stain(a.stain[:h, :w]) + (1 - lam) * normalize_nuclear_stain(b.stain[:h, :w]))
        # Label rule M = M2 + (1 - sign(M2)) M1; pixels not annotated (-1) in the top image stay so, and
        # those of the bottom image stay so unless a cell of the top image covers them.
        truth = np.where(tb != 0, tb, ta)
        mixtures.append(EvaluationImage(f"{a.name} + {b.name}", image, truth, stain=stain))
    return mixtures


@takes_settings(Tiling)
def score(model, items: list[EvaluationImage], *, tiling: Tiling | None = None, progress: bool = False,
          desc: str = "scoring", **tiling_options):
    """Predict each item with ``model`` and score all of them together (one confusion matrix);
    pixels marked ``NOT_ANNOTATED`` are left out.

    ``tiling`` and the keyword options ``tile_size``, ``overlap``, ``batch_size``, ``precision``,
    ``augment`` are the prediction settings (see :class:`cellmixer.engine.Tiling`).

    Returns
    -------
    scores : dict
        :func:`segmentation_scores` with class names ``background`` and the model's classes.
    predictions : list of (H, W) uint8 arrays
    """
    tiling = as_tiling(tiling, **tiling_options)
    names = ["background", *model.classes]
    matrix = np.zeros((len(names), len(names)), np.int64)
    predictions = []
    for item in progress_bar(items, desc=desc, unit="image", enabled=progress):
        prediction = model.predict(item.image, nuclear=item.stain, tiling=tiling)
        matrix += confusion_matrix(item.truth, prediction, num_classes=len(names), ignore_value=NOT_ANNOTATED)
        predictions.append(prediction)
    return segmentation_scores(matrix, names), predictions


def evaluation_panel(item: EvaluationImage, prediction: np.ndarray, class_names) -> np.ndarray:
    """Image, ground truth and prediction side by side, with a legend."""
    colors = class_colors(len(class_names))
    gray = to_uint8(item.image)
    truth = np.maximum(item.truth, 0)
    gap = np.full((gray.shape[0], 4, 3), 255, np.uint8)
    views = [np.repeat(gray[..., None], 3, -1), gap, overlay_labels(gray, truth, colors), gap,
             overlay_labels(gray, prediction, colors)]
    return add_legend(np.concatenate(views, axis=1), class_names, colors, title="image | truth | prediction:")


@locks_outputs
@takes_settings(Tiling, EvaluationSettings)
def evaluate(models, data, *, model_names=None, masks_dir=None, mask_suffix: str = "_masks", pattern: str = "*",
             channel: int | None = None, nuclear=None, nuclear_channel: int | str | None = None, output=None,
             overlays: bool = True, device: str = "auto",
             overwrite: bool = False, progress: bool = True, tiling: Tiling | None = None, **options) -> dict:
    """Score one or more models on annotated images: per-class accuracy and IoU, mAcc, mIoU.

    Parameters
    ----------
    models : SegmentationModel, path, or a list of them
        Models with the same classes.
    data : str or Path
        Annotated images (see :func:`load_evaluation_images`): ``ROOT/<class>/`` folders of
        homogeneous cultures, or a folder of mixed cultures with class-index masks.
    model_names : list of str, optional
        Row names in the table (default: model folder names).
    masks_dir, mask_suffix, pattern, channel, ignore_value :
        Where the masks are and which pixels are not annotated.
    nuclear, nuclear_channel :
        Where each image's nuclear stain is, for models trained with one (see
        :func:`load_evaluation_images`); artificial mixtures blend the stains as the images.
    artificial : int
        For homogeneous data, also score this many artificial mixtures of image pairs of
        different classes, mixed with their ground-truth masks (0: none).
    lam, seed :
        Mixing weight and the seed that picks the pairs.
    output : str or Path, optional
        Folder for ``evaluation.json``, ``evaluation.md`` (the table) and, with ``overlays``, one
        PNG per image and model (image, truth, prediction).
    device : str
        ``'auto'`` (CUDA, then MPS, then the CPU), ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'mps'``.
    overlays, overwrite, progress : bool
    tiling : Tiling, optional
        The prediction settings as one object; the keyword options below change its fields.
    tile_size, overlap, batch_size, precision, augment :
        Prediction settings (see :class:`cellmixer.engine.Tiling` and :meth:`SegmentationModel.predict`).

    Returns
    -------
    dict
        ``{"results": {model: {set: scores}}, "table": markdown}``.
    """
    mine, tiling_options = split_settings(options, EvaluationSettings)
    settings = settings_from(EvaluationSettings, mine, function="evaluate")
    ignore_value, artificial, lam, seed = settings.ignore_value, settings.artificial, settings.lam, settings.seed
    tiling = as_tiling(tiling, **tiling_options)
    if not isinstance(models, (list, tuple)):
        models = [models]
    if model_names and len(model_names) != len(models):
        raise CellmixerError(f"--names {' '.join(map(str, model_names))}: give one name per model ({len(models)}).")
    loaded = [load_model(m, methods=("cellmixer",), device=device) for m in models]
    names = list(model_names) if model_names else [
        Path(m).name if not isinstance(m, SegmentationModel) else f"model {i + 1}" for i, m in enumerate(models)]
    if len(set(names)) < len(names):
        names = [f"{n} ({i + 1})" for i, n in enumerate(names)]
    class_names = loaded[0].classes
    for name, m in zip(names, loaded):
        if m.nuclear_input and nuclear is None and nuclear_channel is None:
            raise CellmixerError(f"model {name} reads the nuclear stain beside the image: give each image's stain "
                                 "(--nuclear-replace OLD NEW, --nuclear FOLDER or --nuclear-channel C).")
        if m.classes != class_names:
            raise CellmixerError(f"model {name} has classes {m.classes}, the first model {class_names}; "
                                 "compare models trained on the same classes.")
    out = None
    if output is not None:
        out = prepare_output_dir(output)
        check_overwrite([out / "evaluation.json", out / "evaluation.md"], overwrite=overwrite)
    channel, channel_option = loaded[0].input_channel(channel)
    items = load_evaluation_images(data, class_names, masks_dir=masks_dir, mask_suffix=mask_suffix, pattern=pattern,
                                   channel=channel, channel_option=channel_option, ignore_value=ignore_value,
                                   nuclear=nuclear, nuclear_channel=nuclear_channel)
    sets = {UNMIXED: items}
    if artificial > 0 and all(i.class_index is not None for i in items):
        mixtures = artificial_mixtures(items, lam=lam, limit=artificial, seed=seed)
        if mixtures:
            sets[ARTIFICIAL] = mixtures
    results: dict = {}
    for name, model in zip(names, loaded):
        results[name] = {}
        for set_name, set_items in sets.items():
            scores, predictions = score(model, set_items, tiling=tiling, progress=progress, desc=f"{name}: {set_name}")
            scores["images"] = len(set_items)
            results[name][set_name] = scores
            if out is not None and overlays:
                for item, prediction in zip(set_items, predictions):
                    slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{name}__{set_name}__{item.name}")
                    write_png(out / f"{slug}.png", evaluation_panel(item, prediction, class_names),
                              overwrite=overwrite)
    table = format_table(results)
    if out is not None:
        write_json(out / "evaluation.json", {"classes": ["background", *class_names], "ignore_value": ignore_value,
                                             "results": results}, overwrite=overwrite)
        write_text(out / "evaluation.md", table + "\n", overwrite=overwrite)
    return {"results": results, "table": table}
