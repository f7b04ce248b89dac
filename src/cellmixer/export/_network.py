"""A model as other software runs it: raw image in, class probabilities out, in torch alone.

:class:`ExportedNetwork` wraps a trained network with what :meth:`cellmixer.SegmentationModel.predict`
does around it: CellMixer's background normalization (the unsupervised foreground of
:func:`cellmixer.ops.extract_foreground`, then the mean and standard deviation of the background),
the model's input scale, and one softmax per output head. It imports nothing but torch and is
TorchScript-compatible, so that its source, with the network's, runs without cellmixer (the
architecture file of a bioimage.io package) and compiles to TorchScript. Every step follows the
numpy/scipy/scikit-image code it stands for (same windows, edges, thresholds and rounding), in
float64; ``tests/test_export.py`` checks that both give the same probabilities.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..models import TypedUNet, UNet

# The architectures whose source an exported package carries (models/_registry.py names them).
NETWORKS = {"unet": UNet, "typed_unet": TypedUNet}

# As cellmixer.engine's normalization and cellmixer.ops.background_stats.
MAX_STATS_PIXELS = 16_000_000
MIN_BACKGROUND_PIXELS = 64
THRESHOLDS = ("li", "otsu", "triangle", "local", "value")


def _round_half_even(x: float) -> int:
    """Python's ``round``: halves go to the even neighbour."""
    low = math.floor(x)
    rest = x - low
    if rest > 0.5 or (rest == 0.5 and low % 2 == 1):
        return int(low) + 1
    return int(low)


def _edge_index(n: int, pad: int, mirror: bool) -> torch.Tensor:
    """Indices that extend ``n`` samples by ``pad`` on both sides, as scipy.ndimage's modes:
    ``reflect`` (``d c b a | a b c d``) or ``mirror`` (``d c b | a b c d``), repeated as often as needed."""
    index = torch.arange(-pad, n + pad)
    if n == 1:
        return torch.zeros_like(index)
    if mirror:
        period = 2 * n - 2
        index = torch.remainder(index, period)
        return torch.where(index >= n, period - index, index)
    period = 2 * n
    index = torch.remainder(index, period)
    return torch.where(index >= n, period - 1 - index, index)


def _gaussian_kernel(sigma: float, truncate: float) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 / (sigma * sigma) * x * x)
    return weights / weights.sum()


def _filter_axis(image: torch.Tensor, kernel: torch.Tensor, axis: int, mirror: bool) -> torch.Tensor:
    """Correlate a 2-D image with a 1-D kernel along ``axis``, edges extended as scipy does."""
    radius = (kernel.numel() - 1) // 2
    index = _edge_index(image.shape[axis], radius, mirror)
    padded = torch.index_select(image, axis, index)
    if axis == 0:
        return F.conv2d(padded[None, None], kernel.view(1, 1, -1, 1))[0, 0]
    return F.conv2d(padded[None, None], kernel.view(1, 1, 1, -1))[0, 0]


def gaussian_filter(image: torch.Tensor, sigma: float, truncate: float = 4.0, mirror: bool = False) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter of a 2-D image (mode ``reflect``, or ``mirror``)."""
    if sigma <= 0:
        return image
    kernel = _gaussian_kernel(sigma, truncate).to(image.dtype)
    return _filter_axis(_filter_axis(image, kernel, 0, mirror), kernel, 1, mirror)


def _sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    p = torch.index_select(x, 0, _edge_index(x.shape[0], 1, False))
    p = torch.index_select(p, 1, _edge_index(x.shape[1], 1, False))
    smooth_y = p[:-2] + 2 * p[1:-1] + p[2:]
    sx = smooth_y[:, 2:] - smooth_y[:, :-2]
    smooth_x = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]
    sy = smooth_x[2:] - smooth_x[:-2]
    return torch.sqrt(sx * sx + sy * sy)


def _minimum_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Minimum over a ``size`` x ``size`` square (odd ``size``), edges replicated."""
    half = size // 2
    padded = F.pad(x[None, None], [half, half, half, half], mode="replicate")
    return -F.max_pool2d(-padded, size, stride=1)[0, 0]


