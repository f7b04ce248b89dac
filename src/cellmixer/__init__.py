"""cellmixer: cell-type segmentation trained from homogeneous cultures, without drawn masks.

Each command of the ``cellmixer`` command line is a function here with the same options:
:func:`pseudolabel`, :func:`mix`, :func:`train`, :func:`predict`, :func:`evaluate`, :func:`demo`.
"""

__version__ = "0.1.0"

from ._errors import CellmixerError  # noqa: E402
from .demo import demo  # noqa: E402
from .inference import predict  # noqa: E402
from .io import discover_dataset, read_image  # noqa: E402
from .metrics import confusion_matrix, evaluate, segmentation_scores  # noqa: E402
from .mixing import mix, mix_pair, mosaic_pair, normalize_by_background  # noqa: E402
from .models import SegmentationModel, UNet  # noqa: E402
from .pseudolabels import ForegroundParams, extract_foreground, pseudolabel  # noqa: E402
from .training import train  # noqa: E402

__all__ = [
    "CellmixerError", "ForegroundParams", "SegmentationModel", "UNet", "__version__", "confusion_matrix", "demo",
    "discover_dataset", "evaluate", "extract_foreground", "mix", "mix_pair", "mosaic_pair",
    "normalize_by_background", "predict", "pseudolabel", "read_image", "segmentation_scores", "train",
]
