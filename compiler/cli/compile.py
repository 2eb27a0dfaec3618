"""``onnxc compile``: run a pass pipeline over a model file and write the result."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from onnxc.cli import build
from onnxc.cli.common import EXIT_OK, SHAPE_HELP, Subparsers, add_command, load_plugins
from onnxc.cli.settings import compile_settings
from onnxc.targets import get_target


def add_parser(sub: Subparsers) -> None:
    p = add_command(sub, "compile", "Run a pass pipeline over a model and write the result.", """
        onnxc compile model.onnx -o model.opt.onnx                      # default lossless pipeline
        onnxc compile model.onnx -o out.onnx --passes "default,cse" --verify
        onnxc compile model.onnx -o out.onnx --recipe recipe.toml --report report.json
        onnxc compile model.onnx -o out.onnx --passes "default,my-pass" --plugin ./my_passes.py
        onnxc compile model.onnx -o int8.onnx --passes default,quantize --calib-data data/ --target openvino --build int8_ov/""")
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
    p.add_argument("--shape", action="append", metavar="NAME=DIMS", help=SHAPE_HELP)
    p.add_argument("--plugin", action="append", metavar="MODULE", help="import a module or .py file that registers passes (repeatable)")
    p.add_argument("--external-data", choices=["auto", "always", "never"], default="auto",
                   help="write weights to a side file: auto = when over 1.8 GB or the input had one")
    p.add_argument("--seed", type=int, default=0, help="seed for generated verification inputs")
    p.add_argument("--no-speed-check", action="store_true",
                   help="do not time the result against the input when a pass promises speed (quantize's never_slower); "
                        "by default the input comes back when the compiled model is more than 5%% slower on the target")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--build", metavar="DIR", help="then lower the result for --target into DIR, verified against ORT "
                   "(as `onnxc build OUTPUT --target T -o DIR`)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from onnxc.driver import compile_file
    from onnxc.io import write_text_atomically
    from onnxc.report import format_compile_report

    load_plugins(args)
    settings = compile_settings(args)
    if args.build:
        # Before compiling: a missing runtime is found in a second.
        get_target(settings.context.target).available_lowerer()
    source, output = Path(args.model), Path(args.output)
    external = {"auto": None, "always": True, "never": False}[args.external_data]
    report, written = compile_file(source, output, settings.pipeline, context=settings.context,
                                   verify=settings.verify, external_data=external)
    if args.report:
        report_data = {"input": str(source), "output": str(output), **report.as_dict()}
        write_text_atomically(args.report, json.dumps(report_data, indent=2, default=str) + "\n")
    print(format_compile_report(report))
    print("wrote " + ", ".join(str(p) for p in written))
    if args.build:
        from onnxc.io import load

        return build.build_and_report(load(output), settings.context.target, Path(args.build), shapes=args.shape, seed=args.seed)
    return EXIT_OK
