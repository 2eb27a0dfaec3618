"""The ``onnxc`` command line: ``main`` builds the parser from one module per subcommand and maps
what a command raises to an exit code.

Exit codes: 0 success; 1 a comparison exceeded its tolerance (``onnxc compare``); 2 bad input
or usage (unreadable model, invalid graph, unknown pass or option, ...), reported on one line;
3 an internal error in onnxc (a bug: the traceback is shown with ``--debug``); 130 and 143
interrupted by Ctrl-C or SIGTERM, which unwind like an error, so no staged output is left behind.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
import traceback

from onnxc._version import __version__
from onnxc.cli import bench, build, compare, compile, demo, inspect, passes, run, zoo
from onnxc.cli.common import EPILOG_EXIT_CODES, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, Formatter
from onnxc.cli.environment import Terminated, command_environment, show_onnxc_warnings
from onnxc.errors import OnnxcError, PassCrashedError

# In the order ``onnxc --help`` lists them.
COMMANDS = (inspect, compile, build, passes, zoo, run, compare, bench, demo)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnxc",
        description="onnxc: a graph-level model-compression compiler over ONNX.",
        formatter_class=Formatter,
        epilog=textwrap.dedent("""\
            examples:
              onnxc demo                                   # export a zoo model, compile it, print the report
              onnxc inspect model.onnx --shape input=1x3x224x224
              onnxc compile model.onnx -o model.opt.onnx --verify --report report.json
              onnxc compile model.onnx -o out.onnx --passes "default,my-pass(k=3)" --plugin my_passes
              onnxc build model.opt.onnx --target openvino -o model_ov/
              onnxc passes
              onnxc zoo export resnet50 -o resnet50.onnx --batch 1
              onnxc run model.onnx --input x=x.npy --output-dir out/
              onnxc compare model.onnx model.opt.onnx --samples 4
              onnxc bench model.onnx model.int8.onnx --batch 1,8,16 --json bench.json --plot bench.png

            """) + EPILOG_EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"onnxc {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    show_onnxc_warnings()
    try:
        with command_environment(args.debug):
            return args.handler(args)
    except OnnxcError as error:
        if args.debug:
            traceback.print_exc()
        print(f"onnxc: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("onnxc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("onnxc: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except PassCrashedError as error:
        if args.debug:
            traceback.print_exc()
        print(f"onnxc: internal error {error} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as error:  # noqa: BLE001 - the last line of defence: one line unless --debug
        if args.debug:
            traceback.print_exc()
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"onnxc: internal error: {type(error).__name__}: {message} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
