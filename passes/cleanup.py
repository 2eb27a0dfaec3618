"""Lossless cleanup passes: dead code, identities, constants, duplicates, shapes, order."""
from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import common as ir_common

from onnxc.pass_base import Pass, PassResult
from onnxc.registry import register_pass


@register_pass
class RemoveUnused(Pass):
    """Remove nodes whose outputs nothing reads, and initializers nothing uses."""

    name = "remove-unused"

    def call(self, model: ir.Model) -> PassResult:
        nodes = ir_common.RemoveUnusedNodesPass()(model).modified
        initializers = ir_common.RemoveUnusedFunctionsPass()(model).modified
        return PassResult(model, nodes or initializers)


@register_pass
class TopologicalSort(Pass):
    """Order nodes so every node comes after the producers of its inputs."""

    name = "toposort"

    def call(self, model: ir.Model) -> PassResult:
        return PassResult(model, ir_common.TopologicalSortPass()(model).modified)
