"""The Backend protocol every target implements, and what lowering produces.

A lowerer turns an ONNX model into the target's own artifact in a folder (OpenVINO IR, a TVM
shared library, a TensorRT engine, an ORT model) and loads that artifact back as a
:class:`Runner`. ``onnxc build`` lowers, ``onnxc bench`` times runners, and verification compares a
runner's outputs with ORT's on the ONNX model. Which lowerer serves which target is the target
registry's to say (:meth:`onnxc.targets.Target.lowerer`).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import onnx_ir as ir

from onnxc.errors import OnnxcError

Feeds = dict[str, np.ndarray]
MANIFEST = "artifact.json"


class BackendUnavailableError(OnnxcError):
    """The target's runtime is not installed here; the message names the install command."""


def require_module(module: str, runtime: str, install: str) -> None:
    """Raise one line naming ``install`` when ``module`` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        raise BackendUnavailableError(f"{runtime} is not installed: {install}")


def module_available(module: str, runtime: str, install: str) -> tuple[bool, str]:
    """:meth:`Backend.available` for a backend that needs only ``module``: yes, or why not."""
    try:
        require_module(module, runtime, install)
    except BackendUnavailableError as error:
        return False, str(error)
    return True, ""


@dataclasses.dataclass(frozen=True)
class LowerOptions:
    """What a lowerer is asked for; a backend ignores what does not apply to it and says so in
    the artifact's metadata.

    Attributes:
        shapes: fixed input shapes by input name (None: the model's own, symbolic dims kept
            where the backend can run them).
        precision: the backend's inference precision ("f32", "bf16", "fp16"); None: its default
            for verification (exact float where the backend allows).
        threads: intra-op threads (None: the backend's default).
        tune_trials: autotuning trials where the backend tunes (0: untuned).
        cache_dir: where tuning logs and other reusable work are kept between builds.
    """

    shapes: dict[str, tuple[int, ...]] | None = None
    precision: str | None = None
    threads: int | None = None
    tune_trials: int = 0
    cache_dir: Path | None = None


@dataclasses.dataclass
class Artifact:
    """What a lowerer wrote into ``directory``: its files and facts about them (options used,
    precision that ran, which layers are INT8, ...), kept in ``artifact.json`` beside them."""

    backend: str
    directory: Path
    files: list[Path]
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def write_manifest(self) -> Path:
        path = self.directory / MANIFEST
        record = {"backend": self.backend, "files": [str(f.relative_to(self.directory)) for f in self.files],
                  "metadata": self.metadata}
        path.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        return path

    @classmethod
    def read(cls, directory: str | Path) -> Artifact:
        """The artifact a build wrote into ``directory``; one line when there is none."""
        directory = Path(directory)
        try:
            record = json.loads((directory / MANIFEST).read_text())
            return cls(record["backend"], directory, [directory / f for f in record["files"]], record["metadata"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise OnnxcError(f"{directory} holds no onnxc build ({MANIFEST}: {error})") from None


@runtime_checkable
class Runner(Protocol):
    """A loaded artifact: runs feeds (numpy by input name) to outputs (numpy by output name)."""

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


@runtime_checkable
class ExposingRunner(Runner, Protocol):
    """A runner that can also return values inside the model, by their ONNX names: what
    verification uses to find the first op whose output departs from ORT's. A backend whose
    runner lacks it still verifies, and reports no op."""

    def exposable(self) -> set[str]:
        """Names of the ONNX values the artifact still computes and can return."""
        ...

    def exposing(self, names: Sequence[str]) -> Runner:
        """A runner over the same artifact, compiled anew, that returns ``names`` beside the
        model's outputs (keeping a value can stop the backend fusing across it)."""
        ...

    def fused_with(self, node: str) -> list[str]:
        """Names of the ops the backend runs in the kernels that run ONNX node ``node``, the
        backend's own names of ops it made included (empty when it cannot tell)."""
        ...


@runtime_checkable
class Backend(Protocol):
    name: str

    def available(self) -> tuple[bool, str]:
        """Whether this machine can lower and run for the target, and why not."""
        ...

    def lower(self, model: ir.Model, out_dir: Path, options: LowerOptions | None = None) -> Artifact:
        """Write the artifact into ``out_dir`` (created; files staged and renamed when complete)."""
        ...

    def load(self, artifact: Artifact) -> Runner: ...
