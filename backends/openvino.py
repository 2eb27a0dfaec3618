"""OpenVINO (CPU) backend: the artifact is OpenVINO IR (``model.xml`` + ``model.bin``), run by
the CPU plugin.

- The ONNX model is read by OpenVINO's ONNX frontend (``Core.read_model``), which turns QDQ into
  FakeQuantize; the CPU plugin then runs real INT8 kernels (the QOperator format does not
  convert, so quantize for this target emits QDQ). ``openvino.convert_model`` would do the same
  conversion through the ``ovc`` tool, whose telemetry forks a process per event (17 per call
  measured here, strace -f) unless the user opted out machine-wide; reading through the frontend
  sends nothing and leaves the user's telemetry choice alone.
- On CPUs with AVX-512 BF16 the plugin runs FP32 models in bf16 unless told otherwise, so the
  inference precision is always set (``f32`` by default, exact enough to verify against ORT)
  and the precision the compiled model reports is what the artifact records.
- f32 also switches off the plugin's dynamic quantization of activations (see
  :func:`compile_for_cpu`), so f32 computes what the ONNX graph says.
- Which layers really run in INT8 is read from the compiled model's runtime graph
  (``runtimePrecision`` per ``layerType``), not inferred from the IR.
"""
from __future__ import annotations

import collections
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxc.backends.base import Artifact, Feeds, LowerOptions, module_available, require_module
from onnxc.errors import OnnxcError
from onnxc.inputs import check_input_shapes

INSTALL = "pip install 'onnxc[openvino]'"
DEFAULT_PRECISION = "f32"
# onnxc's precision names -> OpenVINO's INFERENCE_PRECISION_HINT values.
PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}
INT8_PRECISIONS = ("i8", "u8")
DYNAMIC_QUANTIZATION = "DYNAMIC_QUANTIZATION_GROUP_SIZE"
# Runtime-graph entries that are bookkeeping, not compute.
_NOT_LAYERS = frozenset({"Input", "Output", "Const"})
# Ops of an ov.Model whose tensors are given, not computed: nothing to compare there.
_NOT_COMPUTED = frozenset({"Parameter", "Constant", "Result"})
# Layers that move or convert values: an int8 one (a u8 image reordered, int8 weights converted
# to float) says nothing about INT8 arithmetic, so int8_layers leaves them out.
_MOVEMENT = frozenset({"Reorder", "Convert", "Reshape", "Transpose", "Gather", "GatherND", "GatherElements",
                       "Concatenation", "Split", "StridedSlice", "Broadcast", "Tile", "Pad", "ShapeOf"})


class OpenVinoConversionError(OnnxcError):
    """OpenVINO cannot convert or compile the model; the message names the ops and why."""


def _openvino():
    require_module("openvino", "OpenVINO", INSTALL)
    import openvino

    return openvino


class OpenVinoBackend:
    """Lowers ONNX to OpenVINO IR; runs it on the CPU plugin with an explicit precision."""

    name = "openvino"

    def available(self) -> tuple[bool, str]:
        return module_available("openvino", "OpenVINO", INSTALL)

    def lower(self, model: ir.Model, out_dir: Path, options: LowerOptions | None = None) -> Artifact:
        ov = _openvino()
        options = options or LowerOptions()
        precision = hint_for(options.precision)
        check_input_shapes(model, options.shapes or {})
        ov_model = read_onnx(model)
        if options.shapes:
            _reshape(ov_model, options.shapes)
        _name_unnamed_ops(ov_model)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        xml = out_dir / "model.xml"
        with tempfile.TemporaryDirectory(prefix=".onnxc-staged-", dir=out_dir) as staged:
            ov.save_model(ov_model, str(Path(staged) / xml.name), compress_to_fp16=False)
            # The weights first: a model.xml in place always has its model.bin.
            for name in (xml.with_suffix(".bin").name, xml.name):
                os.replace(Path(staged) / name, out_dir / name)
        compiled = compile_for_cpu(ov_model, precision, options.threads)
        runtime = runtime_precisions(compiled)
        metadata: dict[str, Any] = {
            "openvino": ov.get_version(),
            "device": "CPU",
            "precision_hint": precision,
            "precision_ran": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
            "threads": options.threads,
            "dynamic_quantization_group_size": _property(compiled, DYNAMIC_QUANTIZATION),
            "shapes": {name: list(shape) for name, shape in (options.shapes or {}).items()},
            "outputs": [value.name for value in model.graph.outputs],
            "runtime_precision": runtime,
            "int8_layers": int8_layers(runtime),
        }
        artifact = Artifact(self.name, out_dir, [xml, xml.with_suffix(".bin")], metadata)
        artifact.write_manifest()
        return artifact

    def load(self, artifact: Artifact) -> OpenVinoRunner:
        ov = _openvino()
        xml = next(f for f in artifact.files if f.suffix == ".xml")
        ov_model = ov.Core().read_model(str(xml))
        metadata = artifact.metadata
        return OpenVinoRunner.compile(ov_model, metadata.get("precision_hint", DEFAULT_PRECISION),
                                      metadata.get("threads"), metadata.get("outputs"))


