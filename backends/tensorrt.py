"""TensorRT backend: the artifact is a strongly typed TensorRT engine built from the ONNX model,
with the ONNX model it was built from and the equivalent ``trtexec`` command line.

- Before building, :mod:`onnxc.backends.tensorrt_rules` checks the model against TensorRT's Q/DQ
  rules and its ONNX operator support; errors stop the build, one line per node and rule, since
  TensorRT's own parser reports only the first node it cannot import.
- The builder is NVIDIA's ``tensorrt`` where installed (a GPU machine), else ``tensorrt_rtx``
  (TensorRT for RTX), whose parser and builder run without a GPU: CI builds real engines with it
  (its kernels are compiled just in time on the GPU that runs the engine). A ``tensorrt_rtx``
  build without a GPU checks that TensorRT's parser and builder accept the model; it proves
  nothing about speed or numbers, and the manifest says so.
- The network is strongly typed (NetworkDefinitionCreationFlag.STRONGLY_TYPED): every tensor keeps
  the type the ONNX model gives it, so INT8 runs exactly where the model has Q/DQ, and an FP32
  model stays FP32. Lower precision is chosen by converting the model, not by builder flags.
- Input shapes: a fixed input gets one shape (min = opt = max); a symbolic batch axis gets a
  profile from 1 to the batch given in ``LowerOptions.shapes`` (default 16, the largest batch
  ``onnxc bench`` times by default); other symbolic axes need their shape given.

Running an engine needs an NVIDIA GPU, the runtime that built it and ``cuda-python`` for device
memory; :class:`TensorRtRunner` is written for that but has NOT been run here (no GPU on the
machines this was written on).
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.util
import re
import shlex
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxc.backends.base import Artifact, BackendUnavailableError, Feeds, LowerOptions
from onnxc.backends.tensorrt_rules import Finding, check, errors
from onnxc.errors import FeatureNotImplementedError, OnnxcError
from onnxc.inputs import check_input_shapes
from onnxc.io import save, staged_output, write_text_atomically

# Preferred first: the full TensorRT builds engines for the GPU it runs on.
BUILDER_MODULES = ("tensorrt", "tensorrt_rtx")
INSTALL = ("pip install 'onnxc[tensorrt]' on a machine with an NVIDIA GPU, "
           "or pip install 'onnxc[tensorrt-rtx]' to build engines without one")
DEFAULT_MAX_BATCH = 16
# How FP32 math runs; anything else (fp16, bf16) is a property of the model in a strongly typed engine.
PRECISIONS = ("f32", "tf32")
# Where in TensorRT's sources a logged error was raised: noise to a user.
_SOURCE_LOCATION = re.compile(r"\s*In \w+ at /\S+")
MODEL_FILE = "model.onnx"
ENGINE_FILE = "model.engine"
TRTEXEC_FILE = "trtexec.txt"
NO_GPU_NOTE = ("built without a GPU by tensorrt_rtx: a check that TensorRT's ONNX parser and builder accept the "
               "model, not proof that it runs or how fast (kernels are compiled on the GPU that runs the engine)")


class TensorRtRuleError(OnnxcError):
    """The model breaks TensorRT rules; the message lists each node and rule, one per line."""


class TensorRtBuildError(OnnxcError):
    """TensorRT's parser or builder refused the model; the message carries its errors."""


def builder_module_name() -> str | None:
    """``tensorrt`` where installed, else ``tensorrt_rtx``, else None."""
    return next((name for name in BUILDER_MODULES if importlib.util.find_spec(name) is not None), None)


