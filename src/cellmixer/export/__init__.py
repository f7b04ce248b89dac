"""Models for other software: a bioimage.io model package of a trained model (``cellmixer export``)."""

from ._bioimageio import export_bioimageio
from ._network import NETWORKS, BackgroundStatistics, ExportedNetwork
from ._source import network_source

__all__ = [
    "NETWORKS",
    "BackgroundStatistics",
    "ExportedNetwork",
    "export_bioimageio",
    "network_source",
]
