"""Typed instances: each cell of an instance label image takes the cell type with the highest mean
probability over its pixels (weighted towards its nucleus where it has one), and a score that ranks it
for average precision."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..._errors import CellmixerError
from ...io import as_label_image, label_index
from ...ops import median_diameter
from ._nuclei import NuclearRoute


@dataclass
class TypedInstances:
    """Cells of one image with their type and score.

    Attributes
    ----------
    labels : (H, W) int32 ndarray
        0 background, cells 1..n.
    types : (n,) int ndarray
        Type of cell ``k`` at index ``k - 1``, as an index into ``type_names``.
    scores : (n,) float ndarray
        Mean probability of the cell's type over its pixels (see :func:`typed_instances`; weighted
        towards the nucleus in :func:`cells_of_nuclei`): ranks the cells for class-aware average
        precision.
    objectness : (n,) float ndarray
        Mean probability of "cell" (1 - background) over its pixels: ranks them class-agnostically.
    type_probabilities : (n, K) float ndarray
        Mean probability of every type over each cell's pixels (weighted as ``scores``).
    type_names : list of str
    nuclei : (H, W) int32 ndarray or None
        With a nuclear stain: the nucleus of cell ``k`` labelled ``k`` (0 elsewhere).
    """

    labels: np.ndarray
    types: np.ndarray
    scores: np.ndarray
    objectness: np.ndarray
    type_probabilities: np.ndarray
    type_names: list
    nuclei: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.types)

    def type_map(self) -> np.ndarray:
        """(H, W) uint8: 0 background, ``k`` on the cells of type ``type_names[k - 1]``."""
        lut = np.concatenate([[0], self.types + 1]).astype(np.uint8)
        return lut[self.labels]

    def counts(self) -> dict:
        """Number of cells of each type (every type listed, 0 included)."""
        found = np.bincount(self.types, minlength=len(self.type_names))
        return {name: int(found[i]) for i, name in enumerate(self.type_names)}


def typed_instances(probabilities, instances, *, type_names=None, background: bool = True,
                    weights=None) -> TypedInstances:
    """Give each instance the type with the highest mean probability over its pixels.

    Parameters
    ----------
    probabilities : (C, H, W) array
        Per-pixel class probabilities, e.g. a CellMixer model's softmax
        (:meth:`cellmixer.SegmentationModel.predict` with ``probabilities=True``): background
        first, then the K cell types (``background=True``), or the K types only.
    instances : (H, W) array of non-negative integers
        The instance source: 0 background, one label per cell (any numbering; renumbered
        1..n in label order).
    type_names : list of str, optional
        Names of the K types (default ``type 1``, ...).
    background : bool
        Whether plane 0 of ``probabilities`` is the background.
    weights : (H, W) array of positive numbers, optional
        Each pixel's weight in the means over its cell (default: all alike); ``objectness`` stays
        the plain mean.

    Returns
    -------
    TypedInstances

    Notes
    -----
    With ``m_k`` the mean over the cell's pixels of the probability of type ``k``, the cell's
    type is ``argmax_k m_k`` and its **score** is ``max_k m_k``. The probabilities of a pixel
    (background and types) sum to 1, so the score is high only where the pixels are confidently
    cell *and* confidently of that type: an instance lying on background, or straddling two
    types, ranks low. Its ``objectness`` is ``1 - mean p(background)`` (the sum of the ``m_k``),
    the ranking used for class-agnostic AP.

    Examples
    --------
    >>> p = np.zeros((3, 4, 6), np.float32); p[0] = 1                  # background, type a, type b
    >>> p[:, :, :3] = np.array([0.1, 0.7, 0.2])[:, None, None]         # left: mostly type a
    >>> p[:, :, 3:] = np.array([0.2, 0.3, 0.5])[:, None, None]         # right: mostly type b
    >>> cells = np.zeros((4, 6), int); cells[:, :2] = 5; cells[:, 3:] = 9
    >>> t = typed_instances(p, cells, type_names=["a", "b"])
    >>> [t.type_names[k] for k in t.types], t.scores.round(2).tolist(), t.objectness.round(2).tolist()
    (['a', 'b'], [0.7, 0.5], [0.9, 0.8])
    """
    probabilities = np.asarray(probabilities)
    labels = as_label_image(instances, "instances")
    if probabilities.ndim != 3 or probabilities.shape[1:] != labels.shape:
        raise CellmixerError(f"probabilities: shape {probabilities.shape} does not fit the {labels.shape} instance "
                             "labels; give (classes, H, W) probabilities of the same image.")
    start = 1 if background else 0
    k = probabilities.shape[0] - start
    if k < 1:
        raise CellmixerError("probabilities: no cell-type planes; give background plus at least one type.")
    type_names = [f"type {i + 1}" for i in range(k)] if type_names is None else [str(n) for n in type_names]
    if len(type_names) != k:
        raise CellmixerError(f"type_names: {len(type_names)} names for {k} type planes.")
    index, ids = label_index(labels)
    n = len(ids) - 1
    relabelled = index.reshape(labels.shape).astype(np.int32)
    if n == 0:
        return TypedInstances(relabelled, np.zeros(0, int), np.zeros(0), np.zeros(0), np.zeros((0, k)), type_names)
    area = np.bincount(index, minlength=n + 1)[1:].astype(np.float64)
    weight = np.ones(index.shape) if weights is None else np.asarray(weights, np.float64).ravel()
    if weight.shape != index.shape or not (weight > 0).all():
        raise CellmixerError(f"weights: give positive (H, W) weights of the {labels.shape} instance labels.")
    total = np.bincount(index, weight, minlength=n + 1)[1:]
    means = np.stack([np.bincount(index, probabilities[start + c].ravel() * weight, minlength=n + 1)[1:]
                      for c in range(k)], axis=1) / total[:, None]
    types = means.argmax(axis=1)
    scores = means[np.arange(n), types]
    if background:
        objectness = 1 - np.bincount(index, probabilities[0].ravel().astype(np.float64), minlength=n + 1)[1:] / area
    else:
        objectness = np.ones(n)
    return TypedInstances(relabelled, types, scores, np.clip(objectness, 0, 1), means, type_names)


def cells_of_nuclei(probabilities, nuclei, cells, type_names=None, *,
                    falloff: float = NuclearRoute.type_falloff) -> TypedInstances:
    """Typed cells grown from nuclei: :func:`typed_instances` of ``cells``, with each cell's nucleus.

    Each cell is paired with the nucleus it covers most of (a nucleus goes to the cell that covers
    most of it); :attr:`TypedInstances.nuclei` then labels the nucleus of cell ``k`` with ``k``.
    Each pixel of a cell weighs ``exp(-d / (falloff * D))`` in its type means, ``d`` its distance
    from the nearest paired nucleus and ``D`` the median nucleus diameter: the pixels by a nucleus
    are surely its cell's, while the far reaches of a grown body may be a neighbour's of another
    type (docs/benchmarks.md: +0.01 balanced accuracy over whole cells in co-cultures, every
    training seed). ``falloff=0`` weighs the whole body alike.

    Examples
    --------
    >>> p = np.zeros((3, 4, 8), np.float32); p[1, :, :4] = 1; p[2, :, 4:] = 1
    >>> nuclei = np.zeros((4, 8), int); nuclei[1:3, 1] = 4; nuclei[1:3, 6] = 9
    >>> cells = np.where(np.arange(8) < 4, 4, 9)[None].repeat(4, axis=0)
    >>> typed = cells_of_nuclei(p, nuclei, cells, ["a", "b"])
    >>> typed.types.tolist(), np.unique(typed.nuclei).tolist()
    ([0, 1], [0, 1, 2])
    """
    NuclearRoute(type_falloff=falloff)  # its one range
    cells = as_label_image(cells, "cells")
    cell_index, _ = label_index(cells)  # cells 1..n in label order, as typed_instances numbers them
    labels = cell_index.reshape(cells.shape)
    nuclei = as_label_image(nuclei, "nuclei")
    n_cells = int(labels.max(initial=0)) + 1
    index, _ = label_index(nuclei)
    overlap = np.bincount(index * n_cells + cell_index, minlength=(int(index.max()) + 1) * n_cells)
    overlap = overlap.reshape(-1, n_cells)
    overlap[:, 0] = 0
    overlap[0] = 0
    cell_of = overlap.argmax(axis=1)  # the cell covering most of each nucleus (0: none)
    # a cell keeps the nucleus it covers most of
    best = np.zeros(n_cells, int)
    best_area = np.zeros(n_cells, int)
    for k in range(1, len(cell_of)):
        c = cell_of[k]
        if c and overlap[k, c] > best_area[c]:
            best[c], best_area[c] = k, overlap[k, c]
    lut = np.zeros(len(cell_of), np.int32)
    lut[best[1:][best[1:] > 0]] = np.flatnonzero(best[1:] > 0) + 1
    paired = lut[index].reshape(nuclei.shape)
    paired = np.where(labels == paired, paired, 0)
    weights = None
    if falloff and paired.any():
        distance = ndi.distance_transform_edt(paired == 0) / (falloff * median_diameter(paired))
        # capped so that a cell far from every nucleus keeps weights a float can hold
        weights = np.exp(-np.minimum(distance, 30))
    typed = typed_instances(probabilities, labels, type_names=type_names, weights=weights)
    typed.nuclei = paired
    return typed
