"""Guided backpropagation from each detected cell (Nishimura et al. 2019, eq. 1-5), many cells per pass.

The signal of cell ``u`` starts as the network output ``y`` inside the cell's centre region ``S_u``
and 0 elsewhere (eq. 1). It goes back through the network as the gradient does, except at every
ReLU, where it passes only where both the forward activation and the arriving signal are positive
(eq. 2-3). What arrives at the input is the cell's contribution map ``g^0(u)``; the maximum
projection keeps, at every pixel, only the map of the cell that contributes most there (eq. 4-5).

The ReLU rule is added by forward hooks that exist only inside :func:`guided_relus` (training is
not touched), and each cell is computed in a window around it: windows of many cells form one
batch, and since samples of a batch do not interact in an eval-mode network, one backward pass
gives every cell of the batch its own map.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

from ..._errors import CellmixerError
from ..._progress import progress_bar
from ...engine import autocast, module_device, resolve_precision, to_device


class _GuidedGate(torch.autograd.Function):
    """Identity forward; backward lets the signal through where the activation and the signal are both > 0."""

    @staticmethod
    def forward(ctx, activation):
        ctx.save_for_backward(activation > 0)
        return activation.clone()

    @staticmethod
    def backward(ctx, signal):
        (active,) = ctx.saved_tensors
        return signal * (active & (signal > 0)).to(signal.dtype)


def guided_relu_gate(activation: torch.Tensor) -> torch.Tensor:
    """Mark a ReLU output for guided backpropagation (the value is unchanged).

    >>> a = torch.tensor([-1.0, 0.0, 2.0, 3.0], requires_grad=True)
    >>> out = guided_relu_gate(torch.relu(a))
    >>> out.backward(torch.tensor([5.0, 5.0, 5.0, -5.0]))
    >>> a.grad.tolist()
    [0.0, 0.0, 5.0, -0.0]
    """
    return _GuidedGate.apply(activation)


@contextlib.contextmanager
def guided_relus(network: nn.Module):
    """Inside this context ``network`` (in eval mode) backpropagates by the guided rule at each ReLU.

    Forward hooks on the ``nn.ReLU`` modules wrap their outputs with :func:`guided_relu_gate`; on
    exit the hooks are removed and the network's train/eval mode is restored, so training and
    ordinary gradients are unaffected.
    """
    relus = [m for m in network.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise CellmixerError("guided backpropagation needs a network with nn.ReLU modules (e.g. the U-Net).")
    was_training = network.training
    network.eval()
    handles = [m.register_forward_hook(lambda module, inputs, output: guided_relu_gate(output)) for m in relus]
    try:
        yield network
    finally:
        for handle in handles:
            handle.remove()
        network.train(was_training)


@dataclass
class ContributionMaps:
    """The contribution map of each cell, in a window around it.

    Attributes
    ----------
    maps : (N, w, w) float32 ndarray
        ``g^0(u)`` of cell ``u = 1..N`` (row ``u - 1``) in its window; 0 where the window leaves the image.
    origins : (N, 2) int ndarray
        Image row and column of each window's top-left corner (may be negative near the edges).
    shape : (H, W)
        The image's shape.
    """

    maps: np.ndarray
    origins: np.ndarray
    shape: tuple

    def __len__(self) -> int:
        return len(self.maps)

    def window_slices(self, u: int):
        """``(image slices, window slices)`` of cell ``u`` (1-based), clipped to the image."""
        y0, x0 = (int(v) for v in self.origins[u - 1])
        w = self.maps.shape[1]
        h, wd = self.shape
        ys, xs = max(0, y0), max(0, x0)
        ye, xe = min(h, y0 + w), min(wd, x0 + w)
        return (slice(ys, ye), slice(xs, xe)), (slice(ys - y0, ye - y0), slice(xs - x0, xe - x0))

    def full(self, u: int) -> np.ndarray:
        """The map of cell ``u`` on the whole image (0 outside its window)."""
        out = np.zeros(self.shape, np.float32)
        image_sl, window_sl = self.window_slices(u)
        out[image_sl] = self.maps[u - 1][window_sl]
        return out


def _window_origins(regions: np.ndarray, count: int, window: int, multiple: int) -> np.ndarray:
    """Top-left corners of windows centred on each region, on the network's pooling grid, inside the
    image where it is large enough."""
    h, w = regions.shape
    centres = np.array(ndi.center_of_mass(np.ones_like(regions), regions, np.arange(1, count + 1))).reshape(-1, 2)
    origins = np.round(centres - window / 2).astype(int)
    for axis, n in enumerate((h, w)):
        origins[:, axis] = np.clip(origins[:, axis], min(0, n - window), max(0, n - window))
    return origins // multiple * multiple if multiple > 1 else origins


def _windows(image: np.ndarray, origins: np.ndarray, window: int) -> np.ndarray:
    """Crops of ``image`` at ``origins``; parts outside the image are mirrored."""
    h, w = image.shape
    pad = window
    padded = np.pad(image, pad, mode="reflect" if min(h, w) > pad else "symmetric")
    return np.stack([padded[y + pad:y + pad + window, x + pad:x + pad + window] for y, x in origins])


def contribution_maps(network: nn.Module, image: np.ndarray, regions: np.ndarray, *, window: int = 96,
                      batch_size: int = 32, precision: str = "fp32", progress: bool = False) -> ContributionMaps:
    """Guided backpropagation from each cell centre region, batched over cells.

    Parameters
    ----------
    network : torch.nn.Module
        The detector (one output channel: the likelihood ``y``); it is put in eval mode.
    image : (H, W) float array
        The network input (already normalized and scaled).
    regions : (H, W) integer array
        Cell centre regions ``S_u`` labelled ``1..N`` (0 elsewhere).
    window : int
        Side of the square window around each cell in which its map is computed (rounded up to the
        network's pooling multiple); cells larger than the window are cut off.
    batch_size : int
        Windows per forward/backward pass.
    precision : {'fp32', 'auto', 'bf16'}
        Network arithmetic of the passes (``'auto'``: bfloat16 where the CPU supports it natively;
        on our CPU it was not faster for this backward pass, and the maps differ by several %).

    Returns
    -------
    ContributionMaps
        ``g^0(u)`` for ``u = 1..N``.
    """
    device = module_device(network)
    precision = resolve_precision(precision, device)

    image = np.asarray(image, np.float32)
    regions = np.asarray(regions)
    if image.shape != regions.shape or image.ndim != 2:
        raise CellmixerError(f"regions: shape {regions.shape} differs from the image's {image.shape}.")
    count = int(regions.max(initial=0))
    multiple = getattr(network, "size_multiple", 1)
    window = -(-int(window) // multiple) * multiple
    if window < multiple or window < 8:
        raise CellmixerError(f"--window {window}: must be at least {max(8, multiple)} pixels.")
    if count == 0:
        return ContributionMaps(np.zeros((0, window, window), np.float32), np.zeros((0, 2), int), image.shape)
    origins = _window_origins(regions, count, window, multiple)
    maps = np.empty((count, window, window), np.float32)
    ids = np.arange(1, count + 1)
    with guided_relus(network):
        for start in progress_bar(range(0, count, batch_size), desc="guided backprop", unit="batch",
                                  enabled=progress):
            batch = slice(start, start + batch_size)
            x = to_device(_windows(image, origins[batch], window)[:, None], device).requires_grad_(True)
            own = to_device(_windows(regions, origins[batch], window) == ids[batch, None, None], device)
            with autocast(precision, device):
                y = network(x.contiguous(memory_format=torch.channels_last))[:, 0]
            (g,) = torch.autograd.grad(y, x, grad_outputs=torch.where(own, y.detach(), 0.0))
            maps[batch] = g[:, 0].float().cpu().numpy()
    # Parts of windows outside the image are mirrored context, not pixels a cell can own.
    h, w = image.shape
    for u, (y0, x0) in enumerate(origins):
        if y0 < 0 or x0 < 0 or y0 + window > h or x0 + window > w:
            inside = np.zeros((window, window), bool)
            inside[max(0, -y0):h - y0, max(0, -x0):w - x0] = True
            maps[u][~inside] = 0
    return ContributionMaps(maps, origins, image.shape)


def max_projection(contributions: ContributionMaps, *, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Which cell contributes most at each pixel (eq. 4-5), and how much.

    Parameters
    ----------
    contributions : ContributionMaps
    normalize : bool
        Compare each cell's map divided by its own maximum, so that a bright cell does not claim
        the pixels of a faint neighbour (``False``: the raw values, as eq. 4).

    Returns
    -------
    owner : (H, W) int32 ndarray
        ``u`` where cell ``u``'s map is the largest and positive, 0 where no map is positive.
    value : (H, W) float32 ndarray
        That map's value (``C_i(u)`` at the pixels ``u`` owns), 0 where no map is positive.
    """
    owner = np.zeros(contributions.shape, np.int32)
    value = np.zeros(contributions.shape, np.float32)
    for u in range(1, len(contributions) + 1):
        image_sl, window_sl = contributions.window_slices(u)
        m = contributions.maps[u - 1][window_sl]
        if normalize:
            top = float(m.max(initial=0.0))
            if top <= 0:
                continue
            m = m / top
        better = m > value[image_sl]
        value[image_sl][better] = m[better]
        owner[image_sl][better] = u
    return owner, value
