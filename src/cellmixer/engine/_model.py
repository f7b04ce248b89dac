"""A trained model is a folder: ``config.json`` (what it is) and ``weights.safetensors`` (its numbers)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._errors import CellmixerError
from .._settings import check_mapping, check_value, field_of, setting, takes_settings
from .._version import __version__
from ..io import atomic_path, write_json
from ..models import (
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    architecture_options,
    build_network,
    state_dict_mismatch,
)
from ..ops import ForegroundParams, normalize_nuclear_stain, rescale_image
from ._device import module_device, resolve_device, resolve_precision
from ._normalization import flat_field_input, input_statistics
from ._tiling import (
    Tiling,
    Window,
    as_tiling,
    auto_tile_size,
    predict_probabilities,
    upsample_probabilities,
)


# Label images are uint8: 0 is background, 1..255 the classes.
MAX_CLASSES = 255
# The keys of each normalization method (besides "method"); see engine.input_statistics.
NORMALIZATION_KEYS = {"background": {"foreground"}, "flatfield": {"foreground", "sigma"}, "percentile": {"low", "high"},
                      "tile": {"tile_size"}}


def _class_names_need(names) -> str | None:
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        return "give a list of names"
    if len(names) > MAX_CLASSES:
        return f"at most {MAX_CLASSES} classes"
    return None


def _channel_need(channel) -> str | None:
    if channel is None or (isinstance(channel, int) and not isinstance(channel, bool)) or (
            isinstance(channel, str) and channel.strip()):
        return None
    return "give a channel index, a channel name or null"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The keys of a model folder's ``config.json`` that describe how images reach the network (the
    rest: ``architecture`` with :class:`cellmixer.models.ArchitectureOptions`, ``normalization`` with
    :data:`NORMALIZATION_KEYS`). A folder is checked against them on load (:func:`check_model_config`)."""

    format: str = setting(FORMAT, "what the file is", choices=(FORMAT,), cli=False)
    format_version: int = setting(FORMAT_VERSION, "version of the folder's layout", at_least=1, cli=False)
    cellmixer_version: str = setting(__version__, "the version that wrote it", kind=str, cli=False)
    task: str | None = setting(None, "the method whose model it is (none: a cell-type model)", kind=str, cli=False)
    classes: list = setting([], "class names, label k is the k-th", check=_class_names_need, cli=False)
    channel: int | str | None = setting(None, "channel of multi-channel images: an index or a name", cli=False,
                                        check=_channel_need)
    input_scale: float = setting(1.0, "images are resized by this factor for the network, e.g. 0.5 for large cells",
                                 at_least=0.05, at_most=4, cli=False)
    pixel_size: float | None = setting(None, "micrometres per pixel of the training images", kind=float, above=0,
                                       at_most=10_000, cli=False)
    nuclear_input: bool = setting(False, "the network reads the nuclear stain as a second input channel", cli=False)


