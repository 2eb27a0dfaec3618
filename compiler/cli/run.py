"""``onnxc run``: run a model on ONNX Runtime (CPU) and print or save its outputs."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from onnxc.cli.common import EXIT_OK, SHAPE_HELP, Subparsers, add_command
from onnxc.cli.feeds import feeds_from_args


def add_parser(sub: Subparsers) -> None:
    p = add_command(sub, "run", "Run a model on ONNX Runtime (CPU) and print or save its outputs.", """
        onnxc run model.onnx --input x=x.npy
        onnxc run model.onnx --shape x=1x3x224x224 --output-dir outputs/   # seeded random input""")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="input array from a .npy file (repeatable)")
    p.add_argument("--shape", action="append", metavar="NAME=DIMS", help=SHAPE_HELP + "; for generated inputs")
    p.add_argument("--output-dir", help="save each output as NAME.npy there")
    p.add_argument("--seed", type=int, default=0, help="seed for generated inputs")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from onnxc.io import load
    from onnxc.runtime import OrtRunner

    model = load(args.model)
    feeds = feeds_from_args(args, model, 1)[0]
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


def _safe_file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "output"
