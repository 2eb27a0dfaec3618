"""Model inputs from ``--input NAME=FILE.npy`` and ``--shape``: the given arrays, the rest
generated from a seed (``run`` and ``compare``)."""
from __future__ import annotations

import argparse

import numpy as np
import onnx_ir as ir

from onnxc.errors import OnnxcError


def feeds_from_args(args: argparse.Namespace, model: ir.Model, samples: int) -> list[dict[str, np.ndarray]]:
    """The given inputs when they cover the model; else ``samples`` sets of generated inputs
    (one when some inputs were given), the given arrays in each."""
    from onnxc.inputs import check_input_shapes, parse_shape_overrides, seeded_feeds

    given = {}
    for item in args.input or []:
        name, sep, file = item.partition("=")
        if not sep:
            raise OnnxcError(f"bad --input {item!r}: expected NAME=FILE.npy")
        try:
            given[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise OnnxcError(f"cannot read input {file!r}: {error}") from None
    check_input_shapes(model, {name: array.shape for name, array in given.items()})
    missing = {v.name for v in model.graph.inputs if not v.is_initializer()} - set(given)
    if not missing:
        return [given]
    overrides = {**{k: list(v.shape) for k, v in given.items()}, **parse_shape_overrides(args.shape)}
    generated = seeded_feeds(model, overrides, samples=samples if not given else 1, seed=args.seed)
    return [{**feeds, **given} for feeds in generated]
