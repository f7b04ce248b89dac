"""Cells from per-cell seed maps by graph cuts (PyMaxflow), fused into one label image without overlaps.

Each cell is cut on its own in a window around it (Nishimura et al. 2019, section 4): its own
strong pixels are foreground seeds, the pixels other cells claim strongly are background seeds, a
saliency map of the image gives the data term elsewhere, and a contrast-sensitive smoothness term
puts the boundary where the image changes. The cells' results are then fused: a pixel claimed by
two cells goes to the one whose map is higher there, and each cell keeps the connected part that
holds its centre.
"""

from __future__ import annotations

import maxflow
import numpy as np
from scipy import ndimage as ndi

from .._errors import CellmixerError
from ..io import relabel_consecutive
from ._foreground import ForegroundParams, _threshold_value, gradient_map

SALIENCY_METHODS = ("inverted", "image", "gradient", "none")
_INFINITE = 1e9


def saliency_map(image, method: str = "gradient") -> np.ndarray:
    """How much each pixel looks like a cell, in [0, 1] (the graph cut's data term).

    ``"gradient"``: the package's unsupervised foreground (:func:`cellmixer.ops.extract_foreground`,
    CellMixer's smoothed gradient magnitude) as a soft map: a logistic function of the processed
    gradient, 0.5 at the foreground's automatic (Li) threshold; for phase contrast where cells are
    both brighter and darker than the background, as in the DeepCell images. ``"inverted"``: dark is
    cell (phase contrast with dark cells, the paper's choice); ``"image"``: bright is cell
    (fluorescence); both stretch intensities between the 1st and 99th percentiles. ``"none"``:
    0.5 everywhere (the seeds and the smoothness term decide alone).
    """
    image = np.asarray(image, np.float32)
    if method not in SALIENCY_METHODS:
        raise CellmixerError(f"--saliency {method}: choose one of {', '.join(SALIENCY_METHODS)}.")
    if method == "none" or image.size == 0 or image.min() == image.max():
        return np.full(image.shape, 0.5, np.float32)
    if method == "gradient":
        p = ForegroundParams()
        g = gradient_map(image, sigma_pre=p.sigma_pre, sigma_post=p.sigma_post, erosion_size=p.erosion_size,
                         log_gradient=p.log_gradient)
        spread = max(float(g.std()) / 4, 1e-6)
        return (1 / (1 + np.exp(-(g - _threshold_value(g, "li")) / spread))).astype(np.float32)
    lo, hi = np.percentile(image, [1, 99])
    s = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)
    return 1 - s if method == "inverted" else s


def smoothness_weights(image, *, strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Contrast-sensitive costs of cutting between horizontal and vertical neighbours,
    ``strength * exp(-(I_p - I_q)^2 / (2 <(I_p - I_q)^2>))`` (Boykov & Jolly 2001)."""
    x = np.asarray(image, np.float32)
    dx = np.zeros_like(x)
    dy = np.zeros_like(x)
    dx[:, :-1] = np.diff(x, axis=1) ** 2
    dy[:-1] = np.diff(x, axis=0) ** 2
    mean = float(np.mean(np.concatenate([dx[:, :-1].ravel(), dy[:-1].ravel()]))) if x.size > 1 else 0.0
    beta = 1.0 / (2 * mean) if mean > 0 else 0.0
    return (strength * np.exp(-beta * dx)).astype(np.float32), (strength * np.exp(-beta * dy)).astype(np.float32)


def graph_cut(foreground_seeds, background_seeds, saliency, right_weights, down_weights, *,
              data_weight: float = 1.0) -> np.ndarray:
    """Binary graph cut of one window: the minimum of data + smoothness energy with hard seeds.

    Parameters
    ----------
    foreground_seeds, background_seeds : (h, w) bool arrays
        Pixels fixed to foreground / background (foreground wins where both are set).
    saliency : (h, w) float array in [0, 1]
        Costs ``data_weight * (1 - s)`` for foreground and ``data_weight * s`` for background.
    right_weights, down_weights : (h, w) float arrays
        Cost of separating a pixel from its right / lower neighbour (last column / row unused).

    Returns
    -------
    (h, w) bool ndarray: the foreground.

    Examples
    --------
    >>> fg = np.zeros((5, 8), bool); fg[2, 1] = True
    >>> bg = np.zeros((5, 8), bool); bg[2, 6] = True
    >>> s = np.zeros((5, 8)); s[:, :4] = 1.0                      # the left half looks like a cell
    >>> w = np.full((5, 8), 0.1)
    >>> graph_cut(fg, bg, s, w, w).sum(axis=0).tolist()
    [5, 5, 5, 5, 0, 0, 0, 0]
    """
    fg = np.asarray(foreground_seeds, bool)
    bg = np.asarray(background_seeds, bool) & ~fg
    s = np.asarray(saliency, np.float64)
    graph = maxflow.Graph[float]()
    nodes = graph.add_grid_nodes(fg.shape)
    right = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0]])
    down = np.array([[0, 0, 0], [0, 0, 0], [0, 1, 0]])
    graph.add_grid_edges(nodes, weights=np.asarray(right_weights, np.float64), structure=right, symmetric=True)
    graph.add_grid_edges(nodes, weights=np.asarray(down_weights, np.float64), structure=down, symmetric=True)
    # Capacity to the source is paid when a pixel ends up background, to the sink when foreground.
    source = data_weight * s + np.where(fg, _INFINITE, 0.0)
    sink = data_weight * (1 - s) + np.where(bg, _INFINITE, 0.0)
    graph.add_grid_tedges(nodes, source, sink)
    graph.maxflow()
    return ~graph.get_grid_segments(nodes)


def _component_with(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    labels, count = ndi.label(mask)
    if count <= 1:
        return mask
    hit = np.unique(labels[seed & mask])
    hit = hit[hit > 0]
    if len(hit) == 0:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        hit = [int(sizes.argmax())]
    return np.isin(labels, hit)


def fuse_cells(shape, cells) -> np.ndarray:
    """One label image from per-cell masks in windows; no pixel belongs to two cells.

    Parameters
    ----------
    shape : (H, W)
    cells : iterable of (image slices, mask, score, seed)
        For cell ``k`` (numbered in iteration order from 1): its window's position in the image, its
        mask there, a score per pixel (where two cells claim a pixel the higher score wins) and
        its seed pixels (the part it keeps if it is cut in pieces).

    Returns
    -------
    (H, W) int32 ndarray: 0 background, cells 1..n (cells left with no pixel are dropped and the
    others renumbered in order).
    """
    labels = np.zeros(shape, np.int32)
    best = np.full(shape, -np.inf, np.float32)
    seeds = []
    for k, (image_sl, mask, score, seed) in enumerate(cells, start=1):
        take = mask & (score > best[image_sl])
        labels[image_sl][take] = k
        best[image_sl][take] = score[take]
        seeds.append((image_sl, seed))
    # A cell that lost a band across its middle keeps the part with its seed.
    boxes = ndi.find_objects(labels)
    for k, box in enumerate(boxes, start=1):
        if box is None:
            continue
        own = labels[box] == k
        image_sl, seed = seeds[k - 1]
        seed_full = np.zeros(shape, bool)
        seed_full[image_sl] = seed
        keep = _component_with(own, seed_full[box])
        labels[box][own & ~keep] = 0
    return relabel_consecutive(labels)
