"""The lossy passes compose: prune, then lowrank, then quantize, in one pipeline on a zoo network."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import onnxc
from onnxc.analysis import parameter_count
from onnxc.context import Context
from onnxc.costs import compute_costs
from onnxc.models_zoo import build
from onnxc.search.errors import output_errors
from onnxc.verify import run_feeds


def images(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"input": rng.normal(size=(1, 3, 32, 32)).astype(np.float32)} for _ in range(count)]


@pytest.mark.slow
def test_prune_lowrank_quantize_compose_into_a_valid_smaller_int8_model():
    # Width 16 (stages of 16..128 channels): the refit's and whitening's Gram matrices of 3x3 Convs
    # are (9 C)^2, which at the paper's width 512 cost minutes, not the composition under test.
    original = ir.serde.deserialize_model(build("resnet18", image=32, width=16))
    model = ir.serde.deserialize_model(build("resnet18", image=32, width=16))
    report = onnxc.compile(model, "default,prune(macs=0.6),lowrank(ratio=0.6),quantize",
                           # The end-of-run speed check would judge a sub-millisecond model by timing noise.
                           context=Context(calibration_data=images(16, seed=1), check_speed=False))
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    details = {step.name: step.details for step in report.passes}
    assert details["lowrank"]["totals"]["layers"] > 0
    ops = {node.op_type for node in model.graph}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    macs = compute_costs(model).total_macs / compute_costs(original).total_macs
    assert macs < 0.6, macs
    # Quantized weights are int8: the float parameters left are what quantize kept float.
    float_params = sum(v.const_value.size for v in model.graph.initializers.values()
                       if v.const_value is not None and v.const_value.dtype == ir.DataType.FLOAT)
    assert float_params < 0.1 * parameter_count(original), (float_params, parameter_count(original))
    held_out = images(4, seed=2)
    error = output_errors(run_feeds(original, held_out), run_feeds(model, held_out))
    # Each step is judged against the model before it; the whole chain against the original, here:
    # reconstruction and whitening on the 16 calibration images keep the logits correlated.
    assert error.min_cosine > 0.8, error.min_cosine