def gpu_status() -> tuple[bool, str]:
    """Whether the CUDA driver sees an NVIDIA GPU, and what was found, asked through libcuda
    itself so that no CUDA Python package is needed to tell."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False, "no NVIDIA driver (libcuda.so.1 not found)"
    status = cuda.cuInit(0)
    if status != 0:
        return False, f"the CUDA driver found no usable GPU (cuInit error {status})"
    count = ctypes.c_int(0)
    status = cuda.cuDeviceGetCount(ctypes.byref(count))
    if status != 0 or count.value == 0:
        return False, "the CUDA driver reports no GPU"
    return True, f"{count.value} NVIDIA GPU(s)"


def _import_builder(name: str | None = None):
    name = name or builder_module_name()
    if name is None:
        raise BackendUnavailableError(f"TensorRT is not installed: {INSTALL}")
    return importlib.import_module(name)


class _Log:
    """TensorRT keeps one logger per process (a second one passed to a builder is ignored), so one
    logger serves every build and each build collects what was logged while it ran."""

    _instances: dict[str, Any] = {}
    _lock = threading.Lock()

    @classmethod
    def of(cls, trt) -> Any:
        with cls._lock:
            if trt.__name__ not in cls._instances:
                cls._instances[trt.__name__] = cls._make(trt)
            return cls._instances[trt.__name__]

    @staticmethod
    def _make(trt):
        class Collecting(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.messages: list[tuple[Any, str]] = []

            def log(self, severity, message):
                self.messages.append((severity, message))

            @contextlib.contextmanager
            def collect(self) -> Iterator[list[tuple[Any, str]]]:
                self.messages = []
                yield self.messages

            def at_least(self, messages, severity) -> list[str]:
                return [text for level, text in messages if level <= severity]

        return Collecting()


class TensorRtBackend:
    """Checks TensorRT's rules, builds a strongly typed engine; runs it on an NVIDIA GPU."""

    name = "tensorrt"

    def available(self) -> tuple[bool, str]:
        """Whether engines can be built here (``tensorrt`` or ``tensorrt_rtx``), with which module,
        and whether they can run (see :meth:`can_run`)."""
        module = builder_module_name()
        if module is None:
            return False, f"TensorRT is not installed: {INSTALL}"
        runs, why = self.can_run(module)
        version = getattr(importlib.import_module(module), "__version__", "?")
        return True, f"builds with {module} {version}; " + ("runs here" if runs else f"cannot run here: {why}")

    def can_run(self, module: str | None = None) -> tuple[bool, str]:
        """Whether an engine built by ``module`` can run here: a GPU, that runtime and cuda-python."""
        module = module or builder_module_name()
        if module is None or importlib.util.find_spec(module) is None:
            return False, f"{module or 'TensorRT'} is not installed: {INSTALL}"
        has_gpu, found = gpu_status()
        if not has_gpu:
            return False, f"running a TensorRT engine needs an NVIDIA GPU: {found}"
        if _cuda_runtime_module() is None:
            return False, "running a TensorRT engine needs cuda-python for device memory: pip install cuda-python"
        return True, found

    def lower(self, model: ir.Model, out_dir: Path, options: LowerOptions | None = None) -> Artifact:
        options = options or LowerOptions()
        precision = (options.precision or "f32").lower().replace("fp32", "f32")
        if precision not in PRECISIONS:
            raise FeatureNotImplementedError(
                f"precision {options.precision!r} for TensorRT: the engine is strongly typed and runs the types the "
                f"model has ({', '.join(PRECISIONS)} choose how FP32 math runs); convert the model to that precision "
                "before lowering")
        findings = check(model)
        refused = errors(findings)
        if refused:
            raise TensorRtRuleError(rule_report(refused))
        shapes = profile_shapes(model, options.shapes)
        trt = _import_builder()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        onnx_files = save(model, out_dir / MODEL_FILE)
        engine, messages = build_engine(trt, out_dir / MODEL_FILE, shapes, tf32=precision == "tf32")
        engine_path = out_dir / ENGINE_FILE
        with staged_output(engine_path) as staged:
            staged.write_bytes(engine)
        command = trtexec_command(MODEL_FILE, ENGINE_FILE, shapes, tf32=precision == "tf32")
        write_text_atomically(out_dir / TRTEXEC_FILE, command + "\n")
        has_gpu, gpu = gpu_status()
        metadata: dict[str, Any] = {
            "builder_module": trt.__name__,
            "builder_version": trt.__version__,
            "strongly_typed": _strongly_typed(trt),
            "precision_ran": precision,
            "gpu": gpu,
            "engine_bytes": len(engine),
            "profile": {name: {k: list(v) for k, v in zip(("min", "opt", "max"), dims)} for name, dims in shapes.items()},
            "trtexec": command,
            "warnings": [str(f) for f in findings],
            "builder_warnings": messages,
            "outputs": [value.name for value in model.graph.outputs],
            "ignored_options": [name for name in ("threads", "tune_trials", "cache_dir") if getattr(options, name)],
        }
        if trt.__name__ == "tensorrt_rtx" and not has_gpu:
            metadata["note"] = NO_GPU_NOTE
        artifact = Artifact(self.name, out_dir, [engine_path, *onnx_files, out_dir / TRTEXEC_FILE], metadata)
        artifact.write_manifest()
        return artifact

    def load(self, artifact: Artifact) -> TensorRtRunner:
        module = artifact.metadata.get("builder_module") or builder_module_name()
        runs, why = self.can_run(module)
        if not runs:
            raise BackendUnavailableError(why)
        engine = next(f for f in artifact.files if f.name == ENGINE_FILE)
        return TensorRtRunner(importlib.import_module(module), engine.read_bytes(), artifact.metadata.get("outputs"))