def check_model_config(config, path, *, fix: str = "restore the file from the trained model") -> None:
    """Refuse a ``config.json`` (already parsed) that does not describe a model this version can
    load: the wrong kinds of values, keys missing or unknown where they are passed on, values out of
    range. The message names ``path`` and the key. (The network it describes is checked by
    :func:`cellmixer.models.check_network`, its size included, before it is built.)"""

    def bad(message: str):
        raise CellmixerError(f"{path}: {message}; {fix}.")

    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CellmixerError(f"{path}: not a cellmixer model configuration (no \"format\": \"{FORMAT}\").")
    version = config.get("format_version", 1)
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise CellmixerError(f"{path}: written by a newer cellmixer (format {version}); upgrade cellmixer to load it.")
    for name in ("classes", "architecture", "normalization"):
        if name not in config:
            bad(f"\"{name}\" is missing")
    try:
        for field in dataclasses.fields(ModelConfig):
            if field.name in config:
                check_value(field, config[field.name], key=field.name)
        spec, normalization = config["architecture"], config["normalization"]
        if not isinstance(spec, dict):
            raise CellmixerError(f"\"architecture\" is {json.dumps(spec)[:40]}: give an object")
        if spec.get("num_classes") != len(config["classes"]) + 1:
            raise CellmixerError(f"\"architecture.num_classes\" is {json.dumps(spec.get('num_classes'))}: the file "
                                 f"lists {len(config['classes'])} classes, the network needs "
                                 f"{len(config['classes']) + 1} outputs")
        channels = 2 if config.get("nuclear_input") else 1  # the image, and the nuclear stain if it is an input
        if spec.get("in_channels") != channels:
            raise CellmixerError(f"\"architecture.in_channels\" is {json.dumps(spec.get('in_channels'))}: give "
                                 f"{channels} (\"nuclear_input\" is {json.dumps(bool(config.get('nuclear_input')))})")
        if not isinstance(normalization, dict) or normalization.get("method") not in NORMALIZATION_KEYS:
            raise CellmixerError(f"\"normalization.method\": choose one of {', '.join(NORMALIZATION_KEYS)}")
        method = normalization["method"]
        if config.get("nuclear_input") and method == "tile":
            raise CellmixerError("\"nuclear_input\" needs a normalization of the whole field, not \"tile\"")
        unknown = sorted(set(normalization) - NORMALIZATION_KEYS[method] - {"method"})
        missing = sorted(NORMALIZATION_KEYS[method] - {"low", "high"} - set(normalization))
        if unknown or missing:
            key = (unknown or missing)[0]
            raise CellmixerError(f"\"normalization.{key}\" " + ("is not a setting of the method " + method
                                                                  if unknown else "is missing"))
        if method in ("background", "flatfield"):
            check_mapping(ForegroundParams, normalization["foreground"], key="normalization.foreground")
            sigma = normalization.get("sigma", 64.0)
            if method == "flatfield" and (isinstance(sigma, bool) or not isinstance(sigma, (int, float))
                                          or not 1 <= sigma <= 4096):
                raise CellmixerError(f"\"normalization.sigma\" is {json.dumps(sigma)}: give pixels between 1 and 4096")
        elif method == "tile":
            check_value(_TILE_SIZE, normalization["tile_size"], key="normalization.tile_size")
        else:
            low, high = normalization.get("low", 1.0), normalization.get("high", 99.8)
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) \
                    or not 0 <= low < high <= 100:
                raise CellmixerError(f"\"normalization.low\" and \"high\" are {low} and {high}: give percentiles "
                                     "0 <= low < high <= 100")
    except CellmixerError as exc:
        bad(str(exc).rstrip("."))


_TILE_SIZE = field_of(Tiling, "tile_size")


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


# An image's pixel size may differ from the training images' by this factor before it is refused.
PIXEL_SIZE_TOLERANCE = (0.8, 1.25)


