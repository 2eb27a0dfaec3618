"""Fusions of decomposed normalization/activation subgraphs into single standard ONNX ops.

``fuse-layernorm`` (LayerNormalization, opset >= 17) and ``fuse-gelu`` (Gelu, opset >= 20).
Older opsets keep the decomposed form: onnxc stays in the standard ONNX domain, and ONNX Runtime's
own fusions recognize these patterns there.
"""
from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from onnxc.graph.edit import add_initializer
from onnxc.graph.match import operand_orders, other_input
from onnxc.graph.ops import known_dim
from onnxc.irutil import constant_array, single_consumer
from onnxc.pass_base import option
from onnxc.passes.fusion.rewrite import FusionRewrite, axes_of, is_float, only_reader, producer_of, rank_of, remove_dead
from onnxc.registry import register_pass

SQRT_2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_CUBIC = 0.044715


def scalar_of(value: ir.Value | None, operand_rank: int | None, *, integer_ok: bool = False) -> float | None:
    """The number a one-element constant holds, when broadcasting it cannot widen its operand.

    A rank-0 constant never widens; a [1] or [1, 1] one only when the other operand's rank is
    known to be at least as large.
    """
    array = constant_array(value)
    if array is None or array.size != 1 or not (is_float(array) or (integer_ok and array.dtype.kind in "iu")):
        return None
    if array.ndim and (operand_rank is None or array.ndim > operand_rank):
        return None
    return float(array.reshape(-1)[0])


def split_constant(node: ir.Node, rank: int | None = None) -> tuple[ir.Value, float] | None:
    """(the non-constant operand, the scalar) of a binary node with one scalar constant operand."""
    for _, operand, other in operand_orders(node):
        if other is None or constant_array(other) is not None:
            continue
        number = scalar_of(operand, rank if rank is not None else rank_of(other))
        if number is not None:
            return other, number
    return None


def reduces_last_axis(node: ir.Node | None, rank: int | None) -> bool:
    """A ReduceMean keeping dims over exactly the last axis."""
    if node is None or node.attributes.get_int("keepdims", 1) != 1:
        return False
    axes = axes_of(node)
    if axes is None or len(axes) != 1:
        return False
    return axes[0] == -1 or (rank is not None and axes[0] == rank - 1)


def last_axis_vector(array: np.ndarray | None, rank: int | None, channels: int | None) -> bool:
    """Whether a constant multiplies/adds along the last axis only, without widening the input."""
    if array is None or array.ndim > max(rank or 1, 1) or not is_float(array):
        return False
    if any(d != 1 for d in array.shape[:-1]):
        return False
    return array.ndim == 0 or channels is None or array.shape[-1] in (1, channels)


def _last_axis_step(value: ir.Value, op_type: str, rank: int | None, channels: int | None,
                    dtype: np.dtype) -> tuple[ir.Node, ir.Value, int | None] | None:
    """The one ``op_type`` node reading ``value`` with a constant of ``dtype`` along the last axis as
    its other operand: (that node, the constant's value, the channel count as now known), else None."""
    reader = only_reader(value, op_type)
    if reader is None:
        return None
    operand = other_input(reader, value)
    array = constant_array(operand)
    if not last_axis_vector(array, rank, channels) or array.dtype != dtype:
        return None
    return reader, operand, channels or (array.shape[-1] if array.ndim and array.shape[-1] > 1 else None)


