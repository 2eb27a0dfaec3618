"""Raising the model's ONNX opset with ONNX's own version converter.

Exporters such as Paddle2ONNX still write opset 11 and 12, while per-channel QuantizeLinear needs
13: the quantize pass upgrades such a model through :func:`upgrade_opset` rather than refusing it.
ONNX's converter rewrites every op whose signature changed between the versions (Squeeze,
Unsqueeze and Split axes turned into inputs, Softmax's axis semantics, ...); what it cannot
convert is refused with its reason.
"""
from __future__ import annotations

import onnx
import onnx_ir as ir

from onnxc.errors import FeatureNotImplementedError
from onnxc.io import weight_bytes
from onnxc.pass_base import Pass, PassResult, option
from onnxc.passes.fusion import default_opset
from onnxc.registry import register_pass

# The converter works on one serialized ModelProto, which protobuf caps at 2 GB.
MAX_CONVERTIBLE_BYTES = 1_800_000_000


def upgrade_opset(model: ir.Model, version: int) -> bool:
    """Convert ``model`` in place to ONNX opset ``version`` when it imports an older one; True when it did."""
    current = default_opset(model)
    if current >= version:
        return False
    if weight_bytes(model) > MAX_CONVERTIBLE_BYTES:
        raise FeatureNotImplementedError(
            f"upgrading opset {current} to {version} of a model with over 1.8 GB of weights is not implemented "
            "(ONNX's version converter needs the whole model in one protobuf); convert it beforehand")
    try:
        converted = onnx.version_converter.convert_version(ir.to_proto(model), version)
    except Exception as error:  # noqa: BLE001 - the converter raises RuntimeError/ValueError/ConvertError
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise FeatureNotImplementedError(
            f"ONNX's version converter cannot take this model from opset {current} to {version}: {reason}") from None
    upgraded = ir.serde.deserialize_model(converted)
    model.graph = upgraded.graph
    model.ir_version = max(model.ir_version, upgraded.ir_version)
    return True


@register_pass
class UpgradeOpset(Pass):
    """Convert the model to a newer ONNX opset (ONNX's version converter); a newer model is left as it is."""

    name = "upgrade-opset"
    version: int = option(13, "the ONNX opset to convert to")

    def call(self, model: ir.Model) -> PassResult:
        return PassResult(model, upgrade_opset(model, self.version))
