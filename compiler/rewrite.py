"""Rewrites dispatched by root op type.

A ``RootOpRewrite`` pass names the op types its rules start from; the candidate nodes are
collected once per pass (one walk over every graph), so no rule scans the whole graph per
candidate and a 30k-node model is rewritten in linear time.
"""
from __future__ import annotations

from typing import ClassVar

import onnx_ir as ir

from onnxc.graph.ops import DEFAULT_DOMAINS
from onnxc.irutil import all_nodes
from onnxc.pass_base import Pass, PassResult


class RootOpRewrite(Pass):
    """Base for passes whose rules each start at a node of one of ``root_ops``.

    Subclasses set ``root_ops`` (default-domain op types) and implement ``rewrite(node)``,
    returning True when they changed the graph. Nodes removed by an earlier rewrite in the same
    pass are skipped.
    """

    root_ops: ClassVar[tuple[str, ...]] = ()

    def call(self, model: ir.Model) -> PassResult:
        roots = set(self.root_ops)
        candidates = [n for n in all_nodes(model) if n.op_type in roots and n.domain in DEFAULT_DOMAINS]
        modified = False
        for node in candidates:
            if node.graph is None:
                continue
            modified |= bool(self.rewrite(node))
        return PassResult(model, modified)

    def rewrite(self, node: ir.Node) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError
