"""The target registry: the one place a target name is looked up.

Each target carries its Q/DQ placement profile (:mod:`onnxc.profiles`), its lowerer (a class in
:mod:`onnxc.backends`, imported only when asked for) and how to time a model on it. ``--target``,
:attr:`onnxc.context.Context.target`, quantize's profile and measurement, and the end-of-run
speed check all read it.

    from onnxc.targets import get_target
    get_target("tensorrt").profile()          # where TensorRT wants Q/DQ
    get_target("onnxruntime").latencies({"a": model_a, "b": model_b}, feed)
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING

from onnxc import profiles
from onnxc.errors import FeatureNotImplementedError, OnnxcError, PipelineError
from onnxc.profiles import TargetProfile
from onnxc.timing import ort_latencies

if TYPE_CHECKING:
    from onnxc.backends.base import Backend

DEFAULT_TARGET = "onnxruntime"
# Lowerers and timers that do not exist yet are planned there.
LOWERING_ISSUE = "issue 10"

# (models by name, the feed, rounds=, calls_per_round=, label=) -> seconds per run by name.
Latencies = Callable[..., dict[str, float]]


class UnknownTargetError(PipelineError):
    """A target name the registry does not know; the message lists the known ones."""


class TargetUnavailableError(OnnxcError):
    """The target cannot run here: its runtime is not installed, or onnxc cannot drive it yet."""


@dataclasses.dataclass(frozen=True)
class Target:
    """One backend onnxc compiles for.

    Attributes:
        name: the ``--target`` name.
        placement: the Q/DQ placement profile as written, for every machine (see :meth:`profile`).
        runtime: what runs models for this target, as messages name it ("ORT", "TensorRT").
        runtime_module: the Python module that runtime needs (None: a dependency of onnxc).
        install: how to get that module.
        backend: the lowerer, ``"module:Class"`` in :mod:`onnxc.backends`; None until it is built.
        timer: times models on this target; None until onnxc can drive the runtime.
    """

    name: str
    placement: TargetProfile
    runtime: str
    runtime_module: str | None = None
    install: str = ""
    backend: str | None = None
    timer: Latencies | None = None

    def profile(self) -> TargetProfile:
        """The placement profile adjusted to this machine (7-bit weights where ORT needs them)."""
        return profiles.for_this_machine(self.placement)

    def can_time(self) -> tuple[bool, str]:
        """Whether models can be timed on this target here, and why not."""
        if self.runtime_module is not None and importlib.util.find_spec(self.runtime_module) is None:
            return False, f"{self.runtime} is not installed ({self.install})"
        if self.timer is None:
            return False, f"timing on {self.name} is not implemented yet: {LOWERING_ISSUE}"
        return True, ""

    def latencies(self, models: dict, feed: dict, **options: object) -> dict[str, float]:
        """Seconds per run of each model on this target, interleaved (:mod:`onnxc.timing`).

        Raises TargetUnavailableError, saying what to install, when :meth:`can_time` says no.
        """
        usable, why = self.can_time()
        if not usable:
            raise TargetUnavailableError(f"cannot time on {self.name} here: {why}")
        return self.timer(models, feed, **options)

    def lowerer(self) -> Backend:
        """A new instance of this target's lowerer (:class:`onnxc.backends.base.Backend`)."""
        if self.backend is None:
            raise FeatureNotImplementedError(f"lowering for {self.name} is not implemented yet: {LOWERING_ISSUE}")
        module, _, cls = self.backend.partition(":")
        return getattr(importlib.import_module(module), cls)()

    def available_lowerer(self) -> Backend:
        """:meth:`lowerer` when it can lower here, else TargetUnavailableError saying why (what to install)."""
        backend = self.lowerer()
        usable, why = backend.available()
        if not usable:
            raise TargetUnavailableError(f"cannot lower for {self.name} here: {why}")
        return backend


def _openvino_latencies(models: dict, feed: dict, **options: object) -> dict[str, float]:
    # Imported when used: the registry loads without OpenVINO installed.
    from onnxc.backends.openvino import openvino_latencies

    return openvino_latencies(models, feed, **options)


TARGETS: dict[str, Target] = {target.name: target for target in (
    Target("onnxruntime", profiles.ONNXRUNTIME, runtime="ORT",
           backend="onnxc.backends.onnxruntime:OnnxRuntimeBackend", timer=ort_latencies),
    Target("tensorrt", profiles.TENSORRT, runtime="TensorRT", runtime_module="tensorrt",
           install="pip install 'onnxc[tensorrt]' on a machine with an NVIDIA GPU",
           backend="onnxc.backends.tensorrt:TensorRtBackend"),
    Target("openvino", profiles.OPENVINO, runtime="OpenVINO", runtime_module="openvino",
           install="pip install 'onnxc[openvino]'", backend="onnxc.backends.openvino:OpenVinoBackend",
           timer=_openvino_latencies),
    Target("tvm-x86", profiles.TVM_X86, runtime="TVM", runtime_module="tvm",
           install="pip install 'onnxc[tvm]'", backend="onnxc.backends.tvm:TvmX86Backend"),
    Target("tvm-arm-neon", profiles.TVM_ARM_NEON, runtime="TVM", runtime_module="tvm",
           install="pip install 'onnxc[tvm]'", backend="onnxc.backends.tvm:TvmArmNeonBackend"),
)}


def get_target(name: str) -> Target:
    """The registered target ``name``; an unknown name raises one line listing the known ones."""
    target = TARGETS.get(name)
    if target is None:
        raise UnknownTargetError(f"unknown target {name!r}; known targets: {', '.join(TARGETS)}")
    return target


def get_profile(name: str) -> TargetProfile:
    """The Q/DQ placement profile of target ``name``, adjusted to this machine."""
    return get_target(name).profile()
