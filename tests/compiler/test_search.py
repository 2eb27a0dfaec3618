"""The core's accuracy search: bound, ranking, bisection and candidates, on numbers."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from onnxc.search.bound import Bound
from onnxc.search.errors import Measured, OutputError, output_errors
from onnxc.search.ranking import fewest_to_undo, rank_by_error
from onnxc.search.variants import Variants


def _measured(rel_error: float) -> Measured:
    return Measured((OutputError("y", max_abs=rel_error, cosine=1.0 - rel_error / 10, rel_error=rel_error),))


def test_bound_excess_is_the_worst_part_over_its_limit():
    bound = Bound(max_error=0.5, min_cosine=0.99, max_rel_error=0.1)
    # max_abs 0.2/0.5 = 0.4; 1 - cosine 0.02/0.01 = 2.0; rel 0.2/0.1 = 2.0
    assert np.isclose(bound.excess(_measured(0.2)), 2.0)
    assert bound.holds(_measured(0.05)) and not bound.holds(_measured(0.2))
    assert not Bound().active and Bound().holds(_measured(100.0))


def test_rank_by_error_orders_by_excess_then_key():
    errors = {"a": 0.05, "b": 0.3, "c": 0.3, "d": 0.2}
    ranking = rank_by_error(list("dcba"), lambda item: _measured(errors[item]), Bound(max_rel_error=0.1),
                            key="abcd".index, progress=False)
    assert [item for item, _ in ranking] == ["b", "c", "d", "a"]


def test_fewest_to_undo_bisects_to_the_smallest_count_and_its_answer_always_holds():
    calls: list[int] = []

    def monotone(k: int) -> bool:
        calls.append(k)
        return k >= 13

    assert fewest_to_undo(40, monotone) == 13
    assert len(calls) <= 8  # bisection, not a scan
    # errors that are not monotone in k: 5 holds, 6 and 7 do not; the answer still holds
    holding = {5, 8}
    assert fewest_to_undo(8, lambda k: k in holding) in holding


def _scale_model() -> ir.Model:
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y) <float[4] w = {1.0, 2.0, 3.0, 4.0}> { y = Mul(x, w) }
    """)
    return ir.serde.deserialize_model(proto)


def test_variants_write_only_what_keep_selects_and_leave_the_reference_alone():
    def write(model: ir.Model, keep: set[int] | None) -> None:
        weight = model.graph.initializers["w"]
        values = weight.const_value.numpy().copy()
        for position in range(4) if keep is None else keep:
            values[position] *= 1.5
        weight.const_value = ir.Tensor(values, name="w")

    feeds = [{"x": np.full(4, float(i + 1), np.float32)} for i in range(3)]
    variants = Variants(_scale_model(), write, feeds)
    assert variants.error(set()).max_abs == 0.0
    one = variants.error({3})
    # y[3] = 4x becomes 6x: the largest difference is 2 * 3 at x = 3
    assert np.isclose(one.max_abs, 6.0)
    assert variants.error(None).max_rel_error > one.max_rel_error
    reference = variants.run(variants.float_model())
    assert np.allclose(reference[2]["y"], [3.0, 6.0, 9.0, 12.0])
    assert output_errors(reference, reference).max_rel_error == 0.0
