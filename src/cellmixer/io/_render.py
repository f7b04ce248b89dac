"""Pictures for people: 8-bit views, label overlays and legends."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage.segmentation import find_boundaries

# Colour-blind-friendly class colours (Okabe-Ito), then tab10 for more classes.
CLASS_COLORS = np.array(
    [
        (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
        (213, 94, 0), (204, 121, 167), (148, 103, 189), (140, 86, 75), (127, 127, 127),
    ],
    dtype=np.uint8,
)


def class_colors(n: int) -> np.ndarray:
    """``n`` RGB colours for classes 1..n (cycled beyond 10)."""
    return CLASS_COLORS[np.arange(n) % len(CLASS_COLORS)]


def to_uint8(image: np.ndarray, *, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Contrast-stretch an image between two percentiles to uint8 for display."""
    image = np.asarray(image, dtype=np.float32)
    sample = image[:: max(1, image.shape[0] // 512), :: max(1, image.shape[1] // 512)]
    lo, hi = np.percentile(sample, [low, high])
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((image - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def overlay_labels(image: np.ndarray, labels: np.ndarray, colors: np.ndarray, *, alpha: float = 0.45,
                   outline: bool = True, regions: np.ndarray | None = None) -> np.ndarray:
    """RGB view of ``image`` with label ``k`` (k >= 1) tinted in ``colors[k - 1]``, outlines solid.

    ``regions`` (a label image, e.g. cell instances) outlines each of its objects instead of each
    class region, in the colour of its class, so that touching cells of one type stay apart.
    """
    gray = to_uint8(image) if image.dtype != np.uint8 else image
    rgb = np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
    labels = np.asarray(labels)
    fg = (labels > 0) & (labels <= len(colors))
    palette = np.concatenate([np.zeros((1, 3), np.float32), colors.astype(np.float32)])
    tint = palette[np.where(fg, labels, 0)]
    rgb[fg] = (1 - alpha) * rgb[fg] + alpha * tint[fg]
    if outline:
        edges = find_boundaries(np.where(fg, labels if regions is None else regions, 0), mode="inner") & fg
        rgb[edges] = tint[edges]
    return rgb.clip(0, 255).astype(np.uint8)


def add_legend(rgb: np.ndarray, names, colors: np.ndarray, *, title: str | None = None) -> np.ndarray:
    """Append a white strip under ``rgb`` with a colour swatch and name for each class."""
    font_size = max(12, min(28, rgb.shape[1] // 40))
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow < 10.1 has one fixed-size font
        font = ImageFont.load_default()
    row = font_size + 8
    entries = ([title] if title else []) + list(names)
    # Lay the entries out left to right, wrapping to new rows when the strip is full.
    draw_probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [draw_probe.textlength(str(t), font=font) + row + 16 for t in entries]
    rows, x = 1, 8
    for w in widths:
        if x + w > rgb.shape[1] and x > 8:
            rows, x = rows + 1, 8
        x += w
    strip = Image.new("RGB", (rgb.shape[1], rows * row + 8), "white")
    draw = ImageDraw.Draw(strip)
    x, y = 8, 4
    for i, (text, w) in enumerate(zip(entries, widths)):
        if x + w > rgb.shape[1] and x > 8:
            x, y = 8, y + row
        if title and i == 0:
            draw.text((x, y), str(text), fill="black", font=font)
        else:
            color = tuple(int(c) for c in colors[i - (1 if title else 0)])
            draw.rectangle([x, y + 2, x + row - 8, y + row - 6], fill=color, outline="black")
            draw.text((x + row - 2, y), str(text), fill="black", font=font)
        x += w
    return np.concatenate([rgb, np.asarray(strip)], axis=0)
