"""Lossless fusion passes: fold BatchNorm/affine/Pad into Conv/Gemm, MatMul+Add, layout chains, LayerNorm/GELU.

One family, one module per kind of rule, all built on :mod:`~onnxc.passes.fusion.rewrite`:

* :mod:`~onnxc.passes.fusion.linear`: per-channel affine maps folded into Conv/ConvTranspose/Gemm
  weights, Pad into Conv, MatMul+Add into Gemm.
* :mod:`~onnxc.passes.fusion.layout`: Transpose, Reshape/Flatten and Squeeze/Unsqueeze chains.
* :mod:`~onnxc.passes.fusion.patterns`: decomposed LayerNorm and GELU into their standard ops.

Importing the package registers every fusion pass.
"""
from onnxc.passes.fusion import layout, linear, patterns  # noqa: F401 - imported to register the passes
