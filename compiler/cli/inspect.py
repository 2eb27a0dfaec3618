"""``onnxc inspect``: I/O, opsets, ops, parameters, MACs/FLOPs and weight bytes of a model."""
from __future__ import annotations

import argparse
import json

from onnxc.cli.common import EXIT_OK, SHAPE_HELP, Subparsers, add_command


def add_parser(sub: Subparsers) -> None:
    p = add_command(sub, "inspect", "Describe a model: I/O, opsets, ops, parameters, MACs/FLOPs, weight bytes.", """
        onnxc inspect model.onnx
        onnxc inspect bert.onnx --shape input_ids=1x384 --json > info.json""")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--shape", action="append", metavar="NAME=DIMS", help=SHAPE_HELP)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from onnxc.analysis import format_inspection, inspect_model
    from onnxc.inputs import parse_shape_overrides
    from onnxc.io import load

    model = load(args.model)
    info = inspect_model(model, args.model, parse_shape_overrides(args.shape))
    print(json.dumps(info, indent=2) if args.json else format_inspection(info))
    return EXIT_OK
