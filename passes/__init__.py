"""Built-in passes. Importing this package registers them.

One module per family: ``cleanup``, ``constant_folding``, ``fusion``, ``fusion_patterns`` and ``weights`` are
lossless; ``quantize`` is lossy.
"""
from onnxc.passes import cleanup, constant_folding, fusion, fusion_patterns, opset, quantize, weights  # noqa: F401 - imported to register the passes

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