@register_pass
class FuseLayerNorm(FusionRewrite):
    """Fuse the decomposed LayerNorm exporters emit into LayerNormalization (opset >= 17).

    Matches ReduceMean(x) -> Sub -> Pow 2 | Mul self -> ReduceMean -> Add eps -> Sqrt ->
    Div (or Reciprocal and Mul), over the last axis, then an optional Mul by gamma and Add of
    beta. Without the Mul a scale of ones is created; without the Add no bias is given (it is
    optional). Other axes, or an opset below 17, leave the pattern as it is.
    """

    name = "fuse-layernorm"
    lossless = True
    root_ops = ("Sqrt",)

    def rewrite(self, node: ir.Node) -> bool:
        if self.opset < 17:
            return self.reject(node, f"LayerNormalization needs opset 17 (model: {self.opset})")
        core = self._core(node)
        if core is None:
            return self.reject(node, "no mean, centering, variance, epsilon and division around this Sqrt "
                                     "over the last axis, each read only inside the pattern")
        x, epsilon, dtype, nodes = core
        rank = rank_of(x)
        channels = known_dim(x.shape[-1]) if x.shape is not None and rank else None
        last = nodes[-1]
        gamma_value = beta_value = None
        scale = _last_axis_step(last.outputs[0], "Mul", rank, channels, dtype)
        if scale is not None:
            scale_mul, gamma_value, channels = scale
            nodes.append(scale_mul)
            shift = _last_axis_step(scale_mul.outputs[0], "Add", rank, channels, dtype)
            if shift is not None:
                shift_add, beta_value, channels = shift
                nodes.append(shift_add)
        if channels is None:
            return self.reject(node, "the normalized axis' size is unknown (no static shape, scale or bias gives it)")
        last = nodes[-1]
        base = last.outputs[0].name or "layernorm"
        inputs = [x, self._vector(last.graph, gamma_value, 1.0, channels, dtype, f"{base}_scale")]
        if beta_value is not None:
            inputs.append(self._vector(last.graph, beta_value, 0.0, channels, dtype, f"{base}_bias"))
        self.emit(last, "LayerNormalization", inputs, {"axis": -1, "epsilon": epsilon}, last.outputs[0])
        remove_dead(nodes)
        return True

    def _core(self, sqrt: ir.Node) -> tuple[ir.Value, float, np.dtype, list[ir.Node]] | None:
        """(x, epsilon, dtype, nodes from the first ReduceMean to the normalizing Div/Mul) or None."""
        variance_eps = sqrt.inputs[0]
        add_eps = producer_of(variance_eps, "Add")
        if add_eps is None or single_consumer(variance_eps) is not sqrt or len(add_eps.inputs) != 2:
            return None
        var_mean = next((n for n in (producer_of(v, "ReduceMean") for v in add_eps.inputs) if n is not None), None)
        if var_mean is None or single_consumer(var_mean.outputs[0]) is not add_eps:
            return None
        eps_value = other_input(add_eps, var_mean.outputs[0])
        squared = var_mean.inputs[0]
        square = producer_of(squared, ("Pow", "Mul"))
        if square is None or single_consumer(squared) is not var_mean:
            return None
        centered = square.inputs[0]
        if square.op_type == "Pow":
            if scalar_of(square.inputs[1], rank_of(centered), integer_ok=True) != 2.0:
                return None
        elif square.inputs[1] is not centered:
            return None
        sub = producer_of(centered, "Sub")
        if sub is None:
            return None
        x, mean_value = sub.inputs
        mean = producer_of(mean_value, "ReduceMean")
        rank = rank_of(x)
        if mean is None or mean.inputs[0] is not x or single_consumer(mean_value) is not sub:
            return None
        if not (reduces_last_axis(mean, rank) and reduces_last_axis(var_mean, rank)):
            return None
        eps_array = constant_array(eps_value)
        epsilon = scalar_of(eps_value, rank)
        if epsilon is None or epsilon < 0:
            return None
        normalize, extra = self._normalize(sqrt.outputs[0], centered)
        if normalize is None:
            return None
        readers = {id(use.node) for use in centered.uses()}
        if centered.is_graph_output() or readers - {id(square), id(normalize)}:
            return None
        return x, epsilon, eps_array.dtype, [mean, sub, square, var_mean, add_eps, sqrt, *extra, normalize]

    @staticmethod
    def _normalize(std: ir.Value, centered: ir.Value) -> tuple[ir.Node | None, list[ir.Node]]:
        """The node dividing ``centered`` by ``std``: a Div, or a Mul by its Reciprocal."""
        reader = only_reader(std, ("Div", "Reciprocal"))
        if reader is None:
            return None, []
        if reader.op_type == "Div":
            ok = reader.inputs[0] is centered and reader.inputs[1] is std
            return (reader if ok else None), []
        inverse = reader.outputs[0]
        mul = only_reader(inverse, "Mul")
        if mul is None or other_input(mul, inverse) is not centered:
            return None, []
        return mul, [reader]

    def _vector(self, graph: ir.Graph, value: ir.Value | None, fill: float, channels: int,
                dtype: np.dtype, name: str) -> ir.Value:
        """``value`` when it already is a [channels] initializer, else a new one broadcast from it."""
        array = constant_array(value)
        if array is not None and array.shape == (channels,) and value.is_initializer():
            return value
        vector = np.full((channels,), fill, dtype=dtype) if array is None else \
            np.broadcast_to(array.reshape(-1), (channels,)).astype(dtype)
        return add_initializer(graph, self.names.fresh(name), vector)