def rule_report(findings: list[Finding]) -> str:
    """The lowerer's refusal: a count, then one line per finding."""
    return (f"the model breaks {len(findings)} TensorRT rule(s); fix them (or quantize with --target tensorrt):\n"
            + "\n".join(f"  {finding}" for finding in findings))


Profile = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def profile_shapes(model: ir.Model, shapes: dict[str, tuple[int, ...]] | None) -> dict[str, Profile]:
    """(min, opt, max) shapes of each graph input with a symbolic axis or a shape given."""
    shapes = dict(shapes or {})
    check_input_shapes(model, shapes)
    profiles: dict[str, Profile] = {}
    for value in model.graph.inputs:
        if value.const_value is not None:
            continue
        if value.shape is None:
            raise OnnxcError(f"input {value.name!r} has no shape; TensorRT needs its rank (give --shapes)")
        dims = [d if isinstance(d, int) else None for d in value.shape]
        given = shapes.get(value.name)
        if given is not None:
            given = tuple(int(d) for d in given)
        if all(d is not None for d in dims):
            continue
        if any(d is None for d in dims[1:]) and given is None:
            raise OnnxcError(f"input {value.name!r} has symbolic axes {[d if d is not None else '?' for d in dims]}; "
                             "give its shape (--shapes) for TensorRT's optimization profile")
        largest = given or (DEFAULT_MAX_BATCH, *dims[1:])
        smallest = (1, *largest[1:]) if dims[0] is None else largest
        profiles[value.name] = (smallest, largest, largest)
    return profiles


def build_engine(trt, onnx_path: Path, shapes: dict[str, Profile], *, tf32: bool = False) -> tuple[bytes, list[str]]:
    """Parse ``onnx_path`` into a strongly typed network and build its serialized engine; the
    engine and the builder's warnings. FP32 math stays FP32 unless ``tf32`` (TensorRT's default is
    TF32 on GPUs that have it, 10 mantissa bits: too coarse to verify against ORT at 1e-3).
    Raises TensorRtBuildError with the parser's or builder's errors."""
    log = _Log.of(trt)
    with log.collect() as messages:
        builder = trt.Builder(log)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if _strongly_typed(trt) else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, log)
        if not parser.parse_from_file(str(onnx_path)):
            logged = log.at_least(messages, trt.ILogger.Severity.ERROR)
            details = [_parser_error(parser.get_error(i), logged) for i in range(parser.num_errors)]
            raise TensorRtBuildError(f"{trt.__name__}'s ONNX parser refused the model: " + "; ".join(details))
        config = builder.create_builder_config()
        if not tf32:
            config.clear_flag(trt.BuilderFlag.TF32)
        if shapes:
            profile = builder.create_optimization_profile()
            for name, (smallest, best, largest) in shapes.items():
                profile.set_shape(name, smallest, best, largest)
            config.add_optimization_profile(profile)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            failures = log.at_least(messages, trt.ILogger.Severity.ERROR)
            raise TensorRtBuildError(f"{trt.__name__} could not build the engine: " + "; ".join(failures[-3:]))
        warnings = log.at_least(messages, trt.ILogger.Severity.WARNING)
    return bytes(memoryview(engine)), warnings


def _strongly_typed(trt) -> bool:
    """Whether this TensorRT builds strongly typed networks (TensorRT 9 and later, TensorRT-RTX)."""
    return hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")


