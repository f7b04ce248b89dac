"""Command line interface: ``cellmixer COMMAND``, one module per method (see ``_main.COMMANDS``)."""

from ._main import build_parser, main

__all__ = ["build_parser", "main"]
