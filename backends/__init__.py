"""Backend lowerers: one module per target, and the Backend protocol.

Which lowerer serves which target is the target registry's to say (:meth:`onnxc.targets.Target.lowerer`).
"""
from onnxc.backends.base import Artifact, Backend, Runner
from onnxc.backends.onnxruntime import OnnxRuntimeBackend

__all__ = ["Artifact", "Backend", "OnnxRuntimeBackend", "Runner"]
