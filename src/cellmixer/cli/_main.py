"""The ``cellmixer`` command line: a table of command modules, each mirroring the Python functions of one method."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import logging
import sys
import traceback
import warnings

import torch

from .._errors import CellmixerError, is_out_of_memory
from .._version import __version__
from ..demo import demo, print_demo_report
from ..engine import OptimizationSettings, TrainingInterrupted
from . import _cellmixer, _centroids, _export, _nuclei, _typed, _view
from ._options import add_output_options, add_settings

# One line per method: its module adds its sub-commands and runs them.
COMMANDS = (_cellmixer, _nuclei, _typed, _centroids)
# Commands on the models and results of every method (export, view), added the same way.
TOOLS = (_export, _view)

# Exit status of the command (README: "What you can rely on").
EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130


def _add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="run everything on generated cultures (a few minutes, no download)",
                       description="Generate three cell types, train baseline and CellMixer, compare them.")
    defaults = {name: p.default for name, p in inspect.signature(demo).parameters.items()}
    add_settings(p, OptimizationSettings, ["iterations", "seed"], defaults=defaults)
    add_output_options(p, output_required=False, default=defaults["output"])


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}; see `{self.prog} --help`.\n")


def _leaf_parsers(parser):
    """The parsers of every command and step below ``parser``."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
    for action in subs:
        for child in dict.fromkeys(action.choices.values()):
            yield from _leaf_parsers(child)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cellmixer",
        description="Cell-type segmentation trained from homogeneous cultures: no masks drawn. "
                    "Put the images of each cell type in DATA/<type>/, then: pseudolabel (check the "
                    "unsupervised masks), mix (look at artificial mixtures), train, predict, evaluate.",
        epilog="Exit status: 0 done, 2 bad input (one line names the file or option), 1 internal error, "
               "130 interrupted. --debug shows the traceback of an error.")
    parser.add_argument("--version", action="version", version=f"cellmixer {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (*COMMANDS, *TOOLS):
        before = set(sub.choices)
        module.add_parsers(sub)
        for name in set(sub.choices) - before:
            sub.choices[name].set_defaults(run=module.run)
    _add_demo_parser(sub)
    for leaf in _leaf_parsers(parser):  # --debug after the command too; SUPPRESS keeps one given before it
        leaf.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show the traceback of an error")
    return parser


def run(args) -> int:
    progress = not args.quiet
    if getattr(args, "threads", None):  # a process-wide setting: taken here, before any work (training too)
        torch.set_num_threads(args.threads)
    if args.command == "demo":
        summary = demo(args.output, seed=args.seed, iterations=args.iterations, overwrite=args.overwrite,
                       progress=progress)
        print_demo_report(summary, args.output)
    else:
        args.run(args, progress)
    return 0


def _command_name(args) -> str:
    return f"{args.command} {args.step}" if getattr(args, "step", None) else args.command


class _Held(logging.Handler):
    """Holds the log records of libraries (tifffile warns through logging) until the command ends."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record):
        self.records.append(f"{record.name}: {record.getMessage()}")


def _first_line(text) -> str:
    return str(text).strip().splitlines()[0] if str(text).strip() else ""


# Warnings about the code, not the user's data: not shown to the user.
_FOR_DEVELOPERS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ResourceWarning, ImportWarning)


@contextlib.contextmanager
def _held_warnings():
    """Library warnings (numpy, tifffile, roifile, ...) held back during the command: a command that
    fails ends with its one line only; one that succeeds shows each warning once, on one line."""
    handler = _Held()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:  # the filters in force decide what is caught

            def held() -> list[str]:
                found = [*handler.records, *(f"{w.category.__name__}: {_first_line(w.message)}" for w in caught
                                             if not issubclass(w.category, _FOR_DEVELOPERS))]
                return list(dict.fromkeys(found))

            yield held
    finally:
        root.removeHandler(handler)


def _error_line(args, exc: BaseException) -> tuple[int, str]:
    """The exit status and the one line of an error that ended a command."""
    command = f"cellmixer {_command_name(args)}"
    if isinstance(exc, TrainingInterrupted):
        return EXIT_INTERRUPTED, f"cellmixer: {exc}"
    if isinstance(exc, CellmixerError):
        return EXIT_BAD_INPUT, f"{command}: error: {exc}"
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "cellmixer: interrupted"
    if is_out_of_memory(exc):
        return EXIT_BAD_INPUT, (f"{command}: error: out of memory; use a smaller --tile-size, --batch-size or "
                                "--crop-size, or smaller images.")
    if isinstance(exc, OSError) and exc.strerror:  # disk full, permission denied, ... while writing or reading
        where = f"{exc.filename}: " if exc.filename else ""
        return EXIT_BAD_INPUT, f"{command}: error: {where}{exc.strerror}."
    text = " ".join(str(exc).split()) or "no message"
    return EXIT_INTERNAL, (f"{command}: internal error: {type(exc).__name__}: {text[:300]}; rerun with --debug for "
                           "the traceback, and report it.")


def main(argv=None) -> int:
    """Entry point of the ``cellmixer`` command; returns the exit status (0 done, 2 bad input, 1 internal
    error, 130 interrupted). Every error is one line on stderr; ``--debug`` adds its traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with _held_warnings() as held:
        try:
            status = run(args)
        except BaseException as exc:  # noqa: BLE001 - the last resort: every error is one line
            if isinstance(exc, SystemExit):
                raise
            if args.debug:
                traceback.print_exc()
            status, line = _error_line(args, exc)
            print(line, file=sys.stderr)
            return status
    for warning in held():
        print(f"cellmixer {_command_name(args)}: warning: {warning}", file=sys.stderr)
    return status
