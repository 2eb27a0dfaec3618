"""Lossless fusion passes: fold BatchNorm/affine/Pad into Conv/Gemm, MatMul+Add, layout chains, LayerNorm/GELU."""