class OpenVinoRunner:
    """One compiled model and its infer request; outputs by the ONNX model's output names.

    Made by :meth:`compile`, it keeps the OpenVINO model it was compiled from, so that
    :meth:`exposing` can compile it again with values inside it kept as outputs
    (:class:`onnxc.backends.base.ExposingRunner`).
    """

    def __init__(self, compiled, output_names: list[str] | None = None, source=None):
        """``source``: (ov.Model, precision, threads) ``compiled`` came from, or None."""
        self.compiled = compiled
        self._source = source
        self._output_names = list(output_names or ())
        self._request = compiled.create_infer_request()
        wanted = set(self._output_names)
        # An OpenVINO output carries every name its tensor had (an Identity's input and output are
        # one tensor there): each wanted ONNX name among them is returned, else any name.
        self._outputs = [(port, sorted(port.get_names() & wanted) or [port.get_any_name()]) for port in compiled.outputs]
        self.input_names = [port.get_any_name() for port in compiled.inputs]

    @classmethod
    def compile(cls, ov_model, precision: str, threads: int | None, output_names: list[str] | None = None) -> OpenVinoRunner:
        return cls(compile_for_cpu(ov_model, precision, threads), output_names, (ov_model, precision, threads))

    def exposable(self) -> set[str]:
        if self._source is None:
            return set()
        return {name for op in self._source[0].get_ordered_ops() if op.get_type_name() not in _NOT_COMPUTED
                for output in op.outputs() for name in output.get_names()}

    def exposing(self, names: Sequence[str]) -> OpenVinoRunner:
        if self._source is None:
            raise OnnxcError("this OpenVINO runner was not made by OpenVinoRunner.compile: it cannot keep more values")
        ov_model, precision, threads = self._source
        ov_model = ov_model.clone()
        ov_model.add_outputs(list(names))
        return OpenVinoRunner.compile(ov_model, precision, threads, [*self._output_names, *names])

    def fused_with(self, node: str) -> list[str]:
        """The original op names of the runtime layers that run ``node`` (the CPU plugin's
        ``originalLayersNames``; OpenVINO names the ops it splits a node into ``node/...``)."""
        names: list[str] = []
        for op in self.compiled.get_runtime_model().get_ops():
            layer = op.get_rt_info()["originalLayersNames"].astype(str).split(",")
            if any(name == node or name.startswith(node + "/") for name in layer):
                names.extend(name for name in layer if name not in names)
        return names

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        missing = [name for name in self.input_names if name not in feeds]
        if missing:
            raise OnnxcError(f"no value for the model's input {missing[0]!r} (inputs: {', '.join(self.input_names)})")
        try:
            results = self._request.infer({name: feeds[name] for name in self.input_names})
        except RuntimeError as error:
            raise OnnxcError(f"OpenVINO failed to run the model: {_summary(error)}") from None
        # The request reuses its buffers on the next call: copy out.
        return {name: np.array(results[port]) for port, names in self._outputs for name in names}

    def close(self) -> None:
        self._request = None
        self.compiled = None
        self._source = None


def hint_for(precision: str | None) -> str:
    """OpenVINO's INFERENCE_PRECISION_HINT for onnxc's precision name (None: f32)."""
    if precision is None:
        return DEFAULT_PRECISION
    hint = PRECISIONS.get(precision.lower())
    if hint is None:
        raise OnnxcError(f"OpenVINO has no precision {precision!r}; choose one of {', '.join(sorted(set(PRECISIONS)))}")
    return hint


def read_onnx(model: ir.Model | str | Path):
    """The OpenVINO model of an ONNX model (in memory or a file); one line when it does not convert."""
    ov = _openvino()
    from onnxc.io import save

    try:
        if isinstance(model, ir.Model):
            # The frontend reads files (and their external data); the folder goes once it is read.
            with tempfile.TemporaryDirectory(prefix="onnxc-openvino-") as tmp:
                path = Path(tmp) / "model.onnx"
                save(model, path)
                return ov.Core().read_model(str(path))
        return ov.Core().read_model(str(model))
    except RuntimeError as error:
        raise OpenVinoConversionError(f"OpenVINO cannot convert the model: {_summary(error)}") from None


