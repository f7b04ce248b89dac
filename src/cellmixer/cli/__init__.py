"""Command line interface: ``cellmixer pseudolabel|mix|train|predict|evaluate|demo``."""

from ._main import build_parser, main

__all__ = ["build_parser", "main"]
