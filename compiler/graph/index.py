"""The use-def index of a model: node positions, values by name, and readers, subgraphs included.

onnx_ir already links every value to its producer and its uses; what it lacks is where a node
stands in the main graph and which value a name refers to. Passes that plan by position
(quantize's units refer to nodes by main-graph position so a plan applies to a copy of the
model) build this index once per pass instead of walking the graph per question.

The index describes the model as it was when built. Editing helpers in :mod:`onnxc.graph.edit`
keep the use-def links of onnx_ir current, but not these positions: after inserting or removing
main-graph nodes, build a new index before asking for positions again (value lookups by name
stay valid for values that keep their names; a pass that only adds nodes after planning, as
quantize's writers do, keeps using the positions it planned with).
"""
from __future__ import annotations

import onnx_ir as ir

from onnxc.graph.ops import subgraphs


class GraphIndex:
    """Positions, values and readers of the main graph, and which main-graph node holds each subgraph node."""

    def __init__(self, model: ir.Model):
        self.model = model
        self.graph = model.graph
        self.nodes: list[ir.Node] = list(self.graph)
        self.position = {id(node): i for i, node in enumerate(self.nodes)}
        self.outputs = {v.name for v in self.graph.outputs}
        self.values: dict[str, ir.Value] = {v.name: v for v in self.graph.inputs if v.name}
        for node in self.nodes:
            for v in node.outputs:
                if v is not None and v.name:
                    self.values[v.name] = v
        # Main-graph position of the If/Loop/Scan (however deeply nested) that holds each subgraph node.
        self.holder: dict[int, int] = {}
        for i, node in enumerate(self.nodes):
            pending = list(subgraphs(node))
            while pending:
                for inner in pending.pop():
                    self.holder[id(inner)] = i
                    pending.extend(subgraphs(inner))

    def node_index(self, node: ir.Node | None) -> int | None:
        return None if node is None else self.position.get(id(node))

    def consumers(self, value: ir.Value, *, inside_subgraphs: bool = False) -> list[int]:
        """Positions of the main-graph nodes reading ``value`` (once each, in graph order).

        With ``inside_subgraphs`` a read from inside an If/Loop/Scan body (an outer-scope value)
        counts as a read by the main-graph node holding that body.
        """
        found = set()
        for use in value.uses():
            key = id(use.node)
            if key in self.position:
                found.add(self.position[key])
            elif inside_subgraphs and key in self.holder:
                found.add(self.holder[key])
        return sorted(found)

    def name(self, index: int) -> str:
        node = self.nodes[index]
        return node.name or f"{node.op_type}_{index}"
