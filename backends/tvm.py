"""TVM backends (``--target tvm-x86``, ``--target tvm-arm-neon``): an ONNX model compiled by Apache
TVM's Relax into one shared library.

The model is imported by ``relax.frontend.onnx`` at fixed input shapes, its Q/DQ compute units are
turned into integer kernels (:mod:`onnxc.backends.tvm_int8`), and the module is compiled with
LLVM for this CPU or cross-compiled for aarch64 with NEON. The build folder holds ``model.so``,
``io.json`` (input and output names, shapes and dtypes, the target, tuned or not), the manifest
and ``run_model.py`` (:mod:`onnxc.backends.tvm_vm`), which runs it with numpy and tvm alone.

Untuned TVM code is far slower than ONNX Runtime (~100x on convolutions): a build is untuned
unless ``LowerOptions.tune_trials`` asks for meta-schedule tuning (:mod:`onnxc.backends.tvm_tune`),
and both the metadata and a warning say so.
"""
from __future__ import annotations

import collections
import json
import os
import platform
import shutil
import warnings
from pathlib import Path
from typing import Any

import onnx_ir as ir

from onnxc.backends.base import Artifact, BackendUnavailableError, LowerOptions, module_available, require_module
from onnxc.backends.tvm_vm import LIBRARY, RUN_SCRIPT, SIGNATURE, TvmRunner
from onnxc.errors import OnnxcError, first_line
from onnxc.inputs import check_input_shapes
from onnxc.io import write_text_atomically

INSTALL = "pip install 'onnxc[tvm]'"
AARCH64_TRIPLE = "aarch64-linux-gnu"
AARCH64_CC = "aarch64-linux-gnu-gcc"
UNTUNED_WARNING = ("this TVM build is untuned: expect it to run far slower than ONNX Runtime "
                   "(tune it with --tune TRIALS)")


class UntunedBuildWarning(UserWarning):
    """A TVM build was made without tuning."""


class TvmBackend:
    """Lowers with TVM Relax for one CPU architecture (see the subclasses)."""

    name = "tvm"
    arch = ""

    def available(self) -> tuple[bool, str]:
        return module_available("tvm", "TVM", INSTALL)

    def target(self, integer_kernels: bool) -> dict[str, Any]:
        """The LLVM target as TVM's JSON dict."""
        raise NotImplementedError

    def lower(self, model: ir.Model, out_dir: Path, options: LowerOptions | None = None) -> Artifact:
        require_module("tvm", "TVM", INSTALL)
        from onnxc.backends import tvm_int8, tvm_vm

        options = options or LowerOptions()
        inputs = fixed_inputs(model, options.shapes)
        module = import_onnx(model, inputs)
        module, integer = tvm_int8.integer_compute(module)
        target = self.target(bool(integer.rewritten))
        tuned = options.tune_trials > 0
        if tuned:
            from onnxc.backends.tvm_tune import tuned_build

            executable = tuned_build(module, target, options.tune_trials, options.cache_dir)
        else:
            warnings.warn(UNTUNED_WARNING, UntunedBuildWarning, stacklevel=2)
            executable = _build(module, target)
        signature = {
            "inputs": [{"name": name, "shape": list(shape), "dtype": dtype} for name, (shape, dtype) in inputs.items()],
            "outputs": [{"name": value.name, "dtype": _numpy_dtype(value)} for value in model.graph.outputs],
            "target": target,
            "arch": self.arch,
            "tuned": tuned,
            "tune_trials": options.tune_trials,
        }
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        library = out_dir / LIBRARY
        _export(executable, library, self.arch)
        write_text_atomically(out_dir / SIGNATURE, json.dumps(signature, indent=2, sort_keys=True) + "\n")
        # The runner travels with the build, so the folder runs where only numpy and tvm are installed.
        write_text_atomically(out_dir / RUN_SCRIPT, Path(tvm_vm.__file__).read_text())
        metadata = {
            **signature,
            "tuning": f"tuned with {options.tune_trials} meta-schedule trials" if tuned else "untuned",
            "integer_kernels": integer.rewritten,
            "lowered_ops": dict(sorted(collections.Counter(tvm_int8.lowered_ops(module)).items())),
            "float_ops_on_dequantized_inputs": integer.left_float,
            "ignored_options": _ignored(options),
        }
        artifact = Artifact(self.name, out_dir, [library, out_dir / SIGNATURE, out_dir / RUN_SCRIPT], metadata)
        artifact.write_manifest()
        return artifact

    def load(self, artifact: Artifact) -> TvmRunner:
        require_module("tvm", "TVM", INSTALL)
        built_for = artifact.metadata.get("arch")
        if built_for != host_arch():
            # Not bad input: the build is right, this machine cannot run it (build reports it unverified).
            # (The folder is not named: ``onnxc build`` loads it from its staging folder.)
            raise BackendUnavailableError(f"this artifact is a TVM build for {built_for}; this machine is {host_arch()}: "
                                          f"run it there: python3 {RUN_SCRIPT} BUILD_DIR inputs.npz outputs.npz")
        return TvmRunner(artifact.directory)


class TvmX86Backend(TvmBackend):
    """This machine's x86 CPU: LLVM tuned to its microarchitecture (e.g. znver4 with AVX-512 VNNI)."""

    name = "tvm-x86"
    arch = "x86_64"

    def target(self, integer_kernels: bool) -> dict[str, Any]:
        from tvm.target import codegen

        return {"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu()}


class TvmArmNeonBackend(TvmBackend):
    """aarch64 Linux with NEON, cross-compiled; ``+dotprod`` (SDOT/UDOT, Armv8.2) when the model
    has integer kernels."""

    name = "tvm-arm-neon"
    arch = "aarch64"

    def available(self) -> tuple[bool, str]:
        usable, why = super().available()
        if usable and shutil.which(AARCH64_CC) is None:
            return False, f"{AARCH64_CC} is not installed (Debian: apt-get install gcc-aarch64-linux-gnu)"
        return usable, why

    def target(self, integer_kernels: bool) -> dict[str, Any]:
        features = ["+neon", "+dotprod"] if integer_kernels else ["+neon"]
        return {"kind": "llvm", "mtriple": AARCH64_TRIPLE, "mattr": features}


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def fixed_inputs(model: ir.Model, shapes: dict[str, tuple[int, ...]] | None) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each graph input's fixed shape and numpy dtype: ``shapes`` where given, else the model's own;
    a symbolic dimension left over is one line asking for ``--shape``."""
    shapes = dict(shapes or {})
    check_input_shapes(model, shapes)
    fixed = {}
    for value in model.graph.inputs:
        shape = shapes.get(value.name)
        if shape is None:
            dims = list(value.shape or ())
            if value.shape is None or not all(isinstance(dim, int) for dim in dims):
                shown = "x".join(str(dim) for dim in dims) or "unknown"
                example = "x".join(str(dim) if isinstance(dim, int) else "1" for dim in dims)
                raise OnnxcError(f"input {value.name!r} has shape {shown}: TVM builds for fixed shapes; "
                                 f"give --shape {value.name}=DIMS (e.g. {example or '1'})")
            shape = tuple(dims)
        fixed[value.name] = (tuple(int(d) for d in shape), _numpy_dtype(value))
    return fixed


def import_onnx(model: ir.Model, inputs: dict[str, tuple[tuple[int, ...], str]]):
    """The model as a Relax IRModule with its weights as constants; an op TVM cannot import is one
    line naming it."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    proto = ir.to_proto(model)
    with warnings.catch_warnings():
        # The frontend re-runs onnx's checker and warns about what it dislikes; onnxc has checked the model.
        warnings.simplefilter("ignore")
        try:
            return from_onnx(proto, shape_dict={name: list(shape) for name, (shape, _) in inputs.items()},
                             dtype_dict={name: dtype for name, (_, dtype) in inputs.items()}, keep_params_in_input=False)
        except tvm.error.OpNotImplemented as error:
            ops = str(error).strip().splitlines()[0].rsplit(":", 1)[-1].strip()
            raise OnnxcError(f"TVM's ONNX importer does not support op {ops}") from None
        except Exception as error:  # noqa: BLE001 - the frontend raises whatever its converters do
            raise OnnxcError(f"TVM cannot import the model: {first_line(error)}") from None


def _build(module, target: dict[str, Any]):
    import tvm

    return tvm.compile(module, target=tvm.target.Target(target))


def _export(executable, library: Path, arch: str) -> None:
    """Write the shared library under a temporary name, then rename it into place."""
    staged = library.with_name(f".{library.name}.{os.getpid()}.tmp.so")
    try:
        if arch == "aarch64":
            from tvm.support import cc

            if shutil.which(AARCH64_CC) is None:
                raise OnnxcError(f"cross-compiling for aarch64 needs {AARCH64_CC} "
                                 "(Debian: apt-get install gcc-aarch64-linux-gnu)")
            executable.export_library(str(staged), fcompile=cc.cross_compiler(AARCH64_CC))
        else:
            executable.export_library(str(staged))
        os.replace(staged, library)
    finally:
        staged.unlink(missing_ok=True)


def _numpy_dtype(value: ir.Value) -> str:
    if value.dtype is None:
        return "float32"
    return str(value.dtype.numpy())


def _ignored(options: LowerOptions) -> list[str]:
    """Options a TVM build does not act on (TVM's runtime picks threads when the build is loaded)."""
    ignored = []
    if options.precision not in (None, "f32"):
        ignored.append(f"precision={options.precision} (TVM builds run the model's own dtypes)")
    if options.threads is not None:
        ignored.append("threads (set TVM_NUM_THREADS when running the build)")
    return ignored

