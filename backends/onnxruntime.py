"""ONNX Runtime (CPU) backend: the artifact is the ONNX model itself, run by ORT."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx_ir as ir

from onnxc.backends.base import Artifact, Feeds
from onnxc.io import save
from onnxc.runtime import OrtRunner
from onnxc.timing import compare_latency


class OnnxRuntimeBackend:
    """Lowers by saving the model; runs it on ORT's CPU execution provider."""

    name = "onnxruntime"

    def available(self) -> tuple[bool, str]:
        return True, "onnxruntime is a dependency of onnxc"

    def lower(self, model: ir.Model, out_dir: Path, options: dict[str, Any] | None = None) -> Artifact:
        out_dir = Path(out_dir)
        files = save(model, out_dir / "model.onnx")
        return Artifact(self.name, files, {"threads": (options or {}).get("threads")})

    def load(self, artifact: Artifact) -> OrtRunner:
        return OrtRunner(artifact.files[0], threads=artifact.metadata.get("threads"))

    def benchmark(self, artifact: Artifact, feeds: Feeds, *, rounds: int = 5, calls_per_round: int = 10) -> float:
        runner = self.load(artifact)
        return compare_latency({"model": lambda: runner.run(feeds)}, rounds=rounds, calls_per_round=calls_per_round)["model"]
