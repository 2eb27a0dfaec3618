"""ONNX's backend-test models with their expected outputs, as a corpus for onnxc's pipelines.

The onnx wheel ships the code that builds its node test cases (``onnx.backend.test.case``) but
not their data folder, so :func:`node_cases` runs that code: each case is a one-node model (or
the function-expanded graph of a function op), its inputs and the outputs numpy computed. The
wheel's ``data/simple``, ``data/pytorch-converted`` and ``data/pytorch-operator`` folders do ship
(small models with ``test_data_set_*`` protobufs) and :func:`data_cases` reads them.

:func:`run_case` compiles one case through a pipeline and judges it as a backend test does:
the written model must pass the full ONNX checker and ORT's outputs on it must equal the
expected outputs within the case's tolerance. A case ORT cannot run, or runs to other numbers,
on the *original* model, or whose original fails the full checker itself, is skipped with that
reason: it says nothing about onnxc.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.numpy_helper

_DATA_FOLDERS = ("simple", "pytorch-converted", "pytorch-operator")


@dataclass(frozen=True)
class BackendCase:
    """One backend test: ``model`` fed ``inputs`` must give ``outputs`` within rtol/atol."""

    name: str
    kind: str  # "node" (generated) or the data folder's name
    model: onnx.ModelProto
    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]
    rtol: float
    atol: float


@dataclass(frozen=True)
class CaseResult:
    name: str
    status: str  # "passed", "failed" (an onnxc bug) or "skipped"
    reason: str = ""


def node_cases() -> list[BackendCase]:
    """Every node test case onnx's case code generates (about 1900 with onnx 1.23), in a fixed
    order. Generating them takes ~10 s of CPU: numpy computes every expected output."""
    from onnx.backend.test.case import node

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # The case code casts infinities and divides by zero on purpose.
        warnings.simplefilter("ignore")
        cases = node.collect_testcases()
    return sorted(
        (BackendCase(case.name, "node", case.model, tuple(map(_as_value, case.data_sets[0][0])),
                     tuple(map(_as_value, case.data_sets[0][1])), case.rtol, case.atol)
         for case in cases if case.model is not None and case.data_sets),
        key=lambda case: case.name,
    )


def _as_value(value: Any) -> Any:
    """What ORT takes and returns: arrays (not TensorProtos or numpy scalars), lists, None."""
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    if isinstance(value, np.generic):
        return np.asarray(value)
    if isinstance(value, list):
        return [_as_value(item) for item in value]
    return value


def _read_tensor_file(path: Path) -> Any:
    """A test_data_set protobuf: a TensorProto, else a SequenceProto, OptionalProto or MapProto."""
    data = path.read_bytes()
    tensor = onnx.TensorProto()
    tensor.ParseFromString(data)
    if tensor.data_type != onnx.TensorProto.UNDEFINED or tensor.dims:
        return onnx.numpy_helper.to_array(tensor)
    for proto_type in (onnx.SequenceProto, onnx.OptionalProto, onnx.MapProto):
        proto = proto_type()
        with contextlib.suppress(Exception):
            proto.ParseFromString(data)
            converter = {onnx.SequenceProto: onnx.numpy_helper.to_list, onnx.OptionalProto: onnx.numpy_helper.to_optional,
                         onnx.MapProto: onnx.numpy_helper.to_dict}[proto_type]
            return converter(proto)
    return onnx.numpy_helper.to_array(tensor)


def data_cases() -> list[BackendCase]:
    """The model cases the onnx wheel ships with their data (``data/simple`` and ``data/pytorch-*``)."""
    root = Path(onnx.__file__).parent / "backend" / "test" / "data"
    cases = []
    for folder in _DATA_FOLDERS:
        for case_dir in sorted((root / folder).glob("test_*")):
            model_file, data_dir = case_dir / "model.onnx", case_dir / "test_data_set_0"
            if not model_file.is_file() or not data_dir.is_dir():
                continue
            inputs = tuple(_read_tensor_file(p) for p in sorted(data_dir.glob("input_*.pb"), key=_index))
            outputs = tuple(_read_tensor_file(p) for p in sorted(data_dir.glob("output_*.pb"), key=_index))
            # onnx's runner uses these tolerances for the model cases (rtol 1e-3, atol 1e-7).
            cases.append(BackendCase(case_dir.name, folder, onnx.load(str(model_file)), inputs, outputs, 1e-3, 1e-7))
    return cases


def _index(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


def _feeds(model: onnx.ModelProto, inputs: Sequence[Any]) -> dict[str, Any]:
    initializers = {init.name for init in model.graph.initializer}
    names = [value.name for value in model.graph.input if value.name not in initializers]
    return dict(zip(names, inputs))


def _matches(expected: Any, actual: Any, rtol: float, atol: float) -> str | None:
    """None when ``actual`` equals ``expected`` as onnx's backend runner compares them, else why not."""
    if expected is None or actual is None:
        return None if expected is None and actual is None else "one of the outputs is None"
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"sequence of {len(expected)} expected, got {type(actual).__name__}"
        for e, a in zip(expected, actual):
            why = _matches(e, a, rtol, atol)
            if why:
                return why
        return None
    if isinstance(expected, dict):
        return None if expected.keys() == actual.keys() and all(
            _matches(expected[k], actual[k], rtol, atol) is None for k in expected) else "map differs"
    expected, actual = np.asarray(expected), np.asarray(actual)
    if expected.dtype != actual.dtype and not (expected.dtype.kind in "fc" and actual.dtype.kind in "fc"):
        return f"dtype {actual.dtype} instead of {expected.dtype}"
    if expected.shape != actual.shape:
        return f"shape {actual.shape} instead of {expected.shape}"
    if expected.dtype.kind in "OSU":
        return None if np.array_equal(expected, actual) else "strings differ"
    if expected.dtype.kind in "fc":
        try:
            np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)
        except AssertionError:
            diff = np.abs(actual.astype(np.complex128 if expected.dtype.kind == "c" else np.float64)
                          - expected.astype(np.complex128 if expected.dtype.kind == "c" else np.float64))
            return f"max abs difference {np.nanmax(diff):.3g}"
        return None
    return None if np.array_equal(expected, actual) else "values differ"


