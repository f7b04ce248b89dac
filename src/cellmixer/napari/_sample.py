"""napari sample data: a generated co-culture of two cell types (no download)."""

from __future__ import annotations

from ..demo import synthetic_culture


def coculture() -> list[tuple]:
    """A 256 x 256 phase-contrast-like co-culture of round cells and spindle cells, with its true cell types."""
    image, _, classes = synthetic_culture(["roundcell", "spindle"], shape=(256, 256), seed=0)
    return [(image, {"name": "co-culture"}, "image"),
            (classes, {"name": "true cell types", "visible": False}, "labels")]
