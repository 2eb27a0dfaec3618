"""The ``onnxc`` command line.

Exit codes: 0 success; 1 a comparison exceeded its tolerance (``onnxc compare``); 2 bad input
or usage (unreadable model, invalid graph, unknown pass or option, ...), reported on one line;
3 an internal error in onnxc (a bug: the traceback is shown with ``--debug``); 130 and 143
interrupted by Ctrl-C or SIGTERM, which unwind like an error, so no staged output is left behind.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import tempfile
import textwrap
import threading
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from onnxc._version import __version__
from onnxc.errors import OnnxcError, PassCrashedError

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_TERMINATED = 128 + signal.SIGTERM  # as a shell reports a process SIGTERM ended

EPILOG_EXIT_CODES = """exit codes:
  0  success
  1  outputs differ beyond tolerance (compare)
  2  bad input or usage: unreadable/invalid model, unknown pass or option, bad data (one-line error)
  3  internal error in onnxc (rerun with --debug for the traceback, and report it)
  130, 143  interrupted (Ctrl-C) or terminated (SIGTERM); no partial output is left"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnxc",
        description="onnxc: a graph-level model-compression compiler over ONNX.",
        formatter_class=_Formatter,
        epilog=textwrap.dedent("""\
            examples:
              onnxc demo                                   # export a zoo model, compile it, print the report
              onnxc inspect model.onnx --shape input=1x3x224x224
              onnxc compile model.onnx -o model.opt.onnx --verify --report report.json
              onnxc compile model.onnx -o out.onnx --passes "default,my-pass(k=3)" --plugin my_passes
              onnxc passes
              onnxc zoo export resnet50 -o resnet50.onnx --batch 1
              onnxc run model.onnx --input x=x.npy --output-dir out/
              onnxc compare model.onnx model.opt.onnx --samples 4

            """) + EPILOG_EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"onnxc {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, help: str, examples: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, formatter_class=_Formatter,
                           epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  ") + "\n\n" + EPILOG_EXIT_CODES)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
        return p

    shape_help = "concrete shape for an input with symbolic dims, NAME=1x3x224x224 (repeatable)"

    p = command("inspect", "Describe a model: I/O, opsets, ops, parameters, MACs/FLOPs, weight bytes.", """
        onnxc inspect model.onnx
        onnxc inspect bert.onnx --shape input_ids=1x384 --json > info.json""")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--shape", action="append", metavar="NAME=DIMS", help=shape_help)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=_cmd_inspect)

    p = command("compile", "Run a pass pipeline over a model and write the result.", """
        onnxc compile model.onnx -o model.opt.onnx                      # default lossless pipeline
        onnxc compile model.onnx -o out.onnx --passes "default,cse" --verify
        onnxc compile model.onnx -o out.onnx --recipe recipe.toml --report report.json
        onnxc compile model.onnx -o out.onnx --passes "default,my-pass" --plugin ./my_passes.py""")
    p.add_argument("model", help="the input .onnx file (never modified)")
    p.add_argument("-o", "--output", required=True, help="where to write the compiled model")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--passes", help='pipeline string, e.g. "default,quantize(method=entropy)"; `default` is the lossless pipeline')
    group.add_argument("--recipe", help="TOML recipe with the pass list (and target, calibration data)")
    p.add_argument("--verify", action="store_true", help="check every pass numerically against the model before it (on the first "
                   "--calib-data feeds when given, else on generated inputs)")
    p.add_argument("--report", metavar="JSON", help="write the per-pass report as JSON")
    p.add_argument("--target", help="backend profile for target-aware passes (default: onnxruntime)")
    p.add_argument("--calib-data", metavar="PATH", help="calibration data for calibrated passes")
    p.add_argument("--calib-cache", metavar="PATH", help="file where calibration statistics are saved and reused")
    p.add_argument("--calib-random", action="store_true",
                   help="calibrate on seeded random inputs when no --calib-data is given (a warning is printed: real data is better)")
    p.add_argument("--shape", action="append", metavar="NAME=DIMS", help=shape_help)
    p.add_argument("--plugin", action="append", metavar="MODULE", help="import a module or .py file that registers passes (repeatable)")
    p.add_argument("--external-data", choices=["auto", "always", "never"], default="auto",
                   help="write weights to a side file: auto = when over 1.8 GB or the input had one")
    p.add_argument("--seed", type=int, default=0, help="seed for generated verification inputs")
    p.add_argument("--no-speed-check", action="store_true",
                   help="do not time the result against the input when a pass promises speed (quantize's never_slower); "
                        "by default the input comes back when the compiled model is more than 5%% slower on the target")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(handler=_cmd_compile)

    p = command("passes", "List every registered pass with its options and defaults.", """
        onnxc passes
        onnxc passes --plugin my_passes --json""")
    p.add_argument("--plugin", action="append", metavar="MODULE", help="also list the passes this module registers")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=_cmd_passes)

    p = command("zoo", "List or export the built-in models.", """
        onnxc zoo list
        onnxc zoo export resnet18 -o resnet18.onnx
        onnxc zoo export bert -o bert.onnx --opt layers=12 --opt hidden=768 --opt heads=12
        onnxc zoo export mobilenetv2 -o mnv2.onnx --batch N       # symbolic batch""")
    zoo = p.add_subparsers(dest="zoo_command", metavar="ACTION")
    zoo.required = True
    zl = zoo.add_parser("list", help="list the models and their options")
    zl.add_argument("--json", action="store_true", help="print machine-readable JSON")
    zl.set_defaults(handler=_cmd_zoo_list)
    ze = zoo.add_parser("export", help="build a model and save it")
    ze.add_argument("name", help="model name (see `onnxc zoo list`)")
    ze.add_argument("-o", "--output", required=True, help="where to write the .onnx file")
    ze.add_argument("--batch", help="batch size, or a name (e.g. N) for a symbolic batch dim")
    ze.add_argument("--opt", action="append", metavar="KEY=VALUE", help="model option, e.g. layers=4 (repeatable)")
    ze.set_defaults(handler=_cmd_zoo_export)

    p = command("run", "Run a model on ONNX Runtime (CPU) and print or save its outputs.", """
        onnxc run model.onnx --input x=x.npy
        onnxc run model.onnx --shape x=1x3x224x224 --output-dir outputs/   # seeded random input""")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="input array from a .npy file (repeatable)")
    p.add_argument("--shape", action="append", metavar="NAME=DIMS", help=shape_help + "; for generated inputs")
    p.add_argument("--output-dir", help="save each output as NAME.npy there")
    p.add_argument("--seed", type=int, default=0, help="seed for generated inputs")
    p.set_defaults(handler=_cmd_run)

    p = command("compare", "Run two models on the same inputs and compare their outputs.", """
        onnxc compare model.onnx model.opt.onnx
        onnxc compare model.onnx model.int8.onnx --input x=batch.npy --max-abs 0.05""")
    p.add_argument("reference", help="the reference .onnx file")
    p.add_argument("candidate", help="the .onnx file to check")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="input array from a .npy file (repeatable)")
    p.add_argument("--shape", action="append", metavar="NAME=DIMS", help=shape_help + "; for generated inputs")
    p.add_argument("--samples", type=int, default=4, help="number of generated input sets (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed for generated inputs")
    p.add_argument("--max-abs", type=float, default=1e-4, help="exit 1 when the max abs error exceeds this (default 1e-4)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=_cmd_compare)

    p = command("demo", "Export a zoo model, compile it with the default pipeline and print the report.", """
        onnxc demo
        onnxc demo --model mobilenetv2 --keep out/""")
    p.add_argument("--model", default="resnet18", help="zoo model to use (default resnet18)")
    p.add_argument("--keep", metavar="DIR", help="keep the exported and compiled models in DIR")
    p.set_defaults(handler=_cmd_demo)
    return parser


def _load_plugins(args: argparse.Namespace) -> None:
    from onnxc.registry import load_plugin

    for plugin in getattr(args, "plugin", None) or []:
        load_plugin(plugin)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from onnxc.analysis import format_inspection, inspect_model
    from onnxc.inputs import parse_shape_overrides
    from onnxc.io import load

    model = load(args.model)
    info = inspect_model(model, args.model, parse_shape_overrides(args.shape))
    print(json.dumps(info, indent=2) if args.json else format_inspection(info))
    return EXIT_OK


def _cmd_compile(args: argparse.Namespace) -> int:
    from onnxc.context import Context
    from onnxc.driver import build_steps
    from onnxc.inputs import parse_shape_overrides
    from onnxc.io import load, save, write_text_atomically
    from onnxc.manager import PassManager
    from onnxc.pipeline import load_recipe
    from onnxc.report import format_compile_report

    _load_plugins(args)
    context = Context(progress=False if args.no_progress else None, seed=args.seed, check_speed=not args.no_speed_check)
    context.input_shapes = parse_shape_overrides(args.shape)
    verify = args.verify
    if args.recipe:
        recipe = load_recipe(args.recipe)
        pipeline = recipe.passes
        context.target = recipe.target or context.target
        context.calibration_data = recipe.calibration.get("data")
        context.calibration_cache = Path(recipe.calibration["cache"]) if recipe.calibration.get("cache") else None
        context.calibration_options = {k: v for k, v in recipe.calibration.items() if k in ("preprocess", "batch_size", "limit")}
        context.input_shapes = {**recipe.input_shapes, **context.input_shapes}
        verify = verify or bool(recipe.verify)
    else:
        pipeline = args.passes
    context.target = args.target or context.target
    context.calibration_data = args.calib_data or context.calibration_data
    context.calibration_cache = Path(args.calib_cache) if args.calib_cache else context.calibration_cache
    context.calibration_allow_random = args.calib_random
    steps = build_steps(pipeline)
    input_path, output_path = Path(args.model), Path(args.output)
    if output_path.resolve() == input_path.resolve():
        raise OnnxcError(f"output {output_path} is the input file; onnxc never overwrites its input, choose another name")
    model = load(input_path)
    report = PassManager(steps, context, verify=verify).run(model)
    external = {"auto": None, "always": True, "never": False}[args.external_data]
    written = save(model, output_path, external_data=external)
    if args.report:
        report_data = {"input": str(input_path), "output": str(output_path), **report.as_dict()}
        write_text_atomically(args.report, json.dumps(report_data, indent=2, default=str) + "\n")
    print(format_compile_report(report))
    print("wrote " + ", ".join(str(p) for p in written))
    return EXIT_OK


def _cmd_passes(args: argparse.Namespace) -> int:
    from onnxc.passes import DEFAULT_FINAL, DEFAULT_FIXED_POINT
    from onnxc.registry import pass_options, registered_passes

    _load_plugins(args)
    passes = registered_passes()
    if args.json:
        print(json.dumps({
            name: {"summary": cls.summary(), "lossless": cls.lossless,
                   "options": [{"name": o.name, "type": o.type_name, "default": o.default, "help": o.help} for o in pass_options(cls)]}
            for name, cls in passes.items()
        }, indent=2, default=str))
        return EXIT_OK
    for name, cls in passes.items():
        kind = "lossless" if cls.lossless else "lossy"
        print(f"{name}  [{kind}]\n    {cls.summary()}")
        for o in pass_options(cls):
            print(f"    --  {o.name}: {o.type_name} = {o.default!r}    {o.help}")
    print(f"\ndefault = fixed point of [{', '.join(DEFAULT_FIXED_POINT)}], then {', '.join(DEFAULT_FINAL)}")
    return EXIT_OK


def _zoo_options(args: argparse.Namespace) -> dict:
    from onnxc.pipeline import parse_scalar

    options = {}
    for item in args.opt or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise OnnxcError(f"bad --opt {item!r}: expected KEY=VALUE")
        options[key] = parse_scalar(value)
    if args.batch is not None:
        options["batch"] = parse_scalar(args.batch)
    return options


def _cmd_zoo_list(args: argparse.Namespace) -> int:
    from onnxc.models_zoo import list_models

    models = list_models()
    if args.json:
        print(json.dumps([m.as_dict() for m in models], indent=2, default=str))
        return EXIT_OK
    for m in models:
        print(f"{m.name:<14} {m.description}")
        if m.options:
            print(" " * 15 + "options: " + ", ".join(f"{k}={v}" for k, v in m.options.items()))
    return EXIT_OK


def _cmd_zoo_export(args: argparse.Namespace) -> int:
    from onnxc.models_zoo import export

    written = export(args.name, args.output, **_zoo_options(args))
    print("wrote " + ", ".join(str(p) for p in written))
    return EXIT_OK


def _feeds_from_args(args: argparse.Namespace, model, samples: int) -> list[dict[str, np.ndarray]]:
    from onnxc.inputs import parse_shape_overrides, random_feeds, resolve_input_shapes

    given = {}
    for item in args.input or []:
        name, sep, file = item.partition("=")
        if not sep:
            raise OnnxcError(f"bad --input {item!r}: expected NAME=FILE.npy")
        try:
            given[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise OnnxcError(f"cannot read input {file!r}: {error}") from None
    known = {v.name for v in model.graph.inputs if not v.is_initializer()}
    unknown = set(given) - known
    if unknown:
        raise OnnxcError(f"model has no input {sorted(unknown)[0]!r} (inputs: {', '.join(sorted(known))})")
    missing = known - set(given)
    if not missing:
        return [given]
    overrides = {**{k: list(v.shape) for k, v in given.items()}, **parse_shape_overrides(args.shape)}
    shapes = resolve_input_shapes(model, overrides)
    return [{**random_feeds(model, shapes, seed=args.seed + i), **given} for i in range(samples if not given else 1)]


def _cmd_run(args: argparse.Namespace) -> int:
    from onnxc.io import load
    from onnxc.runtime import OrtRunner

    model = load(args.model)
    feeds = _feeds_from_args(args, model, 1)[0]
    with OrtRunner(args.model) as runner:
        outputs = runner.run(feeds)
    for name, value in outputs.items():
        value = np.asarray(value)
        stats = f"min {value.min():.4g} max {value.max():.4g} mean {value.mean():.4g}" if value.size and np.issubdtype(value.dtype, np.number) else ""
        print(f"{name}: {value.dtype} {list(value.shape)} {stats}")
        if args.output_dir:
            out_dir = Path(args.output_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            np.save(out_dir / f"{_safe_file_name(name)}.npy", value)
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    from onnxc.io import load
    from onnxc.verify import compare_models

    reference = load(args.reference)
    load(args.candidate)
    feeds = _feeds_from_args(args, reference, args.samples)
    comparison = compare_models(args.reference, args.candidate, feeds)
    if args.json:
        print(json.dumps(comparison.as_dict(), indent=2))
    else:
        for o in comparison.outputs:
            top1 = "" if o.top1_agreement is None else f"  top1 agreement {o.top1_agreement:.2%}"
            print(f"{o.name}: max abs {o.max_abs:.3g}  max rel {o.max_rel:.3g}  cosine {o.cosine:.6f}{top1}")
    return EXIT_OK if comparison.max_abs <= args.max_abs else EXIT_MISMATCH


def _cmd_demo(args: argparse.Namespace) -> int:
    from onnxc.analysis import format_inspection, inspect_model
    from onnxc.context import Context
    from onnxc.driver import default_pipeline
    from onnxc.io import load, save
    from onnxc.manager import PassManager
    from onnxc.models_zoo import export
    from onnxc.report import format_compile_report
    from onnxc.verify import compare_models
    from onnxc.inputs import random_feeds, resolve_input_shapes

    with tempfile.TemporaryDirectory(prefix="onnxc-demo-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        source = folder / f"{args.model}.onnx"
        target = folder / f"{args.model}.opt.onnx"
        export(args.model, source)
        print(f"exported zoo model {args.model!r} to {source}\n")
        model = load(source)
        print(format_inspection(inspect_model(model, str(source))))
        print("\ncompiling with the default (lossless) pipeline, verifying every pass on ONNX Runtime...\n")
        report = PassManager(default_pipeline(), Context(), verify=True).run(model)
        save(model, target)
        print(format_compile_report(report))
        feeds = [random_feeds(model, resolve_input_shapes(model), seed=100 + i) for i in range(2)]
        comparison = compare_models(str(source), str(target), feeds)
        print(f"\nsaved {target} ({target.stat().st_size / 1e6:.1f} MB); fresh inputs vs original: {comparison.summary()}")
    return EXIT_OK


def _safe_file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "output"




class _WarningLine(logging.Handler):
    """onnxc's own warnings as ``onnxc: warning: ...`` lines on the stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"onnxc: warning: {record.getMessage()}", file=sys.stderr)


def _show_onnxc_warnings() -> None:
    logger = logging.getLogger("onnxc")
    if not any(isinstance(h, _WarningLine) for h in logger.handlers):
        handler = _WarningLine(logging.WARNING)
        logger.addHandler(handler)


class _Terminated(BaseException):
    """SIGTERM, raised where the program is so that every ``finally`` (staged outputs) runs.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it.
    """


def _raise_terminated(signum, frame) -> None:
    raise _Terminated


@contextlib.contextmanager
def _command_environment(debug: bool) -> Iterator[None]:
    """What a command runs in: SIGTERM unwinds like Ctrl-C, and libraries stay quiet.

    Exit 2 promises one stderr line, so Python warnings and library log records (onnx_ir logs its
    complaints about a broken graph) are dropped unless --debug; onnxc's own warnings still show.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    root = logging.getLogger()
    sink = logging.NullHandler()
    with warnings.catch_warnings():
        if not debug:
            warnings.simplefilter("ignore")
            # A handler on the root logger keeps records from reaching logging's last-resort stderr printer.
            root.addHandler(sink)
        try:
            yield
        finally:
            root.removeHandler(sink)
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _show_onnxc_warnings()
    try:
        with _command_environment(args.debug):
            return args.handler(args)
    except OnnxcError as error:
        if args.debug:
            traceback.print_exc()
        print(f"onnxc: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("onnxc: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
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


if __name__ == "__main__":
    sys.exit(main())
