"""From a trained detector to instances: likelihood map, cell centre regions, guided backpropagation,
maximum projection, one graph cut per cell, fusion."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage as ndi

from ..._errors import CellmixerError
from ..._settings import check_settings, setting, takes_settings
from ...engine import (
    PRECISION_HELP,
    PRECISIONS,
    SegmentationModel,
    Tiling,
    as_tiling,
    load_model,
    predict_probabilities,
)
from ...io import relabel_consecutive
from ...ops import (
    SALIENCY_METHODS,
    fuse_cells,
    graph_cut,
    rescale_image,
    saliency_map,
    smoothness_weights,
)
from ._guided import contribution_maps, max_projection

TASK = "centroids"


@dataclass(frozen=True)
class CentroidSegmentation:
    """Detection and segmentation settings that a model folder stores (``config["centroids"]
    ["segmentation"]``) and prediction uses unless told otherwise: their one home (defaults, ranges,
    help). ``threshold`` and ``support_threshold`` were chosen on DeepCell training fields left out
    of the detector's training (docs/benchmarks.md); a support threshold cut the cells down to the
    neighbourhood of their nucleus."""

    threshold: float = setting(0.3, "likelihood (about 1 at a cell centre) above which a pixel belongs to a cell "
                                    "centre region", above=0)
    min_area: int = setting(3, "smallest centre region (network pixels)", at_least=1)
    window: int = setting(96, "window around each cell (network pixels)", at_least=8, at_most=2048)
    map_smoothing: float = setting(2.0, "Gaussian sigma of the contribution maps before the projection (0: raw)",
                                   at_least=0, at_most=100)
    foreground_threshold: float = setting(0.2, "foreground seeds: pixels a cell owns with this fraction of its "
                                               "strongest contribution", above=0, at_most=1)
    background_threshold: float = setting(0.2, "background seeds: pixels another cell owns with this fraction of "
                                               "its strongest", above=0, at_most=1)
    support_threshold: float = setting(0.0, "background seeds where a cell's own map is below this fraction of its "
                                            "maximum", at_least=0, below=1)
    saliency: str = setting("gradient", "data term: inverted (dark cells, phase contrast), image (bright cells), "
                                        "gradient (textured cells), none", choices=SALIENCY_METHODS)
    data_weight: float = setting(1.0, "weight of the data term", at_least=0)
    smoothness: float = setting(2.0, "weight of the contrast-sensitive boundary term", at_least=0)
    fill_holes: bool = setting(True, "fill the holes of each cell", cli=False)

    def __post_init__(self):
        check_settings(self)


# The same, as a dict (the form a model folder stores).
DEFAULT_SEGMENTATION = asdict(CentroidSegmentation())


@dataclass(frozen=True)
class Rescaling:
    """How images are resized before the detector (not stored with the model: it is about the images)."""

    rescale: float = setting(1.0, "resize the images by this factor first, so their cells have the size of the "
                                  "training cells: 2 for cells half as large", at_least=0.1, at_most=10)

    def __post_init__(self):
        check_settings(self)


def load_centroid_model(model, *, device=None) -> SegmentationModel:
    """A :class:`SegmentationModel` trained by :func:`cellmixer.train_centroids` (path or model), on ``device``."""
    return load_model(model, methods=("centroids",), device=device)


def network_input(model: SegmentationModel, image: np.ndarray, *, rescale: float = 1.0) -> np.ndarray:
    """The image as the detector sees it: resized by ``rescale`` times the model's input scale, then
    normalized."""
    image = np.asarray(image)
    offset, scale = model.input_statistics(image)
    factor = model.input_scale * rescale
    small = rescale_image(image, factor) if factor != 1.0 else image.astype(np.float32)
    return ((small - np.float32(offset)) / np.float32(scale)).astype(np.float32)


@dataclass(frozen=True)
class CentroidTiling:
    """How :func:`segment_cells` runs the detector: the tiles of its likelihood map and the batches of
    its guided backpropagation, both in one arithmetic. Checked when made, like :class:`Tiling`.

    >>> CentroidTiling().likelihood
    Tiling(tile_size=512, overlap=0.25, batch_size=4, precision='fp32', augment=False)
    """

    tile_size: int = setting(512, "likelihood map tiles", at_least=16)
    batch_size: int = setting(32, "cell windows per backward pass", at_least=1)
    precision: str = setting("fp32", PRECISION_HELP, choices=PRECISIONS)

    def __post_init__(self):
        check_settings(self)

    @property
    def likelihood(self) -> Tiling:
        """The sliding window of the likelihood map (tiles of ``tile_size``, the default overlap and batch)."""
        return Tiling(tile_size=self.tile_size, precision=self.precision)


@takes_settings(Tiling)
def predict_likelihood(network, x: np.ndarray, *, tiling: Tiling | None = None, **tiling_options) -> np.ndarray:
    """The detector's output on a normalized image, tile by tile with blended overlaps (the sliding
    window of :meth:`cellmixer.SegmentationModel.predict`).

    ``tiling`` and the keyword options ``tile_size`` (``'auto'``: 512 for the U-Net detector),
    ``overlap``, ``batch_size``, ``precision`` and ``augment`` are its settings (see
    :class:`cellmixer.engine.Tiling`).

    Returns an (H, W) float32 likelihood map (the network's raw output, ~0 background, ~1 at cell
    centres).
    """
    tiling = as_tiling(tiling, **tiling_options)
    network.eval()
    likelihood = np.empty((1, *x.shape), np.float32)
    predict_probabilities(network, x, offset=0.0, scale=1.0, num_classes=1, tiling=tiling, probabilities=likelihood)
    return likelihood[0]


def centre_regions(likelihood: np.ndarray, *, threshold: float = 0.4, min_area: int = 3) -> np.ndarray:
    """Cell centre regions ``S_u``: connected components (8-connected) of ``likelihood > threshold``
    with at least ``min_area`` pixels, numbered 1..N.

    >>> y = np.zeros((6, 9)); y[1:3, 1:3] = 0.9; y[4, 7] = 0.8; y[1:4, 5:7] = 0.3
    >>> int(centre_regions(y, threshold=0.5, min_area=2).max())
    1
    """
    regions, count = ndi.label(likelihood > threshold, np.ones((3, 3), bool))
    if count and min_area > 1:
        small = np.bincount(regions.ravel()) < min_area
        small[0] = False
        regions[small[regions]] = 0
    return relabel_consecutive(regions)


@dataclass
class CellSegmentation:
    """The result of :func:`segment_cells` for one image (at the image's own size).

    Attributes
    ----------
    labels : (H, W) int32 ndarray
        0 background, cells 1..n.
    detections : (N, 2) float64 ndarray
        (row, column) of each detected cell centre (centroid of its region ``S_u``).
    likelihood : (h, w) float32 ndarray
        The detector's output (at the network's scale).
    owner : (h, w) int32 ndarray
        The maximum projection: which detection contributes most at each pixel (network scale).
    """

    labels: np.ndarray
    detections: np.ndarray
    likelihood: np.ndarray
    owner: np.ndarray


def stored_settings(model: SegmentationModel, overrides: dict) -> dict:
    """The model's stored settings (checked when it was loaded) with ``overrides`` that are not None, checked."""
    stored = model.config.get("centroids", {}).get("segmentation", {})
    given = {k: v for k, v in overrides.items() if v is not None}
    return asdict(CentroidSegmentation(**{**stored, **given}))


