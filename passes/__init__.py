"""Built-in passes. Importing this package registers them.

One module or package per family: ``cleanup``, ``constant_folding``, ``fusion``, ``opset`` and ``weights`` are
lossless; ``quantize`` is lossy. Families never import each other: what two share is in the core
(:mod:`onnxc.graph`, :mod:`onnxc.shapes`, :mod:`onnxc.irutil`); ``tests/compiler/test_pass_imports.py`` checks it.
"""
from onnxc.passes import (  # noqa: F401 - imported to register the passes
    cleanup, constant_folding, fusion, lowrank, opset, prune, quantize, sparsify, weights,
)

# The default pipeline: these run together until none changes the model, then the final ones once.
DEFAULT_FIXED_POINT: tuple[str, ...] = (
    "lift-constants",
    "eliminate-identity",
    "fold-constants",
    "fold-batchnorm",
    "fold-affine",
    "fold-pad-into-conv",
    "matmul-add-to-gemm",
    "fold-transpose",
    "fold-reshape",
    "fold-squeeze-unsqueeze",
    "fuse-layernorm",
    "fuse-gelu",
    "cse",
    "dedup-initializers",
    "remove-unused",
)
DEFAULT_FINAL: tuple[str, ...] = ("infer-shapes", "toposort", "initializer-inputs")
