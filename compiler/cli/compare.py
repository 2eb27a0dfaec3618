"""``onnxc compare``: run two models on the same inputs and compare their outputs (exit 1 beyond
``--max-abs``)."""
from __future__ import annotations

import argparse
import json

from onnxc.cli.common import EXIT_MISMATCH, EXIT_OK, SHAPE_HELP, Subparsers, add_command
from onnxc.cli.feeds import feeds_from_args


def add_parser(sub: Subparsers) -> None:
    p = add_command(sub, "compare", "Run two models on the same inputs and compare their outputs.", """
        onnxc compare model.onnx model.opt.onnx
        onnxc compare model.onnx model.int8.onnx --input x=batch.npy --max-abs 0.05""")
    p.add_argument("reference", help="the reference .onnx file")
    p.add_argument("candidate", help="the .onnx file to check")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="input array from a .npy file (repeatable)")
    p.add_argument("--shape", action="append", metavar="NAME=DIMS", help=SHAPE_HELP + "; for generated inputs")
    p.add_argument("--samples", type=int, default=4, help="number of generated input sets (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed for generated inputs")
    p.add_argument("--max-abs", type=float, default=1e-4, help="exit 1 when the max abs error exceeds this (default 1e-4)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from onnxc.io import load
    from onnxc.verify import compare_models

    reference = load(args.reference)
    load(args.candidate)  # validated like the reference: a broken file is a one-line error (exit 2)
    feeds = feeds_from_args(args, reference, args.samples)
    comparison = compare_models(args.reference, args.candidate, feeds)
    if args.json:
        print(json.dumps(comparison.as_dict(), indent=2))
    else:
        for o in comparison.outputs:
            top1 = "" if o.top1_agreement is None else f"  top1 agreement {o.top1_agreement:.2%}"
            print(f"{o.name}: max abs {o.max_abs:.3g}  max rel {o.max_rel:.3g}  cosine {o.cosine:.6f}{top1}")
    return EXIT_OK if comparison.max_abs <= args.max_abs else EXIT_MISMATCH