def _parser_error(error, logged: list[str]) -> str:
    """The parser's error on one node, with the reason the builder logged for it: for an invalid
    node the parser's own text says only "Invalid Node"."""
    node = error.node_name()
    where = f"node {node!r} ({error.node_operator()})" if node else "model"
    text = error.desc().strip().splitlines()[0]
    reasons = [_SOURCE_LOCATION.sub("", line).strip() for message in logged for line in message.splitlines()
               if node and node in line and "Error Code" in line]
    return f"{where}: {text}" + "".join(f" ({reason})" for reason in dict.fromkeys(reasons) if reason not in text)


def trtexec_command(onnx_file: str, engine_file: str, shapes: dict[str, Profile], *, tf32: bool = False) -> str:
    """The ``trtexec`` invocation that builds the same engine on a machine with TensorRT."""
    parts = ["trtexec", f"--onnx={onnx_file}", "--stronglyTyped", f"--saveEngine={engine_file}"]
    if not tf32:
        parts.append("--noTF32")
    if shapes:
        for flag, index in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
            spec = ",".join(f"{name}:{'x'.join(str(d) for d in dims[index])}" for name, dims in shapes.items())
            parts.append(f"{flag}={spec}")
    return " ".join(shlex.quote(part) for part in parts)


def _cuda_runtime_module():
    """cuda-python's CUDA runtime bindings (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


class TensorRtRunner:
    """A deserialized engine and its execution context; feeds and outputs are numpy by tensor name.

    UNVERIFIED: written against the TensorRT 10 / TensorRT-RTX Python API (``set_input_shape``,
    ``set_tensor_address``, ``execute_async_v3``) and cuda-python's runtime bindings, but never run:
    the machines this was written on have no GPU. Check it on a GPU machine before relying on it.
    """

    def __init__(self, trt, engine_bytes: bytes, output_names: list[str] | None = None):
        self._cudart = _cuda_runtime_module()
        self._runtime = trt.Runtime(_Log.of(trt))
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise OnnxcError(f"{trt.__name__} could not load the engine (built by another version or for another GPU?)")
        self._context = self._engine.create_execution_context()
        self._trt = trt
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {name: self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT for name in names}
        self.input_names = [name for name in names if is_input[name]]
        self._outputs = [name for name in (output_names or names) if name in is_input and not is_input[name]]
        self._stream = self._check(self._cudart.cudaStreamCreate())
        self._buffers: list[int] = []

    def _check(self, result):
        error, *values = result if isinstance(result, tuple) else (result,)
        if int(error) != 0:
            raise OnnxcError(f"CUDA error {error}")
        return values[0] if len(values) == 1 else values

    def _device_copy(self, array: np.ndarray) -> int:
        pointer = self._check(self._cudart.cudaMalloc(max(array.nbytes, 1)))
        self._buffers.append(pointer)
        self._check(self._cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes,
                                                 self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))
        return pointer

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        trt, cudart = self._trt, self._cudart
        # The host copies must outlive the asynchronous uploads, until the stream is synchronized.
        hosts = {}
        for name in self.input_names:
            array = np.ascontiguousarray(feeds[name], dtype=trt.nptype(self._engine.get_tensor_dtype(name)))
            hosts[name] = array
            self._context.set_input_shape(name, array.shape)
            self._context.set_tensor_address(name, self._device_copy(array))
        outputs = {}
        for name in self._outputs:
            shape = tuple(self._context.get_tensor_shape(name))
            outputs[name] = np.empty(shape, dtype=trt.nptype(self._engine.get_tensor_dtype(name)))
            pointer = self._check(cudart.cudaMalloc(max(outputs[name].nbytes, 1)))
            self._buffers.append(pointer)
            self._context.set_tensor_address(name, pointer)
        try:
            if not self._context.execute_async_v3(int(self._stream)):
                raise OnnxcError("TensorRT failed to run the engine")
            for name, array in outputs.items():
                self._check(cudart.cudaMemcpyAsync(array.ctypes.data, self._context.get_tensor_address(name),
                                                   array.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                                   self._stream))
            self._check(cudart.cudaStreamSynchronize(self._stream))
        finally:
            self._free()
        return outputs

    def _free(self) -> None:
        for pointer in self._buffers:
            self._cudart.cudaFree(pointer)
        self._buffers = []

    def close(self) -> None:
        self._free()
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self._context = self._engine = self._runtime = None
