"""What every method shares: the device and arithmetic (``resolve_device``, ``autocast``), the model
folder with prediction by tiles (:class:`SegmentationModel`, its settings :class:`Tiling`), the training
outline (optimisation loop, checkpoints, resume, record), the outline of file-in/file-out prediction
(:func:`run_images`) and the writers of instance results."""

from .._settings import (
    check_settings,
    check_value,
    default_of,
    flag_of,
    setting,
    settings_from,
    spec,
    split_settings,
    takes_settings,
)
from ._device import (
    DEVICES,
    PRECISIONS,
    autocast,
    bfloat16_supported,
    describe_device,
    module_device,
    resolve_device,
    resolve_precision,
    to_device,
)
from ._instances import write_instances
from ._method import (
    METHODS,
    Method,
    load_model,
    method_by_task,
    method_of,
    register_method,
)
from ._model import SegmentationModel
from ._normalization import input_statistics
from ._record import write_training_record
from ._run import RUN_RECORD, RunRecord, run_images
from ._sampling import FLIPS_ONLY, LabelledImage, TileSampler, validation_loss, validation_tiles
from ._tiling import (
    DEFAULT_TILE_SIZE,
    PRECISION_HELP,
    Tiling,
    as_tiling,
    auto_tile_size,
    blend_window,
    predict_probabilities,
    tile_starts,
    tile_statistics,
    upsample_probabilities,
)
from ._training import (
    CHECKPOINT_DIR,
    Optimization,
    OptimizationSettings,
    Training,
    TrainingInterrupted,
    load_pretrained,
    refuse_existing_model,
    resume_settings,
    stored_architecture,
)

__all__ = [
    "CHECKPOINT_DIR",
    "FLIPS_ONLY",
    "LabelledImage",
    "TileSampler",
    "validation_loss",
    "validation_tiles",
    "check_settings",
    "check_value",
    "default_of",
    "flag_of",
    "setting",
    "setting_like",
    "settings_from",
    "spec",
    "split_settings",
    "takes_settings",
    "METHODS",
    "Method",
    "load_model",
    "method_by_task",
    "method_of",
    "register_method",
    "DEVICES",
    "describe_device",
    "module_device",
    "resolve_device",
    "to_device",
    "Optimization",
    "OptimizationSettings",
    "PRECISIONS",
    "SegmentationModel",
    "Training",
    "TrainingInterrupted",
    "autocast",
    "bfloat16_supported",
    "blend_window",
    "input_statistics",
    "load_pretrained",
    "predict_probabilities",
    "refuse_existing_model",
    "resolve_precision",
    "resume_settings",
    "stored_architecture",
    "tile_starts",
    "tile_statistics",
    "upsample_probabilities",
    "write_instances",
    "write_training_record",
    "DEFAULT_TILE_SIZE",
    "PRECISION_HELP",
    "Tiling",
    "as_tiling",
    "auto_tile_size",
    "RUN_RECORD",
    "RunRecord",
    "run_images",
]
