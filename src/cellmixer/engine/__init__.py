"""What every method shares: the device and arithmetic (``resolve_device``, ``autocast``), the model
folder with prediction by tiles (:class:`SegmentationModel`), the training outline (optimisation loop,
checkpoints, resume, record) and the writers of instance results."""

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
from ._settings import (
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
from ._tiling import (
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
                      TrainingInterrupted,
                      load_pretrained,
                      refuse_existing_model,
                      resume_settings,
                      stored_architecture,
)

__all__ = [
    "CHECKPOINT_DIR", "check_settings", "check_value", "default_of", "flag_of", "setting", "settings_from", "spec",
    "split_settings", "takes_settings", "METHODS", "Method", "load_model", "method_by_task", "method_of", "register_method", "DEVICES", "describe_device", "module_device", "resolve_device", "to_device", "Optimization", "OptimizationSettings", "PRECISIONS", "SegmentationModel",
    "TrainingInterrupted", "autocast", "bfloat16_supported", "blend_window", "input_statistics",
    "load_pretrained", "predict_probabilities", "refuse_existing_model", "resolve_precision", "resume_settings",
    "stored_architecture", "tile_starts", "tile_statistics", "upsample_probabilities", "write_instances",
    "write_training_record",
]