class SegmentationModel:
    """A semantic segmentation network with everything needed to use it on new images.

    Label ``0`` is background and label ``k`` is ``classes[k - 1]``.

    Parameters
    ----------
    network : torch.nn.Module
    config : dict
        ``classes``, ``architecture`` (name and options), ``normalization``, ``channel`` and,
        once trained, ``training`` (the settings and data used).

    Examples
    --------
    >>> import numpy as np
    >>> model = SegmentationModel.new(["jurkat", "k562"], width=4, depth=2)
    >>> labels = model.predict(np.random.default_rng(0).normal(size=(40, 50)))
    >>> labels.shape, labels.dtype, model.num_classes
    ((40, 50), dtype('uint8'), 3)
    """

    def __init__(self, network: torch.nn.Module, config: dict, *, device=None, folder=None):
        self.network = network.to(memory_format=torch.channels_last).eval()
        self.config = config
        self.folder = None if folder is None else Path(folder)  # where it was loaded from
        if device is not None:
            self.to(device)

    def to(self, device) -> "SegmentationModel":
        """Move the network to ``device`` (``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ``'mps'`` or a
        :class:`torch.device`); returns the model."""
        self.network.to(resolve_device(device))
        return self

    @property
    def device(self) -> torch.device:
        """Where the network runs."""
        return module_device(self.network)

    # A model sent to another process (a dask worker) travels as its config and CPU weights, and lands on
    # that process's own accelerator if it was on one here: a worker may have another GPU, or none.
    def __getstate__(self) -> dict:
        state = {k: v.detach().cpu() for k, v in self.network.state_dict().items()}
        return {"config": self.config, "folder": self.folder, "state": state, "device": self.device.type}

    def __setstate__(self, saved: dict) -> None:
        network = build_network(saved["config"]["architecture"])
        network.load_state_dict(saved["state"])
        self.__init__(network, saved["config"], folder=saved["folder"],
                      device="cpu" if saved["device"] == "cpu" else "auto")

    @classmethod
    def new(cls, classes, *, architecture: str = "unet", channel: int | None = None, input_scale: float = 1.0,
            normalization: dict | None = None, nuclear_input: bool = False, seed: int = 0,
            **options) -> "SegmentationModel":
        """An untrained model for ``classes`` (background is added as label 0).

        ``input_scale`` resizes images by this factor before the network (0.5: half the pixels per
        side), so that cells have the size the network was trained at; results come back at the
        image's own size. With ``nuclear_input`` the network reads the nuclear stain as a second
        channel (:meth:`predict` then needs it).
        """
        classes = [str(c) for c in classes]
        spec = {"name": architecture, **architecture_options(architecture), **options,
                "in_channels": 2 if nuclear_input else 1, "num_classes": len(classes) + 1}
        if normalization is None:
            normalization = {"method": "background", "foreground": ForegroundParams().to_dict()}
        torch.manual_seed(seed)
        network = build_network(spec)
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "cellmixer_version": __version__,
            "classes": classes,
            "architecture": spec,
            "normalization": normalization,
            "channel": channel,
            "input_scale": float(input_scale),
            "nuclear_input": bool(nuclear_input),
        }
        return cls(network, config)

    @property
    def classes(self) -> list[str]:
        return list(self.config["classes"])

    @property
    def num_classes(self) -> int:
        """Output classes, background included."""
        return len(self.config["classes"]) + 1

    @property
    def channel(self) -> int | None:
        return self.config.get("channel")

    def input_channel(self, channel: int | None = None) -> tuple[int | None, str]:
        """The channel to read images at, ``channel`` (``--channel``) or else the model's own, and what
        chose it (for messages: ``read_image(path, channel=..., option=...)``)."""
        if channel is not None or self.channel is None:
            return channel, "--channel"
        where = f" ({self.folder / CONFIG_FILE})" if self.folder is not None else ""
        return self.channel, f"the model's channel{where}"

    @property
    def input_scale(self) -> float:
        return float(self.config.get("input_scale", 1.0))

    @property
    def pixel_size(self) -> float | None:
        """Micrometres per pixel of the training images, when their files recorded it."""
        value = self.config.get("pixel_size")
        return float(value) if value is not None else None

    def check_pixel_size(self, pixel_size, where) -> None:
        """Refuse an image whose pixels are of another size than the training images' (both known):
        its cells would have another size in pixels than the cells the model learnt."""
        trained = self.pixel_size
        if trained is None or pixel_size is None:
            return
        size = float(pixel_size[-1] if isinstance(pixel_size, (tuple, list)) else pixel_size)
        if not PIXEL_SIZE_TOLERANCE[0] <= size / trained <= PIXEL_SIZE_TOLERANCE[1]:
            raise CellmixerError(
                f"{where}: {size:g} um per pixel, but the model was trained on images of {trained:g} um per pixel; "
                f"resample the image by {size / trained:.3g} (or train on images of this magnification), or give "
                "--pixel-size if the file's calibration is wrong.")

    # ----------------------------------------------------------------------------- files
    def save(self, folder, *, overwrite: bool = False) -> Path:
        """Write ``config.json`` and ``weights.safetensors`` into ``folder`` (created if needed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.network.state_dict().items()}
        with atomic_path(folder / WEIGHTS_FILE, overwrite=overwrite) as tmp:
            save_file(state, str(tmp), metadata={"format": FORMAT})
        write_json(folder / CONFIG_FILE, self.config, overwrite=overwrite)
        return folder

    @classmethod
    def load(cls, folder, *, device=None) -> "SegmentationModel":
        """Load a model folder, onto ``device`` (default: the CPU). Reads JSON and safetensors only: no
        code from the files is run; the weights load on any device, whichever one trained them."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CellmixerError(f"{folder}: no such model folder; give the folder that `cellmixer train` wrote.")
        config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.is_file():
                raise CellmixerError(
                    f"{path}: missing; a model folder holds {CONFIG_FILE} and {WEIGHTS_FILE} (train again or copy both)."
                )
        try:
            config = json.loads(config_path.read_text(), parse_constant=_refuse_constant)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
            raise CellmixerError(f"{config_path}: not valid JSON ({exc}); restore it from the trained model.") from None
        check_model_config(config, config_path)
        network = build_network(config["architecture"], source=str(config_path))
        try:
            state = load_file(str(weights_path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CellmixerError(f"{weights_path}: cannot read the weights ({exc}); the file is corrupt or "
                                 "incomplete, copy it again.") from None
        detail = state_dict_mismatch(network.state_dict(), state)
        if detail:
            raise CellmixerError(f"{weights_path}: does not match {CONFIG_FILE} ({detail}); the two files come "
                                 "from different models.")
        network.load_state_dict(state)
        return cls(network, config, device=device, folder=folder)

    # ----------------------------------------------------------------------------- use
    def input_statistics(self, image: np.ndarray) -> tuple[float, float]:
        """Offset and scale that turn ``image`` into network input (see ``normalization``)."""
        return input_statistics(image, self.config["normalization"])

    @property
    def tile_size(self) -> int:
        """The sliding-window tile side that ``tile_size='auto'`` uses: the network's input size (ViT
        models: the size they were built for, 518 by default), else 512."""
        return auto_tile_size(self.network)

    @takes_settings(Tiling)
    def predict(self, image: np.ndarray, *, nuclear: np.ndarray | None = None, tiling: Tiling | None = None,
                probabilities=False, progress: bool = False, window: Window | None = None,
                statistics: tuple | None = None, **tiling_options):
        """Label every pixel of ``image`` with a class (0 = background).

        Parameters
        ----------
        image : (H, W) array
            Any size and numeric type.
        nuclear : (H, W) array, optional
            The field's nuclear stain, for models that read it as a second input (:attr:`nuclear_input`);
            normalized by its own nuclei (:func:`cellmixer.ops.normalize_nuclear_stain`).
        tiling : Tiling, optional
            The sliding window and arithmetic as one object; the keyword options below change its
            fields (default: ``Tiling()``).
        tile_size : int, 'auto' or None
            Sliding-window tile side, at least 16; ``'auto'`` is the network's input size
            (:attr:`tile_size`: 518 for ViT models, 512 for U-Nets); ``None`` predicts in one pass
            (needs memory for the whole image).
            Models trained on per-tile normalized crops (``normalization`` method ``'tile'``, e.g.
            nucleus models) always use the tile size they were trained at.
        overlap : float
            Fraction of each tile shared with its neighbours, in [0, 0.9]; overlapping predictions
            are blended.
        batch_size : int
            Tiles per forward pass.
        probabilities : bool or array
            ``True`` also returns the (num_classes, H, W) float32 class probabilities; an array of
            that shape (e.g. a memory-mapped file) is filled with them instead.
        precision : {'fp32', 'auto', 'bf16', 'fp16'}
            Network arithmetic. ``'auto'`` uses bfloat16 where the CPU has native support (about 3x
            faster, labels differ from float32 at about 0.1 % of pixels, near ties), bfloat16 or
            float16 on GPUs, float32 elsewhere. The network runs where it is (:meth:`to`).
        augment : bool
            Test-time augmentation: average over the 8 flips and rotations (8x slower, often a
            little more accurate).
        progress : bool
            Show a progress bar over tiles.
        window : Window, optional
            ``image`` is a part of a larger image (a chunk with its context): predict
            ``window.area`` with the whole image's tiles, bit for bit as the whole image would be
            (models with an input scale other than 1 predict the part as an image of its own,
            equal up to the blending of tiles, see docs/benchmarks.md). The results have the area's shape.
        statistics : (offset, scale), optional
            The normalization of the whole image (:meth:`input_statistics`); default: that of
            ``image`` (give it with ``window``).

        Returns
        -------
        labels : (H, W) uint8 ndarray
        probabilities : (num_classes, H, W) float32 ndarray, only if ``probabilities is True``
        """
        tiling = as_tiling(tiling, **tiling_options)
        image = np.asarray(image)
        nuclear = self._check_nuclear(image, nuclear, window)
        if self.config["normalization"].get("method") == "flatfield":
            # the image (or a chunk with its context) divided by its own background level: no whole-image statistic
            image, statistics = flat_field_input(image, self.config["normalization"]), (0.0, 1.0)
        offset, scale = self.input_statistics(image) if statistics is None else statistics
        if nuclear is not None:  # the network's input channels, normalized: the image's own, then the stain's
            image, offset, scale = self.normalized_input(image, nuclear, (offset, scale)), 0.0, 1.0
        tile_size = tiling.tile_size
        if self.config["normalization"].get("method") == "tile":
            tile_size = self.config["normalization"]["tile_size"]
        elif tile_size == "auto":
            tile_size = self.tile_size
        tiling = as_tiling(tiling, tile_size=tile_size, precision=resolve_precision(tiling.precision, self.device))
        shape = image.shape[-2:] if window is None else window.area_shape
        probs = np.empty((self.num_classes, *shape), np.float32) if probabilities is True else (
            probabilities if probabilities is not False and probabilities is not None else None)
        options = dict(offset=offset, scale=scale, num_classes=self.num_classes, tiling=tiling, progress=progress)
        if self.input_scale == 1.0:
            labels = predict_probabilities(self.network, image, probabilities=probs, window=window, **options)
        else:
            small = rescale_image(image, self.input_scale)
            small_probs = np.empty((self.num_classes, *small.shape[-2:]), np.float32)
            predict_probabilities(self.network, small, probabilities=small_probs, **options)
            if window is None:
                labels = upsample_probabilities(small_probs, image.shape[-2:], probabilities=probs)
            else:  # the part predicted as an image of its own, then its area cut out
                whole = np.empty((self.num_classes, *image.shape), np.float32)
                upsample_probabilities(small_probs, image.shape, probabilities=whole)
                part = whole[(slice(None), *window.local(image.shape))]
                labels = part.argmax(axis=0).astype(np.uint8)
                if probs is not None:
                    probs[:] = part
        return (labels, probs) if probabilities is True else labels

    @property
    def nuclear_input(self) -> bool:
        """Whether the network reads the nuclear stain as its second input channel."""
        return bool(self.config.get("nuclear_input", False))

    def normalized_input(self, image: np.ndarray, nuclear: np.ndarray | None = None,
                         statistics: tuple | None = None) -> np.ndarray:
        """``image`` as the network reads it, at the image's own size: normalized by ``statistics`` (default
        :meth:`input_statistics`), (H, W); for a model with a nuclear input, its stain after it, (2, H, W)."""
        offset, scale = self.input_statistics(image) if statistics is None else statistics
        x = (np.asarray(image, np.float32) - np.float32(offset)) / np.float32(scale)
        return np.stack([x, normalize_nuclear_stain(nuclear)]) if self.nuclear_input else x

    def _check_nuclear(self, image: np.ndarray, nuclear, window) -> np.ndarray | None:
        """The stain the network reads (None for a model without a nuclear input), checked against ``image``."""
        if not self.nuclear_input:
            return None
        where = f" ({self.folder})" if self.folder is not None else ""
        if nuclear is None:
            raise CellmixerError(f"the model{where} reads the nuclear stain beside the image: give the stain of each "
                                 "image (--nuclear-replace OLD NEW or --nuclear-channel C).")
        nuclear = np.asarray(nuclear)
        if nuclear.shape != image.shape:
            raise CellmixerError(f"nuclear stain: shape {nuclear.shape} differs from the image's {image.shape}; give "
                                 "the stain of the same field, at the same size.")
        if window is not None:
            raise CellmixerError(f"the model{where} reads the nuclear stain: images predicted in chunks (Zarr, or "
                                 "larger than two --chunk-size on a side) are not supported for it; raise --chunk-size.")
        return nuclear