@register_pass
class FuseGelu(FusionRewrite):
    """Fuse x*0.5*(1+erf(x/sqrt(2))) into Gelu, and its tanh approximation into Gelu(approximate=tanh).

    Opset >= 20 only (Gelu's first opset); below it the pattern stays, in standard ONNX. Matches
    the operand orders exporters produce: the 0.5 applied to x first, last or to (1+erf), and the
    erf argument as x/1.4142 or x*0.7071 (either side).
    """

    name = "fuse-gelu"
    lossless = True
    root_ops = ("Erf", "Tanh")

    constant_rtol: float = option(
        1e-4, "relative tolerance when matching the pattern's constants (sqrt(2), 0.5, 0.044715, ...)"
    )
    tanh: bool = option(True, "also fuse the tanh approximation into Gelu(approximate='tanh')")

    def rewrite(self, node: ir.Node) -> bool:
        if self.opset < 20:
            return self.reject(node, f"Gelu needs opset 20 (model: {self.opset})")
        if node.op_type == "Erf":
            head = self._erf_argument(node)
        elif self.tanh:
            head = self._tanh_argument(node)
        else:
            return False
        if head is None:
            return self.reject(node, "its argument is not x scaled as GELU scales it")
        x, head_nodes = head
        tail_nodes = self._tail(node.outputs[0], x)
        if tail_nodes is None:
            return self.reject(node, "its result is not combined with x as GELU combines it (0.5 * x * (1 + ...))")
        last = tail_nodes[-1]
        attributes = {"approximate": "tanh"} if node.op_type == "Tanh" else {}
        self.emit(last, "Gelu", [x], attributes, last.outputs[0])
        remove_dead([*head_nodes, node, *tail_nodes])
        return True

    def _close(self, number: float | None, expected: float) -> bool:
        return number is not None and abs(number - expected) <= self.constant_rtol * abs(expected)

    def _erf_argument(self, erf: ir.Node) -> tuple[ir.Value, list[ir.Node]] | None:
        argument = erf.inputs[0]
        scale = producer_of(argument, ("Div", "Mul"))
        if scale is None or single_consumer(argument) is not erf:
            return None
        if scale.op_type == "Div":
            x = scale.inputs[0]
            if constant_array(x) is not None or not self._close(scalar_of(scale.inputs[1], rank_of(x)), SQRT_2):
                return None
            return x, [scale]
        split = split_constant(scale)
        if split is None or not self._close(split[1], 1.0 / SQRT_2):
            return None
        return split[0], [scale]

    def _tanh_argument(self, tanh: ir.Node) -> tuple[ir.Value, list[ir.Node]] | None:
        argument = tanh.inputs[0]
        scale = producer_of(argument, "Mul")
        if scale is None or single_consumer(argument) is not tanh:
            return None
        split = split_constant(scale)
        if split is None or not self._close(split[1], SQRT_2_OVER_PI):
            return None
        inner = split[0]
        add = producer_of(inner, "Add")
        if add is None or single_consumer(inner) is not scale or len(add.inputs) != 2:
            return None
        for position in (0, 1):
            x, term = add.inputs[position], add.inputs[1 - position]
            cubic = producer_of(term, "Mul")
            if cubic is None or single_consumer(term) is not add:
                continue
            split = split_constant(cubic, rank_of(x))
            if split is None or not self._close(split[1], GELU_CUBIC):
                continue
            cube_nodes = self._cube_nodes(split[0], cubic, x)
            if cube_nodes is not None:
                return x, [*cube_nodes, cubic, add, scale]
        return None

    @staticmethod
    def _cube_nodes(value: ir.Value, reader: ir.Node, x: ir.Value) -> list[ir.Node] | None:
        """The nodes computing ``value`` = x**3 (Pow(x, 3), or Mul of x and Mul(x, x)), read only by ``reader``."""
        if single_consumer(value) is not reader:
            return None
        power = producer_of(value, "Pow")
        if power is not None:
            ok = power.inputs[0] is x and scalar_of(power.inputs[1], rank_of(x), integer_ok=True) == 3.0
            return [power] if ok else None
        cube = producer_of(value, "Mul")
        if cube is None:
            return None
        square_value = other_input(cube, x)
        square = producer_of(square_value, "Mul")
        if square is None or single_consumer(square_value) is not cube:
            return None
        if square.inputs[0] is not x or square.inputs[1] is not x:
            return None
        return [square, cube]

    def _tail(self, activation: ir.Value, x: ir.Value) -> list[ir.Node] | None:
        """The nodes computing 0.5 * x * (1 + activation), in any of the exported orders."""
        rank = rank_of(x)
        add_one = only_reader(activation, "Add")
        if add_one is None:
            return None
        split = split_constant(add_one, rank)
        if split is None or split[0] is not activation or not self._close(split[1], 1.0):
            return None
        one_plus = add_one.outputs[0]
        first = only_reader(one_plus, "Mul")
        if first is None:
            return None
        other = other_input(first, one_plus)
        if other is None:
            return None
        if other is x:
            second = only_reader(first.outputs[0], "Mul")
            split = None if second is None else split_constant(second, rank)
            if split is None or split[0] is not first.outputs[0] or not self._close(split[1], 0.5):
                return None
            return [add_one, first, second]
        if self._close(scalar_of(other, rank), 0.5):
            second = only_reader(first.outputs[0], "Mul")
            if second is None or other_input(second, first.outputs[0]) is not x:
                return None
            return [add_one, first, second]
        half = producer_of(other, "Mul")
        if half is None or single_consumer(other) is not first:
            return None
        split = split_constant(half, rank)
        if split is None or split[0] is not x or not self._close(split[1], 0.5):
            return None
        return [add_one, half, first]
