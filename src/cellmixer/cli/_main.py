"""The ``cellmixer`` command line: a table of command modules, each mirroring the Python functions of one method."""

from __future__ import annotations

import argparse
import inspect
import sys

from .._errors import CellmixerError
from .._version import __version__
from ..demo import demo, print_demo_report
from ..engine import TrainingInterrupted
from . import _cellmixer, _centroids, _export, _nuclei, _typed, _view
from ._options import add_output_options

# One line per method: its module adds its sub-commands and runs them.
COMMANDS = (_cellmixer, _nuclei, _typed, _centroids)
# Commands on the models and results of every method (export, view), added the same way.
TOOLS = (_export, _view)


def _add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="run everything on generated cultures (a few minutes, no download)",
                       description="Generate three cell types, train baseline and CellMixer, compare them.")
    defaults = {name: p.default for name, p in inspect.signature(demo).parameters.items()}
    p.add_argument("--iterations", type=int, default=defaults["iterations"], help="per model (default: %(default)s)")
    p.add_argument("--seed", type=int, default=defaults["seed"])
    add_output_options(p, output_required=False, default=defaults["output"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellmixer",
        description="Cell-type segmentation trained from homogeneous cultures: no masks drawn. "
                    "Put the images of each cell type in DATA/<type>/, then: pseudolabel (check the "
                    "unsupervised masks), mix (look at artificial mixtures), train, predict, evaluate.")
    parser.add_argument("--version", action="version", version=f"cellmixer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (*COMMANDS, *TOOLS):
        before = set(sub.choices)
        module.add_parsers(sub)
        for name in set(sub.choices) - before:
            sub.choices[name].set_defaults(run=module.run)
    _add_demo_parser(sub)
    return parser


def run(args) -> int:
    progress = not args.quiet
    if args.command == "demo":
        summary = demo(args.output, seed=args.seed, iterations=args.iterations, overwrite=args.overwrite,
                       progress=progress)
        print_demo_report(summary, args.output)
    else:
        args.run(args, progress)
    return 0


def _command_name(args) -> str:
    return f"{args.command} {args.step}" if getattr(args, "step", None) else args.command


def main(argv=None) -> int:
    """Entry point of the ``cellmixer`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except TrainingInterrupted as exc:
        print(f"cellmixer: {exc}", file=sys.stderr)
        return 130
    except CellmixerError as exc:
        print(f"cellmixer {_command_name(args)}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cellmixer: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"cellmixer {_command_name(args)}: error: out of memory; use a smaller --tile-size, --batch-size or "
              "--crop-size.", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permission denied, ... while writing or reading
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"cellmixer {_command_name(args)}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2

