"""``onnxc demo``: export a zoo model, compile it as ``onnxc compile`` does (default pipeline,
every pass verified) and print the report."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from onnxc.cli.common import EXIT_OK, Subparsers, add_command


def add_parser(sub: Subparsers) -> None:
    p = add_command(sub, "demo", "Export a zoo model, compile it with the default pipeline and print the report.", """
        onnxc demo
        onnxc demo --model mobilenetv2 --keep out/""")
    p.add_argument("--model", default="resnet18", help="zoo model to use (default resnet18)")
    p.add_argument("--keep", metavar="DIR", help="keep the exported and compiled models in DIR")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from onnxc.analysis import format_inspection, inspect_model
    from onnxc.context import Context
    from onnxc.driver import compile_file
    from onnxc.inputs import random_feeds, resolve_input_shapes
    from onnxc.io import load
    from onnxc.models_zoo import export
    from onnxc.report import format_compile_report
    from onnxc.verify import compare_models

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
        report, _ = compile_file(source, target, context=Context(), verify=True)
        print(format_compile_report(report))
        feeds = [random_feeds(model, resolve_input_shapes(model), seed=100 + i) for i in range(2)]
        comparison = compare_models(str(source), str(target), feeds)
        print(f"\nsaved {target} ({target.stat().st_size / 1e6:.1f} MB); fresh inputs vs original: {comparison.summary()}")
    return EXIT_OK