def _subsample(x: torch.Tensor, pixels: int) -> torch.Tensor:
    step = max(1, int(math.sqrt(x.numel() / pixels)))
    return x[::step, ::step]


def _histogram(values: torch.Tensor, bins: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Counts and bin centres of ``bins`` equal bins from the minimum to the maximum (numpy's histogram:
    edges and centres in the values' precision, float32 or float64)."""
    low, high = float(values.min()), float(values.max())
    edges = torch.linspace(low, high, bins + 1, dtype=torch.float64).to(values.dtype)
    index = torch.clamp(torch.bucketize(values.flatten(), edges, right=True) - 1, 0, bins - 1)
    counts = torch.bincount(index, minlength=bins).to(torch.float64)
    return counts, ((edges[:-1] + edges[1:]) / 2).to(torch.float64)


def threshold_otsu(values: torch.Tensor) -> float:
    """skimage.filters.threshold_otsu (256 bins)."""
    if bool((values == values.flatten()[0]).all()):
        return float(values.flatten()[0])
    counts, centres = _histogram(values, 256)
    weight1 = torch.cumsum(counts, 0)
    weight2 = torch.flip(torch.cumsum(torch.flip(counts, [0]), 0), [0])
    mean1 = torch.cumsum(counts * centres, 0) / weight1
    mean2 = torch.flip(torch.cumsum(torch.flip(counts * centres, [0]), 0) / torch.flip(weight2, [0]), [0])
    variance = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    return float(centres[int(torch.argmax(variance))])


def threshold_li(values: torch.Tensor, initial_guess: float) -> float:
    """skimage.filters.threshold_li of a float image, iterated from ``initial_guess``."""
    values = values.flatten()
    if bool((values == values[0]).all()):
        return float(values[0])
    low = float(values.min())
    values = values - low
    tolerance = float(torch.diff(torch.unique(values)).min()) / 2
    t_next = initial_guess - low
    t_curr = -2 * tolerance
    rounds = 0
    while abs(t_next - t_curr) > tolerance and rounds < 10_000:  # float64 may cycle below the tolerance
        rounds += 1
        t_curr = t_next
        foreground = values > t_curr
        mean_fore = float(values[foreground].mean())
        mean_back = float(values[~foreground].mean())
        if mean_back == 0.0:
            break
        t_next = (mean_back - mean_fore) / (math.log(mean_back) - math.log(mean_fore))
    return t_next + low


def threshold_triangle(values: torch.Tensor) -> float:
    """skimage.filters.threshold_triangle (256 bins)."""
    counts, centres = _histogram(values, 256)
    bins = counts.numel()
    peak = int(torch.argmax(counts))
    peak_height = float(counts[peak])
    filled = torch.nonzero(counts > 0).flatten()
    first, last = int(filled[0]), int(filled[-1])
    if first == last:
        return float(values.flatten()[0])
    flip = peak - first < last - peak
    if flip:
        counts = torch.flip(counts, [0])
        first = bins - last - 1
        peak = bins - peak - 1
    width = peak - first
    x1 = torch.arange(width)
    y1 = counts[x1 + first]
    norm = math.sqrt(peak_height ** 2 + width ** 2)
    length = peak_height / norm * x1.to(torch.float64) - width / norm * y1
    level = int(torch.argmax(length)) + first
    if flip:
        level = bins - level - 1
    return float(centres[level])


def component_areas(mask: torch.Tensor) -> torch.Tensor:
    """The area of the 4-connected component (scipy.ndimage.label's default) of every pixel of ``mask``; 0 off it.

    Labels are pixel numbers that only grow: each round every component's root takes the largest
    label next to any of its pixels (hooking), then every pixel follows its root (pointer jumping),
    so that a component of any shape takes a few rounds, not as many as its length.
    """
    h, w = mask.shape
    flat_mask = mask.flatten()
    numbers = torch.arange(1, h * w + 1, dtype=torch.int64)
    parent = torch.where(flat_mask, numbers, torch.zeros_like(numbers))
    on = torch.nonzero(flat_mask).flatten()
    while True:
        labels = parent.clone()
        padded = F.pad(labels.view(h, w), [1, 1, 1, 1])
        neighbours = torch.maximum(torch.maximum(padded[:-2, 1:-1], padded[2:, 1:-1]),
                                   torch.maximum(padded[1:-1, :-2], padded[1:-1, 2:])).flatten()
        parent = parent.scatter_reduce(0, labels[on] - 1, neighbours[on], reduce="amax")
        while True:
            jumped = torch.where(flat_mask, parent[torch.clamp(parent - 1, min=0)], parent)
            if bool(torch.equal(jumped, parent)):
                break
            parent = jumped
        if bool(torch.equal(parent, labels)):
            break
    areas = torch.bincount(parent, minlength=h * w + 1)
    areas[0] = 0
    return areas[parent].view(h, w)


def _remove_small_components(mask: torch.Tensor, min_area: int) -> torch.Tensor:
    if min_area <= 1 or not bool(mask.any()):
        return mask
    return component_areas(mask) >= min_area


def _median(values: torch.Tensor) -> float:
    """numpy's median of float32 values: the middle one, or the mean of the two middle ones in float32."""
    ordered = torch.sort(values.flatten()).values
    n = ordered.numel()
    if n % 2 == 1:
        return float(ordered[n // 2])
    return float((ordered[n // 2 - 1:n // 2 + 1].sum() / 2).to(torch.float32))


def normalize_nuclear_stain(stain: torch.Tensor) -> torch.Tensor:
    """cellmixer.ops.normalize_nuclear_stain: the background at 0, the median nucleus pixel at 1 (the two sides
    of Otsu's threshold)."""
    stain = stain.to(torch.float32)
    if stain.numel() == 0 or bool(stain.min() == stain.max()):
        return torch.zeros_like(stain)
    threshold = threshold_otsu(stain)
    background = _median(stain[stain <= threshold])
    level = _median(stain[stain > threshold]) - background
    return (stain - background) / max(level, 1e-6)


class BackgroundStatistics(nn.Module):
    """Mean and standard deviation of an image's background: CellMixer's normalization in torch.

    The foreground is :func:`cellmixer.ops.extract_foreground` with the model's settings (keyword
    arguments as :class:`cellmixer.ops.ForegroundParams`); images over 16 megapixels are measured on a
    block-averaged copy, as the package does.
    """

    def __init__(self, sigma_pre: float = 1.5, sigma_post: float = 2.0, erosion_size: int = 9,
                 threshold: str = "li", log_gradient: bool = True, block_size: int = 151,
                 threshold_offset: float = 0.0, min_object_area: int = 100, max_hole_area: int = 1000):
        super().__init__()
        self.sigma_pre = float(sigma_pre)
        self.sigma_post = float(sigma_post)
        self.erosion_size = int(erosion_size)
        self.threshold_method = str(threshold) if isinstance(threshold, str) else "value"
        self.threshold_value = 0.0 if isinstance(threshold, str) else float(threshold)
        if self.threshold_method not in THRESHOLDS:
            raise ValueError(f"unknown threshold {threshold!r}")
        self.log_gradient = bool(log_gradient)
        self.block_size = int(block_size)
        self.threshold_offset = float(threshold_offset)
        self.min_object_area = int(min_object_area)
        self.max_hole_area = int(max_hole_area)
        self.max_stats_pixels = MAX_STATS_PIXELS
        self.min_background_pixels = MIN_BACKGROUND_PIXELS

    def foreground(self, image: torch.Tensor, f: int) -> torch.Tensor:
        """The unsupervised foreground of ``image`` with the settings divided by ``f`` (a block-averaged copy)."""
        if bool((image == image.flatten()[0]).all()):
            return torch.zeros(image.shape, dtype=torch.bool)
        unit = _subsample(image, 250_000)
        lo = float(torch.quantile(unit.flatten(), 0.01))
        hi = float(torch.quantile(unit.flatten(), 0.99))
        if hi <= lo:
            hi = lo + 1.0
        x = (image - lo) * (1.0 / (hi - lo))
        x = gaussian_filter(x, self.sigma_pre / f, 3.0)
        g = _sobel_magnitude(x)
        g = gaussian_filter(g, self.sigma_post / f, 3.0)
        erosion = self.erosion_size if f == 1 else max(1, _round_half_even(self.erosion_size / f))
        if erosion > 1:
            g = _minimum_filter(g, erosion | 1)
        if self.log_gradient:
            g = torch.log(g + 1e-3)
        method = self.threshold_method
        if method == "local":
            block = (self.block_size if f == 1 else max(3, _round_half_even(self.block_size / f))) | 1
            mask = g > gaussian_filter(g, (block - 1) / 6.0, 4.0) - self.threshold_offset
        else:
            if method == "value":
                threshold = self.threshold_value
            else:
                sample = _subsample(g, 250_000)
                if method == "li":
                    threshold = threshold_li(sample, threshold_otsu(sample))
                elif method == "otsu":
                    threshold = threshold_otsu(sample)
                else:
                    threshold = threshold_triangle(sample)
            mask = g > threshold - self.threshold_offset
        max_hole = self.max_hole_area if f == 1 else _round_half_even(self.max_hole_area / (f * f))
        if max_hole > 0:
            mask = ~_remove_small_components(~mask, max_hole + 1)
        min_area = self.min_object_area if f == 1 else _round_half_even(self.min_object_area / (f * f))
        return _remove_small_components(mask, min_area)

    def forward(self, image: torch.Tensor) -> Tuple[float, float]:
        """``(offset, scale)`` of a 2-D image: ``(image - offset) / scale`` is the network input."""
        image = image.to(torch.float32).to(torch.float64)
        if image.numel() > self.max_stats_pixels:
            f = int(math.ceil(math.sqrt(image.numel() / self.max_stats_pixels)))
            h, w = (image.shape[0] // f) * f, (image.shape[1] // f) * f
            small = image[:h, :w].reshape(h // f, f, w // f, f).mean(dim=(1, 3)).to(torch.float32).to(torch.float64)
            mask = self.foreground(small, f)
            sample = image[:h:f, :w:f]
        else:
            mask = self.foreground(image, 1)
            sample = image
        background = sample[~mask]
        if background.numel() < self.min_background_pixels:
            background = sample.flatten()
        mean = float(background.mean())
        std = float(background.std(unbiased=False))
        if not std > 1e-6 * max(1.0, abs(mean)):
            std = float(sample.std(unbiased=False))
            if std == 0.0:
                std = 1.0
        return mean, std


def _linear_weights(n_out: int, n_in: int, mirror: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weights of linear interpolation with pixel centres aligned; outside the
    input, ``mirror`` reflects (scipy.ndimage.zoom's ``grid_mode``) instead of repeating the edge."""
    src = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    if not mirror:
        src = torch.clamp(src, 0.0, float(n_in - 1))
    i0 = torch.floor(src)
    weight = src - i0
    i0 = i0.to(torch.int64)
    if mirror:
        index = _edge_index(n_in, n_in + 1, True)
        return index[i0 + n_in + 1], index[i0 + n_in + 2], weight
    return i0, torch.clamp(i0 + 1, max=n_in - 1), weight


def resize_linear(x: torch.Tensor, height: int, width: int, mirror: bool) -> torch.Tensor:
    """Resize the last two axes of ``x`` (float64) linearly to ``(height, width)``."""
    y0, y1, wy = _linear_weights(height, x.shape[-2], mirror)
    x0, x1, wx = _linear_weights(width, x.shape[-1], mirror)
    rows = x.index_select(-2, y0) * (1 - wy)[:, None] + x.index_select(-2, y1) * wy[:, None]
    return rows.index_select(-1, x0) * (1 - wx) + rows.index_select(-1, x1) * wx


def rescale_image(image: torch.Tensor, factor: float) -> torch.Tensor:
    """cellmixer.ops.rescale_image: anti-aliased (when shrinking) linear resize by ``factor``."""
    height = max(1, _round_half_even(image.shape[0] * factor))
    width = max(1, _round_half_even(image.shape[1] * factor))
    x = image.to(torch.float64)
    if factor < 1:
        sigma_y = max(0.0, (image.shape[0] / height - 1) / 2)
        sigma_x = max(0.0, (image.shape[1] / width - 1) / 2)
        if sigma_y > 0:
            x = _filter_axis(x, _gaussian_kernel(sigma_y, 4.0), 0, True)
        if sigma_x > 0:
            x = _filter_axis(x, _gaussian_kernel(sigma_x, 4.0), 1, True)
    return resize_linear(x, height, width, True).to(torch.float32)


class ExportedNetwork(nn.Module):
    """A cellmixer network with its input normalization, input scale and output activation built in.

    Input: a raw image, ``(batch, 1, height, width)``, any numeric type and range; for a model that
    reads the nuclear stain, the image and its stain, ``(batch, 2, height, width)`` (the stain
    normalized by its own nuclei, as :func:`cellmixer.ops.normalize_nuclear_stain`). Output: the
    model's class probabilities (one softmax per head; a one-channel network's raw map) at the
    image's size, ``(batch, channels, height, width)`` float32.

    Parameters
    ----------
    architecture : dict
        The model's ``config["architecture"]``: ``name`` (a key of :data:`NETWORKS`) and its options.
    background : dict or None
        Settings of CellMixer's background normalization (``config["normalization"]["foreground"]``);
        None: the input arrives normalized (a standard bioimage.io preprocessing did it).
    input_scale : float
        Resize factor before the network (``config["input_scale"]``).
    nuclear_input : bool
        The second input channel is the nuclear stain (``config["nuclear_input"]``).
    """

    def __init__(self, architecture: dict, background: dict | None = None, input_scale: float = 1.0,
                 nuclear_input: bool = False):
        super().__init__()
        self.nuclear_input = bool(nuclear_input)
        options = {k: v for k, v in architecture.items() if k != "name"}
        self.network = NETWORKS[architecture["name"]](**options)
        self.normalize = background is not None
        self.statistics = BackgroundStatistics(**(background or {}))
        self.input_scale = float(input_scale)
        groups = getattr(self.network, "output_groups", None)
        self.groups: List[int] = [int(g) for g in groups] if groups is not None else [int(options["num_classes"])]

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] == 1:
            return logits.float()
        heads = torch.split(logits, self.groups, dim=1)
        return torch.cat([torch.softmax(head.float(), dim=1) for head in heads], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs: List[torch.Tensor] = []
        for b in range(x.shape[0]):
            image = x[b, 0].to(torch.float32)
            height, width = image.shape[0], image.shape[1]
            if self.normalize:
                offset, scale = self.statistics(image)
                image = (image - offset) / scale
            channels = [image]
            if self.nuclear_input:
                channels.append(normalize_nuclear_stain(x[b, 1]))
            if self.input_scale != 1.0:
                channels = [rescale_image(channel, self.input_scale) for channel in channels]
            probabilities = self.activation(self.network(torch.stack(channels)[None]))
            if self.input_scale != 1.0:
                probabilities = resize_linear(probabilities.to(torch.float64), height, width, False).to(torch.float32)
            outputs.append(probabilities)
        return torch.cat(outputs, dim=0)