def _ort_outputs(path_or_bytes: str | bytes, feeds: dict[str, Any]) -> list[Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path_or_bytes, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def run_case(case: BackendCase, pipeline: str = "default") -> CaseResult:
    """Compile ``case`` through ``pipeline`` and judge the result (see the module docstring)."""
    import onnxc
    from onnxc.errors import OnnxcError

    feeds = _feeds(case.model, case.inputs)
    try:
        onnx.checker.check_model(case.model, full_check=True)
    except Exception as error:  # noqa: BLE001 - onnxc cannot be held to a checker its input fails
        return CaseResult(case.name, "skipped", "the original fails the ONNX checker: " + _first_line(error))
    try:
        original = _ort_outputs(case.model.SerializeToString(), feeds)
    except Exception as error:  # noqa: BLE001 - any ORT failure on the original skips the case
        return CaseResult(case.name, "skipped", _ort_refusal(error))
    for expected, actual in zip(case.outputs, original):
        why = _matches(expected, actual, case.rtol, case.atol)
        if why:
            return CaseResult(case.name, "skipped", "ORT's outputs on the original differ from the expected ones")
    with tempfile.TemporaryDirectory(prefix="onnxc-backend-") as tmp:
        source, target = Path(tmp) / "model.onnx", Path(tmp) / "compiled.onnx"
        onnx.save(case.model, str(source))
        try:
            model = onnxc.load(source)
        except OnnxcError as error:
            return CaseResult(case.name, "failed", "load: " + _first_line(error))
        try:
            onnxc.compile(model, pipeline)
            onnxc.save(model, target)
        except Exception as error:  # noqa: BLE001 - a compile failure on a valid model is onnxc's
            return CaseResult(case.name, "failed", f"compile: {type(error).__name__}: {_first_line(error)}")
        try:
            onnx.checker.check_model(str(target), full_check=True)
        except Exception as error:  # noqa: BLE001
            return CaseResult(case.name, "failed", "checker: " + _first_line(error))
        try:
            compiled = _ort_outputs(str(target), feeds)
        except Exception as error:  # noqa: BLE001
            return CaseResult(case.name, "failed", "ORT cannot run the output: " + _first_line(error))
    if len(compiled) != len(case.outputs):
        return CaseResult(case.name, "failed", f"{len(compiled)} outputs instead of {len(case.outputs)}")
    for index, (expected, actual) in enumerate(zip(case.outputs, compiled)):
        why = _matches(expected, actual, case.rtol, case.atol)
        if why:
            return CaseResult(case.name, "failed", f"output {index}: {why}")
    return CaseResult(case.name, "passed")


def _ort_refusal(error: BaseException) -> str:
    """Why ORT could not run an original model, as a reason shared by many cases, then the detail."""
    text = _first_line(error)
    if "NOT_IMPLEMENTED" in text:
        kind = "ORT has no kernel for it"
    elif "Numpy_type" in text or "Unable to handle object" in text:
        kind = "ORT's Python API cannot feed its input type"
    elif "ai.onnx.preview" in text or "is under development" in text or "opset" in text.lower():
        kind = "ORT does not support its opset or domain"
    else:
        kind = "ORT fails on it"
    return f"{kind}: {text}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]