def compile_for_cpu(ov_model, precision: str, threads: int | None):
    """The model compiled for the CPU plugin with an explicit precision (and threads when given).

    At f32 the plugin's dynamic quantization is off too: by default it quantizes the activations
    of FullyConnected layers with int8/int4 weights in groups of 32, which moved a weight-only
    int8 MiniLM's output by 8.3e-3 relative to ORT (5.9e-7 with it off).
    """
    ov = _openvino()
    core = ov.Core()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if precision == "f32" and DYNAMIC_QUANTIZATION in core.get_property("CPU", "SUPPORTED_PROPERTIES"):
        config[DYNAMIC_QUANTIZATION] = 0
    try:
        return core.compile_model(ov_model, "CPU", config)
    except RuntimeError as error:
        raise OpenVinoConversionError(f"OpenVINO's CPU plugin cannot compile the model: {_summary(error)}") from None


def _property(compiled, name: str) -> Any:
    """A compiled model's property as plain data; None where this OpenVINO has no such property."""
    if name not in compiled.get_property("SUPPORTED_PROPERTIES"):
        return None
    value = compiled.get_property(name)
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def runtime_precisions(compiled) -> dict[str, dict[str, int]]:
    """How many runtime layers of each type run in each precision, from the executed graph."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str)
        if layer not in _NOT_LAYERS:
            counts[layer][info["runtimePrecision"].astype(str)] += 1
    return {layer: dict(sorted(counter.items())) for layer, counter in sorted(counts.items())}


def int8_layers(runtime: dict[str, dict[str, int]]) -> dict[str, int]:
    """Runtime compute layers running in i8/u8, by layer type (data movement left out)."""
    counts = {layer: sum(n for precision, n in by_precision.items() if precision in INT8_PRECISIONS)
              for layer, by_precision in runtime.items() if layer not in _MOVEMENT}
    return {layer: n for layer, n in counts.items() if n}


def openvino_latencies(models: dict, feed: dict, *, rounds: int = 5, calls_per_round: int = 5,
                       label: str = "model", threads: int | None = None,
                       precision: str = DEFAULT_PRECISION,
                       clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Seconds per run of each ``ir.Model`` (or .onnx file) on OpenVINO's CPU plugin with the same
    ``feed``, interleaved (:func:`onnxc.timing.compare_latency`); the signature of
    :func:`onnxc.timing.ort_latencies`. Float runs in ``precision`` (f32: what the
    INT8-vs-float decision is measured against). ``clock``: ``time.process_time`` with
    ``threads=1`` counts the CPU time of the plugin's one inference thread, which other jobs on
    the machine barely move."""
    from onnxc.timing import compare_latency

    runners = {}
    try:
        for name, model in models.items():
            try:
                ov_model = read_onnx(model)
            except OpenVinoConversionError as error:
                raise OpenVinoConversionError(f"the {name} {label}: {error}") from None
            output_names = [v.name for v in model.graph.outputs] if isinstance(model, ir.Model) else None
            runners[name] = OpenVinoRunner.compile(ov_model, hint_for(precision), threads, output_names)
        return compare_latency({name: (lambda r=r: r.run(feed)) for name, r in runners.items()},
                               rounds=rounds, calls_per_round=calls_per_round, clock=clock)
    finally:
        for runner in runners.values():
            runner.close()


def _reshape(ov_model, shapes: dict[str, tuple[int, ...]]) -> None:
    ov = _openvino()
    try:
        ov_model.reshape({name: ov.PartialShape([int(d) for d in shape]) for name, shape in shapes.items()})
    except RuntimeError as error:
        raise OpenVinoConversionError(f"OpenVINO cannot fix the input shapes {shapes}: {_summary(error)}") from None


def _name_unnamed_ops(ov_model) -> None:
    """Name the ops OpenVINO created itself (constants it split off, broadcasts) by position: their
    default names count up across the process, so the same model saved twice would differ."""
    for index, op in enumerate(ov_model.get_ordered_ops()):
        if op.get_friendly_name() == op.get_name():
            op.set_friendly_name(f"{op.get_type_name()}_at_{index}")


def _summary(error: BaseException) -> str:
    """The line of an OpenVINO exception a user can act on (it prefixes source locations and checks):
    for a failed conversion, each op with the last line of its message, else the summary."""
    lines = [line.strip(" -") for line in str(error).splitlines() if line.strip()]
    failed = [(i, line.removesuffix(" with a message:")) for i, line in enumerate(lines) if line.endswith(" with a message:")]
    if failed:
        ends = [i for i, _ in failed[1:]] + [lines.index("Summary:") if "Summary:" in lines else len(lines)]
        return "; ".join(f"{op}: {lines[end - 1]}" for (_, op), end in zip(failed, ends))
    if "Summary:" in lines:
        return "; ".join(lines[lines.index("Summary:") + 1:]) or lines[-1]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '")) and ".cpp:" not in line]
    return (useful or lines or [type(error).__name__])[-1]
