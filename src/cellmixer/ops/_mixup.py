"""Background-normalized mixup of two homogeneous cultures (CellMixer, section 2)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

# A background needs this many pixels for its statistics to be trusted; below it, all pixels are used.
MIN_BACKGROUND_PIXELS = 64


def background_stats(image: np.ndarray, foreground: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the background pixels (where ``foreground`` is False).

    Falls back to all pixels when fewer than 64 background pixels remain (a fully confluent crop),
    and never returns a standard deviation of 0.
    """
    image = np.asarray(image, dtype=np.float32)
    background = image[~np.asarray(foreground, dtype=bool)]
    if background.size < MIN_BACKGROUND_PIXELS:
        background = image.ravel()
    mean = float(background.mean(dtype=np.float64))
    std = float(background.std(dtype=np.float64))
    if not std > 1e-6 * max(1.0, abs(mean)):
        std = float(image.std(dtype=np.float64)) or 1.0
    return mean, std


def normalize_by_background(image: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """``(image - mean_bg) / std_bg``: background at 0 with unit spread, whatever the foreground share.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.tile(np.float32([10, 12]), (10, 10))
    >>> cells = np.zeros(image.shape, bool); cells[:2, :2] = True
    >>> image[cells] = 100
    >>> normalize_by_background(image, cells)[5, :2]
    array([-1.,  1.], dtype=float32)
    """
    mean, std = background_stats(image, foreground)
    return ((np.asarray(image, dtype=np.float32) - np.float32(mean)) / np.float32(std)).astype(np.float32)


def normalize_nuclear_stain(stain: np.ndarray) -> np.ndarray:
    """``(stain - background) / (nuclei - background)``: the background at 0 and the median nucleus pixel at 1,
    whatever the stain's exposure. Background and nuclei are the two sides of Otsu's threshold (their medians).

    Examples
    --------
    >>> import numpy as np
    >>> stain = np.full((20, 20), 100, np.uint16); stain[5:10, 5:10] = 600; stain[12:15, 12:15] = 900
    >>> out = normalize_nuclear_stain(stain)
    >>> [round(float(out[y, x]), 3) for y, x in ((0, 0), (6, 6), (13, 13))]
    [0.0, 1.0, 1.6]
    >>> bool(np.allclose(normalize_nuclear_stain(stain * 3.0), out))
    True
    """
    stain = np.asarray(stain, dtype=np.float32)
    if stain.size == 0 or stain.min() == stain.max():
        return np.zeros(stain.shape, np.float32)
    threshold = threshold_otsu(stain)
    background = float(np.median(stain[stain <= threshold]))
    level = float(np.median(stain[stain > threshold])) - background
    return ((stain - np.float32(background)) / np.float32(max(level, 1e-6))).astype(np.float32)


def mix_labels(labels1: np.ndarray, labels2: np.ndarray) -> np.ndarray:
    """``M = M2 + (1 - sign(M2)) * M1``: the second image's cells overwrite the first's."""
    labels1 = np.asarray(labels1)
    labels2 = np.asarray(labels2)
    return np.where(labels2 > 0, labels2, labels1).astype(np.result_type(labels1, labels2))


def mix_pair(image1: np.ndarray, labels1: np.ndarray, image2: np.ndarray, labels2: np.ndarray, *,
             lam: float = 0.5, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Blend two homogeneous cultures into an artificial mixture with its label map.

    Parameters
    ----------
    image1, image2 : (H, W) arrays
        Crops of two cultures (typically of different cell types), same shape.
    labels1, labels2 : (H, W) integer arrays
        Their class maps: 0 background, k > 0 the culture's class on its cells.
    lam : float
        Mixing weight: ``I = lam * I1 + (1 - lam) * I2``. The paper uses 0.5.
    normalize : bool
        First normalize each image by the mean and standard deviation of its own background
        pixels (``labels == 0``), so that brightness and contrast match before blending.

    Returns
    -------
    image : (H, W) float32 ndarray
    labels : (H, W) ndarray
        ``M2 + (1 - sign(M2)) * M1`` (see :func:`mix_labels`).

    Examples
    --------
    >>> import numpy as np
    >>> a, b = np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32)
    >>> la, lb = np.array([[1, 1], [0, 0]]), np.array([[0, 2], [0, 2]])
    >>> image, labels = mix_pair(a, la, b, lb, normalize=False)
    >>> labels
    array([[1, 2],
           [0, 2]])
    >>> float(image[0, 0])
    0.5
    """
    image1 = np.asarray(image1, dtype=np.float32)
    image2 = np.asarray(image2, dtype=np.float32)
    if image1.shape != image2.shape or np.shape(labels1) != image1.shape or np.shape(labels2) != image2.shape:
        raise ValueError("mix_pair needs two images and two label maps of one shape")
    if normalize:
        image1 = normalize_by_background(image1, np.asarray(labels1) > 0)
        image2 = normalize_by_background(image2, np.asarray(labels2) > 0)
    mixed = np.float32(lam) * image1 + np.float32(1 - lam) * image2
    return mixed.astype(np.float32, copy=False), mix_labels(labels1, labels2)


def background_field(image: np.ndarray, foreground: np.ndarray, *, sigma: float = 64.0) -> np.ndarray:
    """The image's background level at every pixel: a smooth surface through its background pixels.

    At each pixel, a plane fitted to the background pixels around it by least squares weighted by a
    Gaussian of ``sigma`` pixels (a first-order normalized convolution: exact for a linear fall-off of
    the light, at the image's edges too), on a block-averaged copy for speed; where a region holds too
    few background pixels (a confluent patch), the Gaussian widens until it reaches some.

    Examples
    --------
    >>> image = np.tile(np.linspace(100, 200, 64, dtype=np.float32), (64, 1))   # light from the right
    >>> cells = np.zeros(image.shape, bool); cells[20:40, 20:40] = True; image[cells] += 500
    >>> field = background_field(image, cells, sigma=8)
    >>> bool(abs(field[30, 30] - 147) < 2), bool(abs(field[10, 63] - 200) < 2)
    (True, True)
    """
    image = np.asarray(image, np.float32)
    background = ~np.asarray(foreground, bool)
    if background.sum() < MIN_BACKGROUND_PIXELS:
        background = np.ones(image.shape, bool)
    f = max(1, int(sigma // 8))
    h, w = image.shape
    ph, pw = -h % f, -w % f
    padded = np.pad(image * background, ((0, ph), (0, pw)), mode="constant").astype(np.float64)
    weight = np.pad(background.astype(np.float64), ((0, ph), (0, pw)), mode="constant")
    total = padded.reshape(padded.shape[0] // f, f, -1, f).sum(axis=(1, 3))
    count = weight.reshape(weight.shape[0] // f, f, -1, f).sum(axis=(1, 3))
    means = total[count > 0] / count[count > 0]
    low, high = float(means.min()), float(means.max())
    level = np.zeros(total.shape, np.float64)
    missing = np.ones(total.shape, bool)
    spread = sigma / f
    for _ in range(6):  # widen where the background is too scarce
        level, fitted = _local_plane(total, count, spread, level, missing, f)
        missing &= ~fitted
        if not missing.any():
            break
        spread *= 2
    if missing.any():
        level[missing] = float(image[background].mean())
    level = np.clip(level, low, high)  # a plane does not extrapolate beyond the background it saw
    zoomed = ndi.zoom(level, f, order=1, grid_mode=True, mode="nearest")[:h, :w]
    return np.maximum(zoomed, 1e-6 * max(float(np.abs(image).max()), 1.0)).astype(np.float32)


def _local_plane(total, count, spread, level, missing, f):
    """Weighted least-squares plane ``a + b y + c x`` through the block sums around each block
    (Gaussian weights, zero outside the image), evaluated there; the mean where a plane is not
    determined. Returns the updated level and where it was fitted."""
    yy, xx = np.meshgrid((np.arange(total.shape[0]) - total.shape[0] / 2) / spread,
                         (np.arange(total.shape[1]) - total.shape[1] / 2) / spread, indexing="ij")

    def smooth(a):
        return ndi.gaussian_filter(a, spread, mode="constant", cval=0.0)

    s0, sy, sx = smooth(count), smooth(count * yy), smooth(count * xx)
    syy, sxy, sxx = smooth(count * yy * yy), smooth(count * xx * yy), smooth(count * xx * xx)
    t0, ty, tx = smooth(total), smooth(total * yy), smooth(total * xx)
    fitted = missing & (s0 > 0.05 * f * f)
    # moments about each block's own position, so that the plane's value there is its intercept
    my, mx = sy - yy * s0, sx - xx * s0
    cyy = syy - 2 * yy * sy + yy * yy * s0
    cxx = sxx - 2 * xx * sx + xx * xx * s0
    cxy = sxy - yy * sx - xx * sy + xx * yy * s0
    uy, ux = ty - yy * t0, tx - xx * t0
    matrix = np.stack([np.stack([s0, my, mx], -1), np.stack([my, cyy, cxy], -1), np.stack([mx, cxy, cxx], -1)], -2)
    rhs = np.stack([t0, uy, ux], -1)
    det = np.linalg.det(matrix)
    solvable = fitted & (np.abs(det) > 1e-6 * np.maximum(s0, 1e-12) ** 3)
    level = level.copy()
    if solvable.any():
        level[solvable] = np.linalg.solve(matrix[solvable], rhs[solvable][..., None])[..., 0, 0]
    flat = fitted & ~solvable
    level[flat] = t0[flat] / s0[flat]
    return level, fitted


def normalize_by_flat_field(image: np.ndarray, foreground: np.ndarray, *, sigma: float = 64.0) -> np.ndarray:
    """The image divided by its background level (:func:`background_field`), then centred and scaled by
    its background's mean and spread: uneven illumination, vignetting and any exposure (a gain) cancel.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> image = (1000 + rng.normal(0, 10, (64, 64))).astype(np.float32)
    >>> cells = np.zeros(image.shape, bool); cells[20:30, 20:30] = True; image[cells] += 300
    >>> a = normalize_by_flat_field(image, cells); b = normalize_by_flat_field(0.3 * image, cells)
    >>> bool(np.allclose(a, b, atol=1e-4)), round(float(a[~cells].std()), 1)
    (True, 1.0)
    """
    image = np.asarray(image, np.float32)
    ratio = image / background_field(image, foreground, sigma=sigma) - np.float32(1)
    return normalize_by_background(ratio, foreground)
