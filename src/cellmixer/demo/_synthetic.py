"""Procedural phase-contrast-like cultures of distinct cell types, for the demo and the tests.

Real cell types differ in size, shape, texture and how they clump; so do these. Every image is
a homogeneous culture (one type) unless several types are asked for, and comes with exact
instance and class masks, which only evaluation may use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class CellType:
    """How one synthetic cell type looks and grows."""

    name: str
    radius: tuple[float, float]  # mean radius range (pixels)
    aspect: tuple[float, float]  # length / width
    wobble: float  # irregularity of the outline
    texture_scale: float  # correlation length of the cytoplasm texture (pixels)
    texture_amplitude: float
    brightness: float  # mean interior offset from the background (phase shift)
    halo: float  # bright ring just outside the membrane
    nucleus: float  # nucleus contrast (0: no visible nucleus)
    clumping: float  # 0: scattered, 1: grows in tight colonies
    density: tuple[int, int]  # cells per 256 x 256 field


CELL_TYPES = {
    # Small round suspension cells (lymphocyte-like): smooth, bright halo, scattered.
    "roundcell": CellType("roundcell", (6.5, 9.0), (1.0, 1.15), 0.05, 1.5, 0.25, 0.9, 1.6, 0.0, 0.0, (25, 45)),
    # Elongated fibroblast-like cells: spindles with fine granular texture, loosely spread.
    "spindle": CellType("spindle", (9.0, 12.0), (2.8, 4.0), 0.12, 1.0, 0.7, 0.5, 0.6, 0.6, 0.15, (12, 20)),
    # Epithelial-like cells: large, polygonal, in cobblestone colonies, coarse texture, dark nucleus.
    "epithelial": CellType("epithelial", (10.0, 13.0), (1.0, 1.4), 0.1, 3.0, 0.45, 0.35, 0.4, -1.0, 0.9, (14, 24)),
}


def _smooth_noise(rng: np.random.Generator, shape, scale: float) -> np.ndarray:
    noise = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), scale)
    return noise / (noise.std() + 1e-6)


def _outline(rng: np.random.Generator, cell: CellType, radius: float):
    """Random star-shaped outline: radius as a function of angle, elongated and rotated."""
    aspect = rng.uniform(*cell.aspect)
    harmonics = [(k, rng.normal(0, cell.wobble / k), rng.uniform(0, 2 * np.pi)) for k in range(2, 6)]
    angle = rng.uniform(0, np.pi)
    return aspect, harmonics, angle


def _render_cell(canvas_shape, cy: float, cx: float, radius: float, aspect: float, harmonics, angle: float):
    """Signed distance-like field inside the cell's bounding box: > 0 inside, 0 at the membrane."""
    extent = int(np.ceil(radius * np.sqrt(aspect) * 1.6)) + 4
    y0, y1 = max(0, int(cy) - extent), min(canvas_shape[0], int(cy) + extent + 1)
    x0, x1 = max(0, int(cx) - extent), min(canvas_shape[1], int(cx) + extent + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u = (c * dx + s * dy) / np.sqrt(aspect)
    v = (-s * dx + c * dy) * np.sqrt(aspect)
    theta = np.arctan2(v, u)
    r = np.hypot(u, v)
    edge = radius * (1 + sum(a * np.cos(k * theta + p) for k, a, p in harmonics))
    return (slice(y0, y1), slice(x0, x1)), edge - r, r / np.maximum(edge, 1e-3)


def _place_centres(rng, shape, cell: CellType, count: int) -> np.ndarray:
    """Cell centres: scattered uniformly, or grown as colonies around a few seeds."""
    h, w = shape
    n_clumped = int(round(count * cell.clumping))
    points = [rng.uniform([0, 0], [h, w], size=(count - n_clumped, 2))]
    if n_clumped:
        n_colonies = max(1, n_clumped // 8)
        seeds = rng.uniform([0.15 * h, 0.15 * w], [0.85 * h, 0.85 * w], size=(n_colonies, 2))
        spread = np.mean(cell.radius) * 2.0 * np.sqrt(n_clumped / n_colonies) / 2
        members = seeds[rng.integers(n_colonies, size=n_clumped)] + rng.normal(0, spread, size=(n_clumped, 2))
        points.append(members)
    points = np.concatenate(points)
    # Cells push each other apart: drop centres closer than ~1.5 radii to one already kept.
    min_distance = 1.5 * np.mean(cell.radius)
    kept = []
    for p in points:
        if all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 >= min_distance**2 for q in kept):
            kept.append(p)
    return np.array(kept).reshape(-1, 2)


def synthetic_culture(types, *, shape=(256, 256), rng=None, seed: int | None = None):
    """Render one field of view of a culture of the given cell type(s).

    Parameters
    ----------
    types : str or sequence of str
        Names from :data:`CELL_TYPES`; several names make a co-culture.
    shape : (int, int)
    rng : numpy Generator, optional (or ``seed``)

    Returns
    -------
    image : (H, W) uint16 ndarray
        Phase-contrast-like image: uneven illumination, per-well brightness, camera noise.
    instances : (H, W) int32 ndarray
        0 background, 1..N one label per cell (cells overlap as in real cultures: the last
        placed one is on top).
    classes : (H, W) uint8 ndarray
        0 background, k = index + 1 of the cell's type in ``types``.

    Examples
    --------
    >>> image, instances, classes = synthetic_culture("roundcell", seed=0)
    >>> image.dtype, int(instances.max()) > 10, sorted(np.unique(classes).tolist())
    (dtype('uint16'), True, [0, 1])
    """
    if isinstance(types, str):
        types = [types]
    rng = rng if rng is not None else np.random.default_rng(seed)
    h, w = shape
    area_scale = h * w / 256**2
    signal = np.zeros(shape, np.float32)
    instances = np.zeros(shape, np.int32)
    classes = np.zeros(shape, np.uint8)
    label = 0
    cells = []
    for k, name in enumerate(types, start=1):
        cell = CELL_TYPES[name]
        count = int(rng.integers(*cell.density) * area_scale / len(types))
        cells += [(k, cell, c) for c in _place_centres(rng, shape, cell, count)]
    order = rng.permutation(len(cells))
    textures = {name: _smooth_noise(rng, shape, CELL_TYPES[name].texture_scale) for name in set(types)}
    for i in order:
        k, cell, (cy, cx) = cells[i]
        radius = rng.uniform(*cell.radius)
        aspect, harmonics, angle = _outline(rng, cell, radius)
        rendered = _render_cell(shape, cy, cx, radius, aspect, harmonics, angle)
        if rendered is None:
            continue
        box, depth, rel = rendered
        inside = depth > 0
        if not inside.any():
            continue
        label += 1
        # Interior: phase shift, textured cytoplasm, optional nucleus; membrane dark rim; outer halo.
        body = cell.brightness + cell.texture_amplitude * textures[cell.name][box]
        if cell.nucleus:
            body = body + cell.nucleus * np.clip(1 - rel / 0.45, 0, 1) ** 0.5
        rim = -0.8 * np.exp(-(depth / 1.2) ** 2)
        halo = cell.halo * np.exp(-((depth + 1.5) / 1.5) ** 2) * (depth <= 0)
        region = signal[box]
        region[inside] = (body + rim)[inside]
        region[~inside] += halo[~inside] * (instances[box][~inside] == 0)
        instances[box][inside] = label
        classes[box][inside] = k
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    gradient = rng.uniform(0.0, 0.25) * ((np.cos(direction) * (xx / w - 0.5)) + np.sin(direction) * (yy / h - 0.5))
    background = rng.uniform(0.8, 1.2) * (1 + gradient) + 0.015 * _smooth_noise(rng, shape, 40)
    gain = rng.uniform(4000, 9000)
    image = gain * (background + 0.18 * signal) + rng.normal(0, rng.uniform(60, 120), shape)
    return np.clip(image, 0, 65535).astype(np.uint16), instances, classes


def synthetic_nuclear_stain(instances, *, rng=None, seed: int | None = None) -> np.ndarray:
    """A nuclear stain (Hoechst/DAPI-like) of the cells of :func:`synthetic_culture`: one bright oval
    nucleus near the centre of each visible cell, of a third of its radius, on a dim background
    with camera noise.

    Examples
    --------
    >>> image, instances, _ = synthetic_culture("roundcell", seed=0)
    >>> stain = synthetic_nuclear_stain(instances, seed=0)
    >>> stain.shape == image.shape, stain.dtype, bool(stain[instances > 0].mean() > stain[instances == 0].mean())
    (True, dtype('uint16'), True)
    """
    rng = rng if rng is not None else np.random.default_rng(seed)
    instances = np.asarray(instances)
    h, w = instances.shape
    n = int(instances.max(initial=0))
    count = np.bincount(instances.ravel(), minlength=n + 1)
    rows, cols = np.mgrid[0:h, 0:w]
    cy = np.bincount(instances.ravel(), rows.ravel(), n + 1) / np.maximum(count, 1)
    cx = np.bincount(instances.ravel(), cols.ravel(), n + 1) / np.maximum(count, 1)
    signal = np.zeros((h, w), np.float32)
    for k in range(1, n + 1):
        if count[k] < 20:
            continue
        r = max(3.0, 0.35 * np.sqrt(count[k] / np.pi))
        y0, y1 = int(max(cy[k] - 2 * r, 0)), int(min(cy[k] + 2 * r + 1, h))
        x0, x1 = int(max(cx[k] - 2 * r, 0)), int(min(cx[k] + 2 * r + 1, w))
        yy, xx = rows[y0:y1, x0:x1], cols[y0:y1, x0:x1]
        inside = ((yy - cy[k]) / r) ** 2 + ((xx - cx[k]) / (r * rng.uniform(0.8, 1.25))) ** 2 < 1
        signal[y0:y1, x0:x1][inside & (instances[y0:y1, x0:x1] == k)] = rng.uniform(0.6, 1.4)
    signal = ndi.gaussian_filter(signal, 1.0)
    image = 150 + 900 * signal + rng.normal(0, 12, (h, w))
    return np.clip(image, 0, 65535).astype(np.uint16)
