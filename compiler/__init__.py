"""onnxc: a graph-level model-compression compiler over ONNX.

    import onnxc
    model = onnxc.load("model.onnx")
    report = onnxc.compile(model, "default", verify=True)
    onnxc.save(model, "model.opt.onnx")
"""
from onnxc._version import __version__
from onnxc.context import Context
from onnxc.driver import compile, default_pipeline
from onnxc.errors import OnnxcError
from onnxc.graphsurgeon import graphsurgeon_pass
from onnxc.io import load, save
from onnxc.pass_base import Pass, PassResult, option
from onnxc.registry import create_pass, load_plugin, register_pass, registered_passes

__all__ = [
    "Context",
    "OnnxcError",
    "Pass",
    "PassResult",
    "__version__",
    "compile",
    "create_pass",
    "default_pipeline",
    "graphsurgeon_pass",
    "load",
    "load_plugin",
    "option",
    "register_pass",
    "registered_passes",
    "save",
]
