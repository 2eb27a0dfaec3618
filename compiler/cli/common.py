"""What every subcommand shares: exit codes, the help layout, and the subparser factory."""
from __future__ import annotations

import argparse
import signal
import textwrap

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # as a shell reports a process SIGTERM ended

EPILOG_EXIT_CODES = """exit codes:
  0  success
  1  outputs differ beyond tolerance (compare, build)
  2  bad input or usage: unreadable/invalid model, unknown pass or option, bad data (one-line error)
  3  internal error in onnxc (rerun with --debug for the traceback, and report it)
  130, 143  interrupted (Ctrl-C) or terminated (SIGTERM); no partial output is left"""

SHAPE_HELP = "concrete shape for an input with symbolic dims, NAME=1x3x224x224 (repeatable)"

Subparsers = argparse._SubParsersAction


class Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def add_command(sub: Subparsers, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    """A subcommand whose help ends with its examples and the exit codes; ``--debug`` works after it too."""
    parser = sub.add_parser(name, help=help, description=help, formatter_class=Formatter,
                            epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  ") + "\n\n"
                            + EPILOG_EXIT_CODES)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
    return parser


def load_plugins(args: argparse.Namespace) -> None:
    """Import the ``--plugin`` modules, so the passes they register can be named."""
    from onnxc.registry import load_plugin

    for plugin in getattr(args, "plugin", None) or []:
        load_plugin(plugin)
