"""Self-training on the images being analysed: their confidently typed cells become labels, and a copy of
the cell-type model is fine-tuned on them (the domain of a new co-culture: its exposure, its confluence)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..._errors import CellmixerError
from ..._progress import note, progress_bar
from ..._settings import setting, setting_like
from ...engine import LabelledImage, OptimizationSettings, SegmentationModel, TileSampler, Training
from ...ops import IGNORE, rescale_image
from ..cellmixer import training_loss
from ._assign import TypedInstances


# Fewer fields to adapt to than this get a warning: one field lost 0.027 on the benchmark, four gained.
FEW_FIELDS = 4


@dataclass
class AdaptConfig(OptimizationSettings):
    """Settings of the self-training step (``typed predict --adapt``), saved in the adapted model."""

    iterations: int = setting_like(OptimizationSettings, "iterations", 300,
                                   help="fine-tuning steps on the analysed images", flag="--adapt-iterations")
    optimizer: str = setting_like(OptimizationSettings, "optimizer", "adam", cli=False)
    learning_rate: float = setting_like(OptimizationSettings, "learning_rate", 1e-4, cli=False)
    lr_schedule: str = setting_like(OptimizationSettings, "lr_schedule", "poly", cli=False)
    crop_size: int = setting_like(OptimizationSettings, "crop_size", 192, cli=False)
    checkpoint_every: int = setting_like(OptimizationSettings, "checkpoint_every", 100, cli=False)
    confidence: float = setting(0.8, "a cell becomes a label when the mean probability of its type is at least this",
                                above=0.5, below=1, flag="--adapt-confidence")
    adapt_images: int = setting(16, "images (fields) to adapt on, spread over the inputs", at_least=1)


def adaptation_target(cells: TypedInstances, background: np.ndarray, *, confidence: float) -> np.ndarray:
    """The labels that one image's typed cells teach: the confident cells (score >= ``confidence``)
    with their type (1..K), the confident background (probability >= ``confidence``, outside every
    cell) 0, and everything else ignored (255).

    >>> from cellmixer.methods.typed import typed_instances
    >>> p = np.zeros((3, 4, 6), np.float32); p[0] = 1; p[:, :, :3] = np.array([0.05, 0.9, 0.05])[:, None, None]
    >>> cells = np.zeros((4, 6), int); cells[:, :2] = 1; cells[:, 4:] = 2
    >>> adaptation_target(typed_instances(p, cells), p[0], confidence=0.8)[0].tolist()
    [1, 1, 255, 0, 255, 255]
    """
    lut = np.full(len(cells) + 1, IGNORE, np.uint8)
    confident = cells.scores >= confidence
    lut[1:][confident] = cells.types[confident] + 1
    target = lut[cells.labels]
    target[(cells.labels == 0) & (np.asarray(background) >= confidence)] = 0
    return target


class AdaptTraining(Training):
    """A CellMixer model fine-tuned on the confident cells of the images it is about to type."""

    description = "adapting to the images"
    loss_name = "Tversky loss"

    def __init__(self, model: SegmentationModel, examples, output, config: AdaptConfig, **run):
        super().__init__(config, output, **run)
        self.source, self.examples = model, examples

    def prepare(self):
        model, scale = self.source, self.source.input_scale
        self.items = []
        for image, stain, target in self.examples:
            x = model.normalized_input(image, stain)  # the image (and stain) as the model reads them
            if scale != 1:
                x, target = rescale_image(x, scale), rescale_image(target, scale, labels=True)
            self.items.append(LabelledImage(x, target))
        labelled = sum(int(((it.target > 0) & (it.target != IGNORE)).sum()) for it in self.items)
        if labelled == 0:
            raise CellmixerError(f"--adapt: no cell was typed with confidence {self.config.confidence} or more; "
                                 "lower --adapt-confidence, or leave --adapt out.")

    def new_model(self):
        config = copy.deepcopy(self.source.config)
        model = SegmentationModel(copy.deepcopy(self.source.network).cpu(), config)
        return model

    def objective(self, model):
        sampler = TileSampler(self.items, crop_size=self.config.crop_size, augment=self.config.augment,
                              normalize_tiles=False)
        return sampler.batch, training_loss(self.source.config.get("training", {})), None

    def summary(self):
        return {"adapted_from": self.source.config.get("training"), "adapt_images": len(self.items)}

    def title(self):
        return f"adapted to {len(self.items)} images"


def adapt_model(model: SegmentationModel, fields, output, config: AdaptConfig, *, segment, tiling=None,
                progress: bool = True, **run) -> SegmentationModel:
    """Fine-tune a copy of ``model`` on the confidently typed cells of ``fields`` and save it in ``output``.

    Parameters
    ----------
    model : SegmentationModel
        A CellMixer model.
    fields : iterable of (image, stain, name)
        The images to adapt to (``stain`` may be None).
    output : Path
        Folder of the adapted model.
    config : AdaptConfig
    segment : callable
        ``segment(image, stain, name, probabilities) -> TypedInstances``: how the cells are typed, from the
        model's probabilities of the image.
    tiling : Tiling, optional
        The sliding window of the model's probabilities.
    progress : bool
    **run
        ``device``, ``threads``, ``overwrite`` of the training.
    """
    examples = []
    for image, stain, name in progress_bar(list(fields), desc="typing cells to adapt on", unit="image",
                                           enabled=progress):
        _, probs = model.predict(image, nuclear=stain, probabilities=True, tiling=tiling)
        cells = segment(image, stain, name, probs)
        examples.append((image, stain, adaptation_target(cells, probs[0], confidence=config.confidence)))
    if len(examples) < FEW_FIELDS:
        note(f"--adapt: only {len(examples)} image{'s' if len(examples) != 1 else ''} to adapt on; fine-tuned on so "
             "few fields a model learns them rather than the types (one field: 0.945 -> 0.918 on the benchmark, "
             "16: 0.954): adapt over many fields of the plate, or leave --adapt out.")
    return AdaptTraining(model, examples, output, config, progress=progress, **run).fit()
