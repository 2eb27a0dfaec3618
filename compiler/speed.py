"""Never slower, for the whole output: when a pass promises speed, the compiled model is timed
against the model as it came, and the input's form comes back where it is faster.

A pass that leaves everything float still hands over what the lossless passes before it did,
and those rewrites are not always faster on the target (a Paddle2ONNX MobileNetV3 classifier
came back 0.93x the speed of its input with quantize keeping it float). Timing the two whole
models is the only judge that sees every pass together.
"""
from __future__ import annotations

import onnx
import onnx_ir as ir

from onnxc.context import Feeds
from onnxc.io import weight_bytes
from onnxc.runtime import IN_MEMORY_LIMIT_BYTES
from onnxc.targets import get_target

# The compiled model must be slower than the input by more than this before the input comes
# back: below it, timing noise on a shared machine would decide, and so make output unstable.
SLOWER_MARGIN = 0.05


def snapshot(model: ir.Model) -> onnx.ModelProto | None:
    """A copy of ``model`` to time and restore, as protobuf so the passes cannot touch it; None
    when it is too large to hold twice."""
    if weight_bytes(model) > IN_MEMORY_LIMIT_BYTES:
        return None
    return ir.serde.serialize_model(model)


def keep_faster(model: ir.Model, before: onnx.ModelProto, feed: Feeds, target: str) -> dict:
    """Time ``model`` against ``before`` on ``target``; restore ``before`` into ``model`` (in place)
    when the compiled model is slower by more than the margin. Returns what was measured and kept."""
    timed_on = get_target(target)
    usable, why = timed_on.can_time()
    if not usable:
        return {"kept": "output", "reason": f"not timed on {target}: {why}"}
    original = ir.serde.deserialize_model(before)
    times = timed_on.latencies({"input": original, "output": model}, feed)
    ratio = times["output"] / times["input"]
    result = {"input_ms": round(times["input"] * 1e3, 3), "output_ms": round(times["output"] * 1e3, 3),
              "speedup": round(1.0 / ratio, 3), "margin": SLOWER_MARGIN}
    if ratio <= 1.0 + SLOWER_MARGIN:
        return {**result, "kept": "output"}
    model.graph = original.graph
    model.ir_version = original.ir_version
    model.functions.clear()
    model.functions.update(original.functions)
    return {**result, "kept": "input",
            "reason": f"the compiled model ran {ratio:.2f}x the input's time on {target}: the input comes back unchanged"}
