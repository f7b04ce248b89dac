"""Losses for class-imbalanced segmentation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _softmax_and_targets(logits, target, ignore_index):
    """Class probabilities, one-hot targets, and a (B, 1, H, W) weight that is 0 on ignored pixels."""
    probs = torch.softmax(logits.float(), dim=1)
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    onehot = F.one_hot(torch.where(valid, target, 0).long(), logits.shape[1]).permute(0, 3, 1, 2).float()
    return probs, onehot, valid.unsqueeze(1).float()


def _box_sum(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Sums over ``2 radius + 1`` neighbours along ``dim``, zeros beyond the edges: differences of a cumulative
    sum (exact for counts; a pooling window this wide is many times slower on a CPU)."""
    pad = [0, 0] * (x.dim() - 1 - dim) + [radius + 1, radius]
    total = torch.cumsum(F.pad(x, pad), dim)
    n = x.shape[dim]
    return total.narrow(dim, 2 * radius + 1, n) - total.narrow(dim, 0, n)


def context_weights(target: torch.Tensor, num_classes: int, *, strength: float, radius: int,
                    ignore_index: int | None = 255) -> torch.Tensor:
    """Pixel weights that stress cells among cells of another class: ``1 + strength * s`` on a pixel of
    class ``k > 0``, where ``s`` is the share of the labelled cell pixels in the square of side
    ``2 radius + 1`` around it that are of another class than ``k``; 1 on background and ignored pixels.

    Parameters
    ----------
    target : (B, H, W) integer tensor with values in [0, C) or ``ignore_index``
    num_classes : int
        ``C``, background (0) included.

    Returns
    -------
    (B, 1, H, W) float tensor

    Examples
    --------
    >>> import torch
    >>> target = torch.ones((1, 9, 9), dtype=torch.long); target[0, 4, 4] = 2  # a pixel of class 2 among 1
    >>> w = context_weights(target, 3, strength=2.0, radius=1)
    >>> round(float(w[0, 0, 4, 4]), 3), round(float(w[0, 0, 4, 3]), 3), float(w[0, 0, 0, 0])
    (2.778, 1.222, 1.0)
    """
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    labels = torch.where(valid, target, 0).long()
    cells = F.one_hot(labels, num_classes).permute(0, 3, 1, 2)[:, 1:].float()
    local = _box_sum(_box_sum(cells, radius, 2), radius, 3)  # pixels of each class around, none outside the crop
    total = local.sum(1, keepdim=True)
    own = (local * cells).sum(1, keepdim=True)
    other = (total - own).clamp_min(0) / total.clamp_min(1e-6)
    return torch.where(labels.unsqueeze(1) > 0, 1 + strength * other, torch.ones_like(other))


def tversky_loss(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.3, beta: float = 0.7,
                 ignore_index: int | None = 255, smooth: float = 1.0,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-class Tversky loss (Salehi et al. 2017), averaged over classes.

    For each class c, ``TI_c = TP / (TP + alpha * FP + beta * FN)`` over the whole batch, with soft
    counts from the softmax; the loss is ``mean_c (1 - TI_c)``. ``beta > alpha`` weighs missed
    pixels more than false alarms, which helps rare classes; ``alpha = beta = 0.5`` is the Dice loss.
    Pixels whose target is ``ignore_index`` count for nothing; ``weight`` counts the others more or less
    (each pixel's share of the soft counts).

    Parameters
    ----------
    logits : (B, C, H, W) tensor
    target : (B, H, W) integer tensor with values in [0, C) or ``ignore_index``
    weight : (B, 1, H, W) tensor, optional
        Pixel weights, e.g. :func:`context_weights`.

    Examples
    --------
    >>> import torch
    >>> target = torch.tensor([[[0, 1], [1, 2]]])
    >>> perfect = 20 * torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    >>> float(tversky_loss(perfect, target)) < 1e-6
    True
    """
    probs, onehot, valid = _softmax_and_targets(logits, target, ignore_index)
    weight = valid if weight is None else valid * weight
    dims = (0, 2, 3)
    tp = (probs * onehot * weight).sum(dims)
    fp = (probs * (1 - onehot) * weight).sum(dims)
    fn = ((1 - probs) * onehot * weight).sum(dims)
    index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    return (1 - index).mean()


# The paper's class weights of background, nucleus and separation line.
DICE_WEIGHTS = (0.2, 0.4, 0.4)


def log_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, weights=DICE_WEIGHTS,
                  ignore_index: int | None = 255, smooth: float = 1.0) -> torch.Tensor:
    """Class-weighted log-Dice loss of Matuszewski & Ranefall (2021), equations 1-2.

    ``-(sum_c w_c log d_c)`` with ``d_c = (2 sum(y p) + 1) / (sum(y) + sum(p) + 1)`` over the
    whole batch, from the softmax ``p`` and the one-hot target ``y`` of class ``c``. The paper's
    weights for background, nucleus and separation line are 0.2, 0.4, 0.4: the thin separation
    lines weigh as much as the nuclei. Pixels whose target is ``ignore_index`` count for nothing.

    Examples
    --------
    >>> import torch
    >>> target = torch.tensor([[[0, 1], [1, 2]]])
    >>> perfect = 30 * torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    >>> float(log_dice_loss(perfect, target)) < 1e-6
    True
    >>> wrong = -perfect    # each pixel split between the two wrong classes: d = 1/3.5, 1/4, 1/3.5
    >>> round(float(log_dice_loss(wrong, target)), 4)
    1.3062
    """
    num_classes = logits.shape[1]
    weights = torch.as_tensor(weights, dtype=torch.float32)
    if weights.numel() != num_classes:
        raise ValueError(f"{weights.numel()} class weights for {num_classes} classes")
    probs, onehot, weight = _softmax_and_targets(logits, target, ignore_index)
    dims = (0, 2, 3)
    dice = (2 * (probs * onehot * weight).sum(dims) + smooth) / (
        (onehot * weight).sum(dims) + (probs * weight).sum(dims) + smooth)
    return -(weights * torch.log(dice)).sum()
