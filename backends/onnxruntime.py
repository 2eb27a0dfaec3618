"""ONNX Runtime (CPU) backend: the artifact is the ONNX model itself, run by ORT."""
from __future__ import annotations

from pathlib import Path

import onnx_ir as ir

from onnxc.backends.base import Artifact, LowerOptions
from onnxc.io import save
from onnxc.runtime import OrtRunner


class OnnxRuntimeBackend:
    """Lowers by saving the model; runs it on ORT's CPU execution provider."""

    name = "onnxruntime"

    def available(self) -> tuple[bool, str]:
        return True, "onnxruntime is a dependency of onnxc"

    def lower(self, model: ir.Model, out_dir: Path, options: LowerOptions | None = None) -> Artifact:
        options = options or LowerOptions()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = save(model, out_dir / "model.onnx")
        artifact = Artifact(self.name, out_dir, list(files), {"threads": options.threads})
        artifact.write_manifest()
        return artifact

    def load(self, artifact: Artifact) -> OrtRunner:
        return OrtRunner(artifact.files[0], threads=artifact.metadata.get("threads"))
