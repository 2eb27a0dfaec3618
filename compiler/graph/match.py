"""Matching helpers for rewrite rules: operand order of commutative ops, and why a match failed.

A rule that gives up on a candidate says why through :func:`reject`: the reason is logged at
DEBUG on the ``onnxc.graph.match`` logger (under ``onnxc``), so ``--debug`` logging shows why a
fusion did not fire on a given node without a debugger.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

import onnx_ir as ir

logger = logging.getLogger(__name__)


def operand_orders(node: ir.Node) -> Iterator[tuple[int, ir.Value | None, ir.Value | None]]:
    """``(position, operand, other operand)`` of a binary node, each operand first in turn.

    Add and Mul are commutative: a rule looking for "a MatMul output plus a constant" must try
    both orders (Sub and Div too, where the rule then tells the positions apart).
    """
    if len(node.inputs) != 2:
        return
    for position in (0, 1):
        yield position, node.inputs[position], node.inputs[1 - position]


def other_input(node: ir.Node, value: ir.Value) -> ir.Value | None:
    """The input of binary ``node`` that is not ``value`` (None unless exactly one input is it)."""
    if len(node.inputs) != 2 or (node.inputs[0] is value) == (node.inputs[1] is value):
        return None
    return node.inputs[1] if node.inputs[0] is value else node.inputs[0]


def reject(rule: str, node: ir.Node, reason: str) -> bool:
    """Record why ``rule`` leaves ``node`` as it is; returns False, what a rule's ``rewrite`` returns then."""
    logger.debug("%s: %s %r not rewritten: %s", rule, node.op_type, node.name or "", reason)
    return False
