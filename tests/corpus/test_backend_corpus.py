"""ONNX's backend-test cases through the default pipeline (onnxc.models_zoo.backend_cases).

Every case onnx's own case code generates, plus the model cases its wheel ships with data, is
compiled through ``default``; the written model must pass the full checker and ORT's outputs on
it must equal the expected outputs within the case's tolerance. Cases ORT cannot run, or runs to
other numbers, on the original model (or whose original fails the checker) are skipped with
that reason. The cases listed in
KNOWN_ONNXC_BUGS fail today because of onnxc and are strict xfails: fixing one makes its test
XPASS and fail until it is removed from the list.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest

from onnxc.models_zoo import backend_cases

# name -> why onnxc fails it today. Empty since the IR-3 fix (folded initializers are now graph
# inputs in IR < 4 models: test_PixelShuffle, test_operator_repeat, ..._dim_overflow failed the
# checker until then).
KNOWN_ONNXC_BUGS: dict[str, str] = {}

_CASES = backend_cases.node_cases() + backend_cases.data_cases()


def _param(case: backend_cases.BackendCase):
    marks = [pytest.mark.xfail(reason=KNOWN_ONNXC_BUGS[case.name], strict=True)] if case.name in KNOWN_ONNXC_BUGS else []
    return pytest.param(case, id=f"{case.kind}/{case.name}", marks=marks)


@pytest.fixture(autouse=True, scope="module")
def _quiet_pass_logs():
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def test_the_corpus_covers_onnx_cases():
    kinds = {case.kind for case in _CASES}
    assert kinds == {"node", "simple", "pytorch-converted", "pytorch-operator"}
    assert sum(case.kind == "node" for case in _CASES) > 1500
    assert len({case.name for case in _CASES}) == len(_CASES)


@pytest.mark.parametrize("case", [_param(case) for case in _CASES])
def test_backend_case_through_default_pipeline(case):
    result = backend_cases.run_case(case, "default")
    if result.status == "skipped":
        pytest.skip(result.reason)
    assert result.status == "passed", result.reason


def _relu_case(expected: np.ndarray) -> backend_cases.BackendCase:
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3] x) => (float[3] y) { y = Relu(x) }
    """)
    return backend_cases.BackendCase("relu", "node", model, (np.array([-1.0, 0.0, 2.0], np.float32),), (expected,), 1e-3, 1e-7)


def test_run_case_judges_against_expected_outputs():
    assert backend_cases.run_case(_relu_case(np.array([0.0, 0.0, 2.0], np.float32))).status == "passed"
    # Expected outputs ORT does not reproduce on the original say nothing about onnxc: skipped.
    wrong = backend_cases.run_case(_relu_case(np.array([0.0, 0.0, 3.0], np.float32)))
    assert wrong.status == "skipped" and "differ from the expected" in wrong.reason
    # A pipeline that cannot run is reported as a failure, with the error.
    broken = backend_cases.run_case(_relu_case(np.array([0.0, 0.0, 2.0], np.float32)), "no-such-pass")
    assert broken.status == "failed" and broken.reason.startswith("compile: PipelineError")


def test_expected_output_comparison_is_exact_where_it_must_be():
    match = backend_cases._matches
    assert match(np.array([1, 2]), np.array([1, 2]), 1e-3, 1e-7) is None
    assert "values differ" in match(np.array([1, 2]), np.array([1, 3]), 1e-3, 1e-7)
    assert "shape" in match(np.zeros(2, np.float32), np.zeros(3, np.float32), 1e-3, 1e-7)
    assert "dtype" in match(np.zeros(2, np.int64), np.zeros(2, np.int32), 1e-3, 1e-7)
    assert match(np.float32([1.0]), np.float32([1.0005]), 1e-3, 1e-7) is None
    assert "max abs difference" in match(np.float32([1.0]), np.float32([1.01]), 1e-3, 1e-7)
    assert match([np.zeros(1)], [np.zeros(1)], 1e-3, 1e-7) is None and match(None, None, 1e-3, 1e-7) is None
