"""Background-normalized mixup of two homogeneous cultures (CellMixer, section 2)."""

from __future__ import annotations

import numpy as np

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
