"""What passes consult about ONNX ops and models: domains, opsets, dims, held graphs."""
from __future__ import annotations

from collections.abc import Iterator

import onnx
import onnx_ir as ir

from onnxc.errors import FeatureNotImplementedError
from onnxc.io import weight_bytes

# The standard ONNX domain has two spellings; a node or an opset import may use either.
DEFAULT_DOMAINS = ("", "ai.onnx")

# Ops whose every run may give different numbers: never merged, folded or removed as duplicates.
NON_DETERMINISTIC_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"}
)

# The converter works on one serialized ModelProto, which protobuf caps at 2 GB.
MAX_CONVERTIBLE_BYTES = 1_800_000_000


def default_opset(model: ir.Model, missing: int = 0) -> int:
    """The model's opset for the standard ONNX domain, imported as ``""`` or ``"ai.onnx"``.

    ``missing`` is returned when the model imports neither (schema lookups want 1, version
    comparisons 0).
    """
    for domain in DEFAULT_DOMAINS:
        if domain in model.opset_imports:
            return int(model.opset_imports[domain])
    return missing


def upgrade_opset(model: ir.Model, version: int) -> bool:
    """Convert ``model`` in place to ONNX opset ``version`` when it imports an older one; True when it did.

    Exporters such as Paddle2ONNX still write opset 11 and 12, while per-channel QuantizeLinear
    needs 13. ONNX's converter rewrites every op whose signature changed between the versions
    (Squeeze, Unsqueeze and Split axes turned into inputs, Softmax's axis semantics, ...); what
    it cannot convert is refused with its reason.
    """
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


def subgraphs(node: ir.Node) -> Iterator[ir.Graph]:
    """The graphs held in the node's attributes (If branches, Loop/Scan bodies)."""
    for attr in node.attributes.values():
        if attr.is_ref():
            continue
        if attr.type == ir.AttributeType.GRAPH:
            yield attr.as_graph()
        elif attr.type == ir.AttributeType.GRAPHS:
            yield from attr.as_graphs()


def known_dim(dim: int | ir.SymbolicDim) -> int | None:
    """A dim's size when it is known, else None.

    Some exporters (older Paddle2ONNX) write ``-1`` as the size of a dynamic dim: it is unknown,
    not a size, and must never be folded into shape arithmetic.
    """
    return dim if isinstance(dim, int) and dim >= 0 else None
