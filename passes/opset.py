"""Raising the model's ONNX opset with ONNX's own version converter, as a pass.

The conversion itself is :func:`onnxc.graph.ops.upgrade_opset`, which the quantize pass also
uses to take an older model to the opset per-channel QuantizeLinear needs.
"""
from __future__ import annotations

import onnx_ir as ir

from onnxc.graph.ops import upgrade_opset
from onnxc.pass_base import Pass, PassResult, option
from onnxc.registry import register_pass


@register_pass
class UpgradeOpset(Pass):
    """Convert the model to a newer ONNX opset (ONNX's version converter); a newer model is left as it is."""

    name = "upgrade-opset"
    version: int = option(13, "the ONNX opset to convert to")

    def call(self, model: ir.Model) -> PassResult:
        return PassResult(model, upgrade_opset(model, self.version))
