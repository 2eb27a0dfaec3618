"""Does a lowered artifact compute what the ONNX model computes? Run its :class:`Runner` and ORT
on the same feeds and judge each output against a stated bound.

Bounds, per output (``max_rel`` is the largest absolute error over the reference's largest
magnitude across all the feeds: an input on which the output is near zero everywhere, a blank
page for a text detector, does not turn a 1e-5 error into a large relative one):

- float model at f32: ``max_rel <= 1e-3``;
- float model at a reduced precision (bf16, f16): ``max_rel <= 3e-2`` (8 mantissa bits, errors
  add up over the layers);
- quantized (Q/DQ) model whose output comes out of a DequantizeLinear (through data movement
  only): ``max_abs <=`` one output quantization step, that DequantizeLinear's scale. Runtimes
  round ties and fuse requantization differently, so an activation a hair from a rounding edge
  can land one step apart; the output may then differ by a step, not more;
- quantized model whose output is computed in float from quantized inputs (a float head), or
  a model quantized with integer ops (DynamicQuantizeLinear, MatMulInteger, ConvInteger,
  QLinear*): ``rel_error <= 5e-2`` (RMS error over the output's spread,
  :mod:`onnxc.search.errors`, the measure quantize's accuracy guard bounds) and cosine >= 0.999.
  A one-step flip of an input moves such an output by an amount no scale in the graph states, at
  a few positions: PP-OCRv4's text detector on OpenVINO differs from ORT by up to 0.29 on a
  handful of its sigmoid map's pixels (rel_error 0.034), yet its mask agrees with the float
  model's as well as ORT's own int8 run does (IoU 0.974 vs 0.976). So this bound judges the bulk
  of the output, not its worst element (and a runtime may dequantize integer weights and skip
  dynamic activation quantization altogether).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from onnxc.backends.base import Feeds, Runner
from onnxc.irutil import constant_array
from onnxc.search.errors import output_errors
from onnxc.verify import compare_outputs

FLOAT_RTOL = 1e-3
REDUCED_PRECISION_RTOL = 3e-2
QUANTIZED_RTOL = 5e-2
QUANTIZED_MIN_COSINE = 0.999
REDUCED_PRECISIONS = frozenset({"bf16", "f16", "fp16"})
QUANTIZING_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                            "ConvInteger", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"})
# Ops that move or select values without changing them: an output behind them keeps its step.
_PASS_THROUGH = frozenset({"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "MaxPool",
                           "Slice", "Gather", "Split", "Concat", "Expand", "Tile", "DepthToSpace", "SpaceToDepth"})


@dataclasses.dataclass(frozen=True)
class OutputCheck:
    """One output's error against ORT and the bound it was held to."""

    name: str
    max_abs: float
    max_rel: float
    cosine: float
    rule: str
    passed: bool
    rel_error: float | None = None  # RMS error over the output's spread (float outputs)


@dataclasses.dataclass(frozen=True)
class Verification:
    feeds: int
    outputs: list[OutputCheck]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.outputs)

    def lines(self) -> list[str]:
        return [f"{c.name}: max abs {c.max_abs:.3g}  rel {c.max_rel:.3g}  "
                + ("" if c.rel_error is None else f"rel_error {c.rel_error:.3g}  ")
                + f"cosine {c.cosine:.6f}  [{c.rule}] {'ok' if c.passed else 'MISMATCH'}" for c in self.outputs]

    def as_dict(self) -> dict:
        return {"feeds": self.feeds, "passed": self.passed, "outputs": [dataclasses.asdict(c) for c in self.outputs]}


def verify_runner(runner: Runner, model: ir.Model, feeds: Sequence[Feeds], *, precision: str | None = None) -> Verification:
    """Run ``runner`` and ORT (on ``model``) on ``feeds`` and judge every output (module docstring)."""
    from onnxc.runtime import OrtRunner

    with OrtRunner(model, label="ONNX model") as reference_runner:
        reference = [reference_runner.run(feed) for feed in feeds]
    candidate = [runner.run(feed) for feed in feeds]
    steps = output_steps(model)
    quantized = _is_quantized(model)
    checks = []
    spread_errors = {error.name: error.rel_error for error in output_errors(reference, candidate).outputs}
    for diff in compare_outputs(reference, candidate).outputs:
        scale = _largest_magnitude(reference, diff.name)
        max_rel = diff.max_abs / scale if scale > 0 else (0.0 if diff.max_abs == 0 else math.inf)
        step = steps.get(diff.name)
        if quantized and step is not None:
            rule, passed = f"<= one output step {step:.3g}", diff.max_abs <= step
        elif quantized:
            # Integer outputs (indices) have no spread to measure against: their largest error counts.
            rel_error = spread_errors.get(diff.name, max_rel)
            rule = f"float output of a quantized model: rel_error <= {QUANTIZED_RTOL:g}, cosine >= {QUANTIZED_MIN_COSINE:g}"
            passed = rel_error <= QUANTIZED_RTOL and diff.cosine >= QUANTIZED_MIN_COSINE
        else:
            rtol = REDUCED_PRECISION_RTOL if (precision or "").lower() in REDUCED_PRECISIONS else FLOAT_RTOL
            rule, passed = f"rel <= {rtol:g}", max_rel <= rtol
        checks.append(OutputCheck(diff.name, diff.max_abs, max_rel, diff.cosine, rule, passed,
                                  spread_errors.get(diff.name)))
    return Verification(len(feeds), checks)


def _largest_magnitude(outputs: Sequence[dict[str, np.ndarray]], name: str) -> float:
    """The largest finite |value| of output ``name`` over all feeds (0 for non-numeric outputs)."""
    largest = 0.0
    for output in outputs:
        value = np.asarray(output[name])
        if np.issubdtype(value.dtype, np.number) and value.size:
            finite = np.abs(value[np.isfinite(value)])
            largest = max(largest, float(finite.max()) if finite.size else 0.0)
    return largest


def _is_quantized(model: ir.Model) -> bool:
    """Whether any node (subgraphs included) quantizes: Q/DQ or an integer op."""
    return any(node.op_type in QUANTIZING_OPS or node.op_type.startswith(("QLinear", "QGemm"))
               for node in ir.traversal.RecursiveGraphIterator(model.graph))


def output_steps(model: ir.Model) -> dict[str, float | None]:
    """Each graph output's quantization step: the scale of the DequantizeLinear it comes out of
    (through data movement only; the largest scale when per channel), else None."""
    steps: dict[str, float | None] = {}
    for output in model.graph.outputs:
        value, step = output, None
        while value is not None and value.producer() is not None:
            node = value.producer()
            if node.op_type == "DequantizeLinear":
                scale = constant_array(node.inputs[1])
                step = None if scale is None else float(np.abs(scale).max())
                break
            if node.op_type not in _PASS_THROUGH or not node.inputs:
                break
            value = node.inputs[0]
        steps[output.name] = step
    return steps
