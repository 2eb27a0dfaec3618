"""The graph core every pass builds on: what passes share instead of importing each other.

* :mod:`~onnxc.graph.ops`: default domains, opset lookup and conversion, non-deterministic ops,
  known dims, the graphs a node holds.
* :mod:`~onnxc.graph.index`: the use-def index (positions, producers, readers), built once per pass.
* :mod:`~onnxc.graph.edit`: fresh names, initializers, replacing a value while graph outputs keep their names.
* :mod:`~onnxc.graph.match`: operand matching for rewrite rules, with the reason a match is rejected.
* :mod:`~onnxc.graph.channels`: which input and axis of each op carries channels.
"""