@takes_settings(CentroidTiling)
def segment_cells(model, image, *, threshold: float | None = None, min_area: int | None = None,
                  window: int | None = None, map_smoothing: float | None = None,
                  foreground_threshold: float | None = None, background_threshold: float | None = None,
                  support_threshold: float | None = None, saliency: str | None = None,
                  data_weight: float | None = None, smoothness: float | None = None, rescale: float = 1.0,
                  seeds=None, progress: bool = False, tiling: CentroidTiling | None = None,
                  **tiling_options) -> CellSegmentation:
    """Instances of one image from a cell-centre detector (Nishimura et al. 2019).

    1. The detector's likelihood map ``y``; centre regions ``S_u`` = connected components of
       ``y > threshold`` (:func:`centre_regions`); their centroids are the detections.
    2. Guided backpropagation from each ``S_u`` (:func:`cellmixer.centroids.contribution_maps`),
       in windows of ``window`` pixels batched ``batch_size`` at a time, and the maximum
       projection across cells (each map divided by its own maximum).
    3. One graph cut per cell (:func:`cellmixer.instances.graph_cut`): foreground seeds are the
       pixels the cell owns with at least ``foreground_threshold`` of its strongest contribution
       (and its centre region), background seeds the pixels other cells own with at least
       ``background_threshold`` of theirs, the frame of its window, and (if ``support_threshold``
       > 0, off by default) the pixels where its own map is below that fraction of its maximum;
       the data term is the image's saliency (:func:`cellmixer.instances.saliency_map`), the
       smoothness term contrast-sensitive.
    4. Fusion into one label image without overlaps (:func:`cellmixer.instances.fuse_cells`).

    Settings left as None take the model's stored values (``config["centroids"]["segmentation"]``)
    or the defaults :data:`DEFAULT_SEGMENTATION`. Work is done at the model's input scale (times
    ``rescale``); labels and detections come back in the image's pixels.

    Parameters
    ----------
    model : SegmentationModel or path
        A detector trained by :func:`cellmixer.train_centroids`.
    image : (H, W) array
    threshold, min_area : detection (likelihood threshold, smallest region in network pixels).
    window, batch_size : guided backpropagation windows (network pixels) and windows per pass.
    map_smoothing : Gaussian sigma (network pixels) applied to the positive part of each contribution
        map before the projection (0: the raw maps, as eq. 4).
    foreground_threshold, background_threshold, support_threshold, saliency, data_weight, smoothness : graph cut.
    seeds : (H, W) integer array, optional
        Cell centre regions given instead of detected (e.g. the nuclei of a nuclear stain, at the
        image's size): step 1 is skipped and each seed grows into its cell (cells are numbered in
        the order of the seeds' labels).
    rescale : float
        Resize the image by this factor first, so that its cells have about the size (in pixels)
        of the cells the detector was trained on: 2 for cells half as large. Like Cellpose's
        ``rescale``; the detector misses cells much smaller than its training cells.
    progress : bool
        Show a progress bar over the batches of guided backpropagation.
    tiling : CentroidTiling, optional
        ``tile_size``, ``batch_size`` and ``precision`` as one object; the keyword options change
        its fields.
    tile_size, precision : sliding window of the likelihood map, and network arithmetic of it and of
        the guided backpropagation (see :func:`cellmixer.centroids.contribution_maps`).

    Returns
    -------
    CellSegmentation
    """
    tiling = replace(tiling or CentroidTiling(), **tiling_options)
    model = load_centroid_model(model)
    s = stored_settings(model, dict(threshold=threshold, min_area=min_area, window=window, map_smoothing=map_smoothing,
                              foreground_threshold=foreground_threshold, background_threshold=background_threshold,
                              support_threshold=support_threshold,
                              saliency=saliency, data_weight=data_weight, smoothness=smoothness))
    image = np.asarray(image)
    if image.ndim != 2:
        raise CellmixerError(f"image: {image.ndim}-D array of shape {image.shape}; give one 2-D channel.")
    if not np.isfinite(image).all():
        raise CellmixerError("image contains NaN or infinite values; replace them before use.")
    Rescaling(rescale)  # checked
    factor = model.input_scale * rescale
    empty = CellSegmentation(np.zeros(image.shape, np.int32), np.zeros((0, 2)), np.zeros((0, 0), np.float32),
                             np.zeros((0, 0), np.int32))
    if image.size == 0 or image.min() == image.max():
        return empty
    x = network_input(model, image, rescale=rescale)
    network = model.network
    likelihood = predict_likelihood(network, x, tiling=tiling.likelihood)
    if seeds is not None:
        seeds = np.asarray(seeds)
        if seeds.shape != image.shape:
            raise CellmixerError(f"seeds: shape {seeds.shape} differs from the image's {image.shape}; give seeds "
                                 "of the same image.")
        regions = relabel_consecutive(_resize_labels(seeds, x.shape) if factor != 1.0 else seeds)
    else:
        regions = centre_regions(likelihood, threshold=s["threshold"], min_area=int(s["min_area"]))
    count = int(regions.max(initial=0))
    if count == 0:
        empty.likelihood, empty.owner = likelihood, np.zeros(x.shape, np.int32)
        return empty
    centres = np.array(ndi.center_of_mass(np.ones_like(regions), regions, np.arange(1, count + 1))).reshape(-1, 2)
    maps = contribution_maps(network, x, regions, window=int(s["window"]), batch_size=tiling.batch_size,
                             precision=tiling.precision, progress=progress)
    if s["map_smoothing"] > 0:
        # Guided backpropagation gives speckled, edge-like maps; their smoothed positive part marks regions.
        maps.maps = ndi.gaussian_filter(np.maximum(maps.maps, 0), (0, s["map_smoothing"], s["map_smoothing"]))
    owner, value = max_projection(maps)
    sal = saliency_map(image, s["saliency"])  # at the image's own size: its settings are in image pixels
    if factor != 1.0:
        sal = rescale_image(sal, factor)
    right, down = smoothness_weights(x, strength=float(s["smoothness"]))

    def cells():
        for u in range(1, count + 1):
            image_sl, window_sl = maps.window_slices(u)
            own = owner[image_sl] == u
            strong = value[image_sl]
            seed = regions[image_sl] == u
            fg = (own & (strong >= s["foreground_threshold"])) | seed
            bg = (owner[image_sl] > 0) & ~own & (strong >= s["background_threshold"])
            bg |= _window_frame(image_sl, x.shape)  # a cell does not reach beyond its window
            if s["support_threshold"] > 0:  # nor where its own map says it did not contribute at all
                raw = maps.maps[u - 1][window_sl]
                bg |= raw < s["support_threshold"] * max(float(raw.max(initial=0.0)), 1e-12)
            mask = graph_cut(fg, bg, sal[image_sl], right[image_sl], down[image_sl],
                             data_weight=float(s["data_weight"]))
            mask = _keep_seeded(mask, seed)
            if s.get("fill_holes", True):
                mask = ndi.binary_fill_holes(mask)
            raw = maps.maps[u - 1][window_sl]
            top = float(raw.max(initial=0.0))
            score = raw / top if top > 0 else raw
            yield image_sl, mask, score, seed

    labels = fuse_cells(x.shape, cells())
    if factor != 1.0:
        labels = _resize_labels(labels, image.shape)
        centres = (centres + 0.5) / factor - 0.5
    return CellSegmentation(labels.astype(np.int32), centres, likelihood, owner)


def _window_frame(image_sl, shape) -> np.ndarray:
    """The outermost pixels of a window, except along the image's own edges (cells may touch those)."""
    ys, xs = image_sl
    frame = np.zeros((ys.stop - ys.start, xs.stop - xs.start), bool)
    if ys.start > 0:
        frame[0] = True
    if ys.stop < shape[0]:
        frame[-1] = True
    if xs.start > 0:
        frame[:, 0] = True
    if xs.stop < shape[1]:
        frame[:, -1] = True
    return frame


def _keep_seeded(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    labels, count = ndi.label(mask)
    if count <= 1:
        return mask
    hit = np.unique(labels[seed])
    hit = hit[hit > 0]
    return np.isin(labels, hit) if len(hit) else mask


def _resize_labels(labels: np.ndarray, shape) -> np.ndarray:
    """Nearest-neighbour resize of a label image to ``shape`` (pixel centres aligned)."""
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]).astype(int), labels.shape[0] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]).astype(int), labels.shape[1] - 1)
    return labels[np.ix_(rows, cols)]
