"""Cell bodies grown from their nuclei: each cell keeps its nucleus's label (CellProfiler's secondary objects)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from .._errors import CellmixerError
from ..io import relabel_consecutive
from ._classical import ClassicalSettings, classical_labels
from ._graphcut import fuse_cells, graph_cut, smoothness_weights

CELL_METHODS = ("nuclei", "grow", "graphcut")
# Cells grow at half resolution in images at least this large on their short side.
GROW_FULL_RESOLUTION_BELOW = 512
# A nucleus is brighter than the background by at least this many standard deviations of the camera noise.
NOISE_LEVELS = 6.0


def enhance_speckles(image, size: int) -> np.ndarray:
    """Bright features narrower than ``size`` pixels, on a zero background (white top-hat).

    CellProfiler's EnhanceOrSuppressFeatures (Speckles): the image minus its grey opening by a
    ``size`` x ``size`` square. A nuclear stain keeps its nuclei and loses what is wider than them:
    the glow of stained cytoplasm, uneven illumination.

    Examples
    --------
    >>> image = np.full((30, 30), 5.0); image[:, 15:] += 10; image[10:14, 5:9] += 7
    >>> out = enhance_speckles(image, 9)
    >>> float(out[11, 6]), float(out[11, 25]), float(out.min())
    (7.0, 0.0, 0.0)
    """
    image = np.asarray(image, np.float32)
    size = int(size)
    if size < 3:
        raise CellmixerError(f"speckle size {size}: must be at least 3 pixels (about the largest nucleus diameter).")
    return np.maximum(image - ndi.grey_opening(image, size=(size, size)), 0)


def camera_noise(image) -> float:
    """Standard deviation of an image's pixel noise, from the spread of neighbouring pixels' differences.

    The robust spread (1.4826 x median absolute deviation) of the differences between horizontal
    neighbours, over sqrt(2): objects, their texture and smooth background change few neighbouring
    differences, so this measures the camera, not the scene.

    Parameters
    ----------
    image : (H, W) array

    Returns
    -------
    float
        The noise's standard deviation in the image's units; 0.0 for an image less than 2 pixels wide.

    Examples
    --------
    >>> scene = np.zeros((200, 200)); scene[50:150, 50:150] = 1000
    >>> noisy = scene + np.random.default_rng(0).normal(0, 5, scene.shape)
    >>> round(camera_noise(noisy))
    5
    """
    image = np.asarray(image, np.float64)
    if image.ndim != 2 or image.shape[1] < 2:
        return 0.0
    d = np.diff(image, axis=1)
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2))


def nuclei_of_stain(stain, *, diameter_range=ClassicalSettings.diameter_range,
                    method: str = ClassicalSettings.method) -> np.ndarray:
    """Nuclei of a nuclear-stain image, found without training.

    The stain's features wider than the largest nucleus (the glow of stained cytoplasm, uneven
    illumination) are removed first (:func:`enhance_speckles`) and the square root taken, so that
    one threshold finds both the bright and the dim nuclei of a co-culture (cell types in one well
    differ several-fold in stain brightness); then CellProfiler's IdentifyPrimaryObjects labels the
    nuclei (:func:`classical_labels`), and objects not brighter than the background by 6 standard
    deviations of the camera noise (:func:`camera_noise`) are dropped (an empty field has no nuclei), as are
    objects smaller than the smallest diameter; larger ones (clumps, bright nuclei) are kept.

    Parameters
    ----------
    stain : (H, W) array
    diameter_range : (int, int)
        Typical nucleus diameters in pixels.
    method : str
        Declumping / dividing lines of the classical labeller (see ``CLASSICAL_METHODS``).

    Returns
    -------
    (H, W) int32 ndarray: 0 background, nuclei 1..n.

    Examples
    --------
    >>> yy, xx = np.mgrid[:60, :80]
    >>> stain = 100 + 20.0 * (xx > 40) + 500 * (((yy - 30) ** 2 + (xx - 20) ** 2) < 64)
    >>> int(nuclei_of_stain(stain, diameter_range=(8, 20)).max())
    1
    """
    stain = np.asarray(stain, np.float32)
    if stain.ndim != 2:
        raise CellmixerError(f"nuclear stain: {stain.ndim}-D array of shape {stain.shape}; give one 2-D channel.")
    if stain.size == 0 or stain.min() == stain.max():
        return np.zeros(stain.shape, np.int32)
    size = int(diameter_range[1]) + 1
    enhanced = enhance_speckles(stain, size + (size % 2 == 0))
    labels, _ = classical_labels(np.sqrt(enhanced), method=method, diameter_range=tuple(diameter_range),
                                 discard_size=False)
    # Objects below the smallest diameter are debris; those above the largest are kept: a clump of nuclei, or
    # a bright nucleus that the threshold of a co-culture (pulled down by another type's dim nuclei) made
    # larger, is still one or more cells, and dropping it loses them from the counts.
    areas = np.bincount(labels.ravel())
    small = areas < np.pi * float(diameter_range[0]) ** 2 / 4
    small[0] = False
    labels = relabel_consecutive(np.where(small[labels], 0, labels))
    # An automatic threshold always finds something: keep the objects that stand out of the camera noise
    # (a field without nuclei has none). Not the spread of the enhanced image: that counts the nuclei and
    # their texture, and in a co-culture its bright nuclei put the dim ones under the bar.
    count = int(labels.max(initial=0))
    if count:
        background = enhanced[labels == 0]
        level = float(np.median(background if background.size else enhanced))
        noise = camera_noise(stain)
        mean = np.asarray(ndi.mean(enhanced, labels, np.arange(1, count + 1)))
        keep = np.concatenate([[False], mean > level + NOISE_LEVELS * max(noise, 1e-6 * max(level, 1.0))])
        labels = relabel_consecutive(np.where(keep[labels], labels, 0))
    return labels.astype(np.int32)


def median_diameter(labels) -> float:
    """Median equivalent diameter (pixels) of the objects of a label image (0 without objects)."""
    areas = np.bincount(np.asarray(labels).ravel())[1:]
    areas = areas[areas > 0]
    return float(np.sqrt(4 * np.median(areas) / np.pi)) if len(areas) else 0.0


def _reach(nuclei: np.ndarray, max_distance: float) -> np.ndarray:
    """Pixels within ``max_distance`` of a nucleus."""
    return ndi.distance_transform_edt(nuclei == 0) <= max_distance


def _edges(image) -> np.ndarray:
    """Gradient magnitude of the image at a cell-wall scale, the landscape that cells flood."""
    x = np.asarray(image, np.float32)
    x = (x - x.mean()) / (x.std() or 1.0)
    return ndi.gaussian_gradient_magnitude(x, 1.5)


def cells_from_nuclei(nuclei, foreground, *, method: str = "grow", image=None, max_distance: float | None = None,
                      smoothness: float = 2.0) -> np.ndarray:
    """Grow each nucleus into its cell, inside the foreground; cell ``k`` holds nucleus ``k``.

    Parameters
    ----------
    nuclei : (H, W) integer array
        Nucleus labels, 0 background.
    foreground : (H, W) float or bool array
        How much each pixel is a cell, in [0, 1] (e.g. ``1 - p(background)`` of a cell-type
        model); cells grow where it is at least 0.5.
    method : {'nuclei', 'grow', 'graphcut'}
        ``'nuclei'``: the nuclei themselves. ``'grow'``: a seeded watershed from the nuclei over
        the image's gradient magnitude (CellProfiler's IdentifySecondaryObjects, "Watershed -
        Gradient"), inside the foreground and within ``max_distance`` of a nucleus: touching cells
        meet at the image's edges. ``'graphcut'``: one graph cut per nucleus (as the cell-centre
        route does, Nishimura et al. 2019): the nucleus is its foreground seed, the other nuclei
        and the confident background (foreground below 0.2) its background seeds, ``foreground``
        the data term and the image's contrast the smoothness term; cells are fused without
        overlaps, the nearer nucleus winning a contested pixel.
    image : (H, W) array, optional
        The image whose edges separate touching cells (phase contrast); without it, cells meet
        half-way between nuclei.
    max_distance : float, optional
        How far (pixels) a cell may reach from its nucleus (default: 3 median nucleus diameters).
    smoothness : float
        Graph cut: weight of the contrast-sensitive smoothness term.

    Returns
    -------
    (H, W) int32 ndarray
        Cell labels; a nucleus label absent from ``nuclei`` stays absent, and every cell holds at
        least its nucleus.

    Examples
    --------
    >>> nuclei = np.zeros((20, 40), int); nuclei[8:12, 8:12] = 1; nuclei[8:12, 28:32] = 2
    >>> cells = cells_from_nuclei(nuclei, np.ones((20, 40)), method="grow", max_distance=6)
    >>> sorted(np.unique(cells).tolist()), int((cells == 1).sum()) == int((cells == 2).sum())
    ([0, 1, 2], True)
    """
    nuclei = np.asarray(nuclei)
    if nuclei.ndim != 2:
        raise CellmixerError(f"nuclei: expected a 2-D label image, got shape {nuclei.shape}.")
    if method not in CELL_METHODS:
        raise CellmixerError(f"--cells {method}: choose one of {', '.join(CELL_METHODS)} or a cell model folder.")
    nuclei = nuclei.astype(np.int32, copy=False)
    if method == "nuclei" or not nuclei.any():
        return nuclei.copy()
    foreground = np.asarray(foreground, np.float32)
    if foreground.shape != nuclei.shape:
        raise CellmixerError(f"foreground: shape {foreground.shape} differs from the nuclei's {nuclei.shape}.")
    if max_distance is None:
        max_distance = 3 * median_diameter(nuclei)
    allowed = ((foreground >= 0.5) | (nuclei > 0)) & _reach(nuclei, max_distance)
    if method == "grow":
        landscape = _edges(image) if image is not None else ndi.distance_transform_edt(nuclei == 0)
        return _grow(nuclei, landscape, allowed)
    return _graph_cut_cells(nuclei, foreground, allowed, image, max_distance, smoothness)


def _grow(nuclei: np.ndarray, landscape: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Seeded watershed of ``landscape`` from the nuclei inside ``allowed``; on large images at half
    resolution (cell borders need no finer step, and the flooding is 4x faster), each nucleus kept whole."""
    step = 2 if min(nuclei.shape) >= GROW_FULL_RESOLUTION_BELOW else 1
    if step == 1:
        return watershed(landscape, nuclei, mask=allowed).astype(np.int32)
    markers = nuclei[::step, ::step].copy()
    # a nucleus too small to be sampled still seeds its cell, at its centre
    missing = np.setdiff1d(np.unique(nuclei), np.unique(markers))
    if missing.size:
        centres = ndi.center_of_mass(np.ones_like(nuclei), nuclei, missing)
        for label, (y, x) in zip(missing, np.reshape(centres, (-1, 2))):
            markers[min(int(y) // step, markers.shape[0] - 1), min(int(x) // step, markers.shape[1] - 1)] = label
    small = watershed(landscape[::step, ::step], markers, mask=allowed[::step, ::step] | (markers > 0))
    cells = np.repeat(np.repeat(small, step, axis=0), step, axis=1)[:nuclei.shape[0], :nuclei.shape[1]]
    cells = np.where(allowed, cells, 0)
    cells[nuclei > 0] = nuclei[nuclei > 0]
    return cells.astype(np.int32)


def _graph_cut_cells(nuclei, foreground, allowed, image, max_distance, smoothness) -> np.ndarray:
    contrast = np.asarray(image if image is not None else foreground, np.float32)
    contrast = (contrast - contrast.mean()) / (contrast.std() or 1.0)
    right, down = smoothness_weights(contrast, strength=smoothness)
    distance, (rows, cols) = ndi.distance_transform_edt(nuclei == 0, return_indices=True)
    nearest = nuclei[rows, cols]
    closeness = (1 - distance / (max_distance + 1)).astype(np.float32)
    boxes = ndi.find_objects(nuclei)
    margin = int(np.ceil(max_distance)) + 1
    h, w = nuclei.shape
    ids = [k for k, box in enumerate(boxes, start=1) if box is not None]

    def cells():
        for k in ids:
            ys, xs = boxes[k - 1]
            sl = (slice(max(ys.start - margin, 0), min(ys.stop + margin, h)),
                  slice(max(xs.start - margin, 0), min(xs.stop + margin, w)))
            own = nuclei[sl] == k
            other = (nuclei[sl] > 0) & ~own
            bg = other | ~allowed[sl] | (foreground[sl] < 0.2)
            mask = graph_cut(own, bg, foreground[sl], right[sl], down[sl])
            # the nearer nucleus wins a pixel both cells claim
            score = np.where(nearest[sl] == k, closeness[sl] + 1, closeness[sl])
            yield sl, mask, score, own

    fused = fuse_cells(nuclei.shape, cells())
    # fuse_cells numbers cells 1..n in the order given: give each its nucleus's label back.
    lut = np.zeros(len(ids) + 1, np.int32)
    lut[1:] = ids
    return lut[fused]
