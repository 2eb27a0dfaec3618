"""Adapting a user function written against onnx-graphsurgeon into an onnxc pass.

onnx-graphsurgeon stays at the edge (an optional dependency): the core never imports it. The
adapter round-trips through protobuf, so it suits models under the 2 GB protobuf limit.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import onnx_ir as ir

from onnxc.errors import FeatureNotImplementedError
from onnxc.pass_base import Pass, PassResult
from onnxc.registry import register_pass


def graphsurgeon_pass(name: str, *, lossless: bool = True) -> Callable[[Callable[[Any], Any]], type[Pass]]:
    """Register ``f(graph: gs.Graph) -> gs.Graph`` as a pass named ``name``.

    The function may modify the graph in place and return it, or return a new graph::

        @onnxc.graphsurgeon.graphsurgeon_pass("drop-relu6-clip")
        def replace_clip(graph):
            ...
            return graph.cleanup().toposort()
    """

    def decorate(function: Callable[[Any], Any]) -> type[Pass]:
        def call(self, model: ir.Model) -> PassResult:
            try:
                import onnx_graphsurgeon as gs
            except ImportError:
                raise FeatureNotImplementedError(
                    f"pass {name!r} is written for onnx-graphsurgeon, which is not installed (pip install onnx-graphsurgeon)"
                ) from None
            before = ir.to_proto(model)
            graph = function(gs.import_onnx(before))
            if graph is None:
                raise TypeError(f"graphsurgeon pass {name!r} must return the graph")
            after = gs.export_onnx(graph)
            after.ir_version = before.ir_version
            changed = after.graph.SerializeToString(deterministic=True) != before.graph.SerializeToString(deterministic=True)
            if changed:
                replacement = ir.serde.deserialize_model(after)
                model.graph = replacement.graph
                model.functions.clear()
                model.functions.update(replacement.functions)
            return PassResult(model, changed)

        cls = type(f"GraphSurgeonPass_{function.__name__}", (Pass,),
                   {"name": name, "lossless": lossless, "call": call, "__doc__": function.__doc__, "__module__": function.__module__})
        return register_pass(dataclasses.dataclass(cls))

    return decorate
