"""``onnxc zoo``: list the built-in models, or build one and save it."""
from __future__ import annotations

import argparse
import json

from onnxc.cli.common import EXIT_OK, Subparsers, add_command
from onnxc.errors import OnnxcError


def add_parser(sub: Subparsers) -> None:
    p = add_command(sub, "zoo", "List or export the built-in models.", """
        onnxc zoo list
        onnxc zoo export resnet18 -o resnet18.onnx
        onnxc zoo export bert -o bert.onnx --opt layers=12 --opt hidden=768 --opt heads=12
        onnxc zoo export mobilenetv2 -o mnv2.onnx --batch N       # symbolic batch""")
    zoo = p.add_subparsers(dest="zoo_command", metavar="ACTION")
    zoo.required = True
    zl = zoo.add_parser("list", help="list the models and their options")
    zl.add_argument("--json", action="store_true", help="print machine-readable JSON")
    zl.set_defaults(handler=run_list)
    ze = zoo.add_parser("export", help="build a model and save it")
    ze.add_argument("name", help="model name (see `onnxc zoo list`)")
    ze.add_argument("-o", "--output", required=True, help="where to write the .onnx file")
    ze.add_argument("--batch", help="batch size, or a name (e.g. N) for a symbolic batch dim")
    ze.add_argument("--opt", action="append", metavar="KEY=VALUE", help="model option, e.g. layers=4 (repeatable)")
    ze.set_defaults(handler=run_export)


def run_list(args: argparse.Namespace) -> int:
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


def run_export(args: argparse.Namespace) -> int:
    from onnxc.models_zoo import export

    written = export(args.name, args.output, **_model_options(args))
    print("wrote " + ", ".join(str(p) for p in written))
    return EXIT_OK


def _model_options(args: argparse.Namespace) -> dict:
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
