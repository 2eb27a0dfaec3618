"""Backend lowerers: one module per target, and the Backend protocol."""
from onnxc.backends.base import Artifact, Backend, Runner
from onnxc.backends.onnxruntime import OnnxRuntimeBackend

BACKENDS: dict[str, type] = {"onnxruntime": OnnxRuntimeBackend}

__all__ = ["BACKENDS", "Artifact", "Backend", "OnnxRuntimeBackend", "Runner"]
