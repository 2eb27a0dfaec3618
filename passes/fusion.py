"""Lossless fusion passes: fold BatchNorm/affine/Pad into Conv/Gemm, MatMul+Add, layout chains, LayerNorm/GELU.

Every pass here is a ``RootOpRewrite``: its rule starts at one node of its root op types and
looks only at that node's neighbourhood through the use-def links. A rewrite checks everything
first and mutates only once the whole pattern is known to match, so a rejected candidate leaves
the graph untouched. Folding arithmetic is done in float64 and cast back to the weights' dtype.

The LayerNorm and GELU fusions live in ``fusion_patterns``, which builds on the helpers here and
is imported at the end of this module so that importing ``onnxc.passes.fusion`` registers them.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxc.irutil import add_initializer, all_graphs, constant_array, single_consumer, use_count
from onnxc.pass_base import PassResult
from onnxc.passes.cleanup import known_dim
from onnxc.passes.constant_folding import mark_shapes_stale
from onnxc.registry import register_pass
from onnxc.rewrite import RootOpRewrite

DEFAULT_DOMAINS = ("", "ai.onnx")


def default_opset(model: ir.Model) -> int:
    """The model's opset for the default ONNX domain (0 when it imports none)."""
    for domain in DEFAULT_DOMAINS:
        if domain in model.opset_imports:
            return int(model.opset_imports[domain])
    return 0


class ValueNames:
    """Every value name of a model, collected once per pass, so new names are fresh and deterministic."""

    def __init__(self, model: ir.Model):
        self._taken: set[str] = set()
        # The last suffix tried per base: names made from one base (a weight shared by many
        # folded nodes) would otherwise each be found by trying every earlier suffix again.
        self._last_index: dict[str, int] = {}
        for graph in all_graphs(model):
            self._taken.update(v.name for v in graph.inputs if v.name)
            self._taken.update(graph.initializers)
            for node in graph:
                self._taken.update(v.name for v in node.outputs if v.name)

    def fresh(self, base: str) -> str:
        name, index = base, self._last_index.get(base, 0)
        if index:
            name = f"{base}_{index}"
        while name in self._taken:
            index += 1
            name = f"{base}_{index}"
        self._last_index[base] = index
        self._taken.add(name)
        return name


class FusionRewrite(RootOpRewrite):
    """A ``RootOpRewrite`` that knows the model's default opset and can name new values."""

    def call(self, model: ir.Model) -> PassResult:
        self.model = model
        self.opset = default_opset(model)
        self.names = ValueNames(model)
        return super().call(model)

    def replace_value(self, old: ir.Value, new: ir.Value) -> None:
        """Point every reader of ``old`` at ``new``; a graph output keeps its name.

        When ``old`` is a graph output, ``new`` takes its name if ``new`` is a plain node output
        of the same graph; otherwise (a graph input, an initializer, another output, an outer
        scope value) an Identity carries the value under the output's name.
        """
        if old.is_graph_output():
            output_name = old.name
            producer = new.producer()
            renamable = (
                producer is not None
                and producer.graph is old.graph
                and not new.is_graph_output()
                and not new.is_graph_input()
                and not new.is_initializer()
            )
            if renamable:
                old.name, new.name = new.name, output_name
                # Same tensor: the output's declared type and shape carry over.
                new.type = old.type if old.type is not None else new.type
                new.shape = old.shape if old.shape is not None else new.shape
            else:
                old.name = self.names.fresh(f"{output_name}_replaced")
                carrier = ir.Value(name=output_name, type=old.type, shape=old.shape)
                identity = ir.node("Identity", [new], outputs=[carrier])
                old.graph.insert_after(old.producer(), identity)
                new = carrier
        old.replace_all_uses_with(new, replace_graph_outputs=True)

    def emit(self, before: ir.Node, op_type: str, inputs: list[ir.Value | None], attributes: dict,
             replaces: ir.Value) -> ir.Node:
        """Insert a node before ``before`` whose output takes over ``replaces``: readers, name, type, shape."""
        output_name = replaces.name
        replaces.name = self.names.fresh(f"{output_name}_unfused")
        output = ir.Value(name=output_name, type=replaces.type, shape=replaces.shape)
        node = ir.node(op_type, inputs, attributes, outputs=[output], name=before.name)
        before.graph.insert_before(before, node)
        replaces.replace_all_uses_with(output, replace_graph_outputs=True)
        return node

    def set_constant_input(self, node: ir.Node, index: int, array: np.ndarray, suffix: str) -> None:
        """Make input ``index`` of ``node`` hold ``array``.

        An initializer read only by ``node`` is updated in place (no dead copy left behind);
        a shared one, a Constant node's output or a missing input gets a new initializer.
        """
        current = node.inputs[index] if index < len(node.inputs) else None
        if (
            current is not None
            and current.is_initializer()
            and not current.is_graph_input()
            and not current.is_graph_output()
            and use_count(current) == 1
        ):
            current.const_value = ir.Tensor(array, name=current.name)
            current.shape = ir.Shape(array.shape)
            return
        base = current.name if current is not None and current.name else f"{node.outputs[0].name}_input{index}"
        value = add_initializer(node.graph, self.names.fresh(f"{base}_{suffix}"), array)
        if index >= len(node.inputs):
            node.resize_inputs(index + 1)
        node.replace_input_with(index, value)

    def int64_initializer(self, graph: ir.Graph, base: str, values: list[int]) -> ir.Value:
        return add_initializer(graph, self.names.fresh(base), np.asarray(values, dtype=np.int64))


def input_at(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if index < len(node.inputs) else None


def producer_of(value: ir.Value | None, op_types: str | tuple[str, ...]) -> ir.Node | None:
    """The default-domain node of one of ``op_types`` that produces ``value``, else None."""
    if value is None:
        return None
    node = value.producer()
    names = (op_types,) if isinstance(op_types, str) else op_types
    if node is None or node.op_type not in names or node.domain not in DEFAULT_DOMAINS:
        return None
    return node


def only_reader(value: ir.Value, op_types: str | tuple[str, ...]) -> ir.Node | None:
    """The one default-domain node of ``op_types`` reading ``value`` (which is no graph output)."""
    node = single_consumer(value)
    names = (op_types,) if isinstance(op_types, str) else op_types
    if node is None or node.op_type not in names or node.domain not in DEFAULT_DOMAINS:
        return None
    return node


def remove_dead(nodes: list[ir.Node]) -> None:
    """Remove, last first, the nodes of ``nodes`` whose outputs nothing reads any more."""
    for node in reversed(nodes):
        if node.graph is not None and all(not use_count(v) and not v.is_graph_output() for v in node.outputs):
            node.graph.remove(node, safe=True)


def rank_of(value: ir.Value | None) -> int | None:
    if value is None:
        return None
    if value.shape is not None:
        return len(value.shape)
    array = constant_array(value)
    return None if array is None else array.ndim


def is_float(array: np.ndarray) -> bool:
    return array.dtype.kind == "f" or array.dtype.name == "bfloat16"


def int_list(value: ir.Value | None) -> list[int] | None:
    """A constant integer tensor of rank <= 1 as a list, else None."""
    array = constant_array(value)
    if array is None or array.ndim > 1 or array.dtype.kind not in "iu":
        return None
    return [int(v) for v in array.reshape(-1)]


def axes_of(node: ir.Node) -> list[int] | None:
    """The ``axes`` of a Squeeze/Unsqueeze/Reduce node: attribute (older opsets) or constant input."""
    if "axes" in node.attributes:
        return list(node.attributes.get_ints("axes"))
    if input_at(node, 1) is not None:
        return int_list(node.inputs[1])
    return None


# --------------------------------------------------------------------------------------------
# Per-output-channel affine maps folded into Conv / ConvTranspose / Gemm weights
# --------------------------------------------------------------------------------------------


_LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm")


@dataclasses.dataclass
class LinearProducer:
    """A Conv, ConvTranspose or Gemm with constant weights whose output channels can be rescaled."""

    node: ir.Node
    weight: np.ndarray
    bias: np.ndarray | None
    channels: int
    output_rank: int

    @classmethod
    def of(cls, node: ir.Node | None, opset: int) -> "LinearProducer | None":
        if node is None or node.op_type not in _LINEAR_OPS or node.domain not in DEFAULT_DOMAINS or len(node.outputs) != 1:
            return None
        weight = constant_array(input_at(node, 1))
        if weight is None or not is_float(weight):
            return None
        bias_value = input_at(node, 2)
        bias = constant_array(bias_value)
        if bias_value is not None and (bias is None or bias.dtype != weight.dtype):
            return None
        if node.op_type in ("Conv", "ConvTranspose"):
            if weight.ndim < 3 or (bias is not None and bias.ndim != 1):
                return None
            group = node.attributes.get_int("group", 1)
            if node.op_type == "Conv":
                channels = weight.shape[0]
            else:
                if group < 1 or weight.shape[0] % group:
                    return None
                channels = weight.shape[1] * group
            if bias is not None and bias.shape[0] != channels:
                return None
            return cls(node, weight, bias, channels, weight.ndim)
        # Gemm before opset 7 broadcasts C only with its `broadcast` attribute: not worth the cases.
        if opset < 7 or weight.ndim != 2 or (bias is not None and bias.ndim > 2):
            return None
        channels = weight.shape[0] if node.attributes.get_int("transB", 0) else weight.shape[1]
        return cls(node, weight, bias, channels, 2)

    def scaled_weight(self, factor: np.ndarray) -> np.ndarray:
        """The weights with output channel ``c`` multiplied by ``factor[c]``."""
        weight = self.weight
        kernel_ones = (1,) * (weight.ndim - 2)
        op = self.node.op_type
        if op == "Conv":
            factor = factor.reshape((-1, 1) + kernel_ones)
        elif op == "ConvTranspose":
            # Layout [Cin, Cout/group, k...]: output channel g*(Cout/group)+j reads W[group g's rows, j].
            group = self.node.attributes.get_int("group", 1)
            per_group = weight.shape[1]
            weight = weight.reshape((group, weight.shape[0] // group, per_group) + weight.shape[2:])
            factor = factor.reshape((group, 1, per_group) + kernel_ones)
        elif self.node.attributes.get_int("transB", 0):
            factor = factor[:, None]
        else:
            factor = factor[None, :]
        # Multiplied in float64 and rounded once into the weights' dtype, with no float64 copy of the weights.
        scaled = np.empty(weight.shape, dtype=self.weight.dtype)
        np.multiply(weight, factor, out=scaled, dtype=np.float64, casting="unsafe")
        return scaled.reshape(self.weight.shape)

    def apply(self, fold: "FusionRewrite", factor: np.ndarray | None, shift: np.ndarray | None) -> None:
        """Fold ``y -> y * factor + shift`` (per output channel, float64) into the weights and bias."""
        node = self.node
        if factor is not None:
            fold.set_constant_input(node, 1, self.scaled_weight(factor), "folded")
        if node.op_type == "Gemm":
            beta = float(node.attributes.get_float("beta", 1.0))
            bias = np.zeros(self.channels) if self.bias is None else beta * self.bias.astype(np.float64)
            if beta != 1.0:
                node.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
        else:
            bias = np.zeros(self.channels) if self.bias is None else self.bias.astype(np.float64)
        if factor is not None:
            bias = bias * factor
        if shift is not None:
            bias = bias + shift
        fold.set_constant_input(node, 2, np.asarray(bias).astype(self.weight.dtype), "folded")


def per_channel(array: np.ndarray, linear: LinearProducer) -> np.ndarray | None:
    """``array`` as a float64 vector over the output channels, when it broadcasts only along them.

    The channel axis is 1 for both Conv outputs [N, C, ...] and Gemm outputs [M, N]; the constant
    must not widen the output (rank at most the output's) and be 1 on every other axis.
    """
    if array.ndim > linear.output_rank or array.dtype != linear.weight.dtype:
        return None
    shape = (1,) * (linear.output_rank - array.ndim) + array.shape
    if any(d != 1 for axis, d in enumerate(shape) if axis != 1) or shape[1] not in (1, linear.channels):
        return None
    return np.broadcast_to(array.astype(np.float64).reshape(-1), (linear.channels,)).copy()


@register_pass
class FoldBatchNorm(FusionRewrite):
    """Fold an inference BatchNormalization into the Conv, ConvTranspose or Gemm feeding it.

    The producer's output must be read only by the BatchNormalization, and its weights, bias and
    the normalization's scale/bias/mean/var must be constants. A BatchNormalization with any
    other input stays as it is.
    """

    name = "fold-batchnorm"
    lossless = True
    root_ops = ("BatchNormalization",)

    def rewrite(self, node: ir.Node) -> bool:
        if not inference_batchnorm(node):
            return False
        x = node.inputs[0]
        linear = LinearProducer.of(x.producer(), self.opset)
        if linear is None or single_consumer(x) is not node:
            return False
        params = [constant_array(input_at(node, i)) for i in range(1, 5)]
        if any(p is None or p.shape != (linear.channels,) or not is_float(p) for p in params):
            return False
        scale, bias, mean, var = (p.astype(np.float64) for p in params)
        factor = scale / np.sqrt(var + float(node.attributes.get_float("epsilon", 1e-5)))
        linear.apply(self, factor, bias - mean * factor)
        self.replace_value(node.outputs[0], x)
        node.graph.remove(node, safe=True)
        return True


def inference_batchnorm(node: ir.Node) -> bool:
    """A BatchNormalization computing only its normalized output from running statistics."""
    if len(node.inputs) != 5 or node.attributes.get_int("training_mode", 0) != 0:
        return False
    if node.attributes.get_int("spatial", 1) != 1:
        return False
    return all(not use_count(v) and not v.is_graph_output() for v in node.outputs[1:])


@register_pass
class FoldAffine(FusionRewrite):
    """Fold a per-channel Mul/Add/Sub/Div by a constant after a Conv or Gemm into its weights and bias.

    The constant must broadcast along the output channels only: scalar, [C,1,1] or [1,C,1,1]
    after a 2-D Conv; scalar, [N] or [1,N] after a Gemm. Mul and Div scale the weights and the
    bias; Add and Sub shift the bias (a bias is created when the producer has none).
    """

    name = "fold-affine"
    lossless = True
    root_ops = ("Mul", "Add", "Sub", "Div")

    def rewrite(self, node: ir.Node) -> bool:
        if len(node.inputs) != 2:
            return False
        for position in (0, 1):
            source, other = node.inputs[position], node.inputs[1 - position]
            if source is None or single_consumer(source) is not node:
                continue
            linear = LinearProducer.of(source.producer(), self.opset)
            constant = constant_array(other)
            if linear is not None and constant is not None:
                break
        else:
            return False
        vector = per_channel(constant, linear)
        if vector is None:
            return False
        op = node.op_type
        factor = shift = None
        if op == "Mul":
            factor = vector
        elif op == "Add":
            shift = vector
        elif op == "Sub" and position == 0:
            shift = -vector
        elif op == "Sub":
            factor, shift = -np.ones_like(vector), vector
        elif position == 0 and np.all(vector != 0):
            factor = 1.0 / vector
        else:
            return False
        linear.apply(self, factor, shift)
        self.replace_value(node.outputs[0], source)
        node.graph.remove(node, safe=True)
        return True


@register_pass
class FoldPadIntoConv(FusionRewrite):
    """Fold a zero constant-mode Pad over spatial axes into the explicit pads of the Conv reading it.

    Handles the input form of Pad (opset >= 11, with the optional ``axes`` of opset 18) and the
    attribute form of older opsets. The Conv must use explicit pads (auto_pad NOTSET or VALID).
    """

    name = "fold-pad-into-conv"
    lossless = True
    root_ops = ("Conv",)

    def rewrite(self, node: ir.Node) -> bool:
        x = node.inputs[0]
        pad = producer_of(x, "Pad")
        if pad is None or single_consumer(x) is not node:
            return False
        rank = rank_of(input_at(node, 1)) or rank_of(x) or rank_of(pad.inputs[0])
        auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
        if rank is None or rank < 3 or auto_pad not in ("NOTSET", "VALID"):
            return False
        amounts = pad_amounts(pad, rank)
        if amounts is None or any(a < 0 for a in amounts):
            return False
        begins, ends = amounts[:rank], amounts[rank:]
        if begins[:2] != [0, 0] or ends[:2] != [0, 0]:
            return False
        spatial = rank - 2
        if auto_pad == "NOTSET":
            current = list(node.attributes.get_ints("pads", [0] * 2 * spatial))
        else:
            current = [0] * 2 * spatial
        if len(current) != 2 * spatial:
            return False
        added = begins[2:] + ends[2:]
        node.attributes["pads"] = ir.AttrInt64s("pads", [c + a for c, a in zip(current, added)])
        node.attributes.pop("auto_pad", None)
        node.replace_input_with(0, pad.inputs[0])
        remove_dead([pad])
        return True


def pad_amounts(pad: ir.Node, rank: int) -> list[int] | None:
    """A zero constant Pad's [begin..., end...] amounts over all ``rank`` axes, else None."""
    if pad.attributes.get_string("mode", "constant") != "constant" or "paddings" in pad.attributes:
        return None
    if "pads" in pad.attributes:
        if pad.attributes.get_float("value", 0.0) != 0.0:
            return None
        amounts = list(pad.attributes.get_ints("pads"))
        return amounts if len(amounts) == 2 * rank else None
    amounts = int_list(input_at(pad, 1))
    fill = input_at(pad, 2)
    if amounts is None:
        return None
    if fill is not None:
        fill_array = constant_array(fill)
        if fill_array is None or fill_array.size != 1 or fill_array.reshape(-1)[0] != 0:
            return None
    axes_value = input_at(pad, 3)
    if axes_value is None:
        return amounts if len(amounts) == 2 * rank else None
    axes = int_list(axes_value)
    if axes is None or len(amounts) != 2 * len(axes):
        return None
    full = [0] * 2 * rank
    for index, axis in enumerate(axes):
        axis = axis + rank if axis < 0 else axis
        if not 0 <= axis < rank:
            return None
        full[axis] = amounts[index]
        full[rank + axis] = amounts[len(axes) + index]
    return full


@register_pass
class MatMulAddToGemm(FusionRewrite):
    """Fuse MatMul(A[M,K], constant W[K,N]) + constant bias into one Gemm when A is 2-D.

    A MatMul over rank > 2 activations (transformers' [B, S, K]) is left alone: Gemm only takes
    2-D operands, so it would need a Reshape on each side (and Shape arithmetic when B or S is
    symbolic), and ONNX Runtime fuses that MatMul+Add itself at session creation, while its
    transformer fusions (attention, bias-GELU, skip-LayerNorm) look for the MatMul+Add form.
    """

    name = "matmul-add-to-gemm"
    lossless = True
    root_ops = ("Add",)

    def rewrite(self, node: ir.Node) -> bool:
        if self.opset < 7 or len(node.inputs) != 2:
            return False
        for position in (0, 1):
            product, bias_value = node.inputs[position], node.inputs[1 - position]
            matmul = producer_of(product, "MatMul")
            bias = constant_array(bias_value)
            if matmul is not None and bias is not None and single_consumer(product) is node:
                break
        else:
            return False
        a, w_value = matmul.inputs
        weight = constant_array(w_value)
        if weight is None or weight.ndim != 2 or rank_of(a) != 2 or not is_float(weight):
            return False
        n = weight.shape[1]
        if bias.dtype != weight.dtype or bias.ndim > 2 or (bias.ndim and bias.shape[-1] not in (1, n)):
            return False
        if bias.ndim == 2 and bias.shape[0] != 1:
            return False
        self.emit(node, "Gemm", [a, w_value, bias_value], {}, node.outputs[0])
        remove_dead([matmul, node])
        return True


# --------------------------------------------------------------------------------------------
# Layout chains: Transpose, Reshape/Flatten, Squeeze/Unsqueeze
# --------------------------------------------------------------------------------------------


def transpose_perm(node: ir.Node, rank: int | None) -> list[int] | None:
    if "perm" in node.attributes:
        return list(node.attributes.get_ints("perm"))
    return None if rank is None else list(reversed(range(rank)))


@register_pass
class FoldTranspose(FusionRewrite):
    """Compose consecutive Transposes into one, drop identity ones, and transpose constants in place.

    A Transpose that only moves axes of size 1 becomes a Reshape, which Reshape chains then absorb.
    """

    name = "fold-transpose"
    lossless = True
    root_ops = ("Transpose",)

    def rewrite(self, node: ir.Node) -> bool:
        x = node.inputs[0]
        array = constant_array(x)
        if array is not None:
            return self._fold_constant(node, array)
        inner = producer_of(x, "Transpose")
        if inner is None:
            perm = transpose_perm(node, rank_of(x))
            if perm is None:
                return False
            if perm != list(range(len(perm))):
                return self._as_reshape(node, perm)
            self.replace_value(node.outputs[0], x)
            node.graph.remove(node, safe=True)
            return True
        outer_perm = node.attributes.get_ints("perm", None)
        inner_perm = inner.attributes.get_ints("perm", None)
        rank = len(outer_perm) if outer_perm is not None else (len(inner_perm) if inner_perm is not None else None)
        source = inner.inputs[0]
        if rank is None:
            # Two default (reversing) permutations cancel whatever the rank.
            self.replace_value(node.outputs[0], source)
            node.graph.remove(node, safe=True)
        else:
            first, second = transpose_perm(inner, rank), transpose_perm(node, rank)
            composed = [first[axis] for axis in second]
            if composed == list(range(rank)):
                self.replace_value(node.outputs[0], source)
                node.graph.remove(node, safe=True)
            else:
                node.replace_input_with(0, source)
                node.attributes["perm"] = ir.AttrInt64s("perm", composed)
        remove_dead([inner])
        return True

    def _as_reshape(self, node: ir.Node, perm: list[int]) -> bool:
        """Turn a Transpose that only moves axes of size 1 into a Reshape (no data moves).

        The axes that may be larger than 1 must keep their order. The target copies (``0``) an
        unknown dim that stays in place, and takes ``-1`` for at most one other unknown dim.
        """
        shape = node.inputs[0].shape
        if self.opset < 5 or shape is None or len(shape) != len(perm):
            return False
        sizes = [known_dim(dim) for dim in shape]
        moving = [axis for axis in perm if sizes[axis] != 1]
        if moving != sorted(moving):
            return False
        target = []
        for position, axis in enumerate(perm):
            if sizes[axis] is not None:
                target.append(sizes[axis])
            else:
                target.append(0 if axis == position else -1)
        if target.count(-1) > 1 or 0 in [sizes[axis] for axis in perm]:
            return False
        base = node.outputs[0].name or "transpose"
        shape_value = self.int64_initializer(node.graph, f"{base}_shape", target)
        self.emit(node, "Reshape", [node.inputs[0], shape_value], {}, node.outputs[0])
        remove_dead([node])
        return True

    def _fold_constant(self, node: ir.Node, array: np.ndarray) -> bool:
        perm = transpose_perm(node, array.ndim)
        transposed = np.ascontiguousarray(np.transpose(array, perm))
        base = node.outputs[0].name or "transposed"
        constant = add_initializer(node.graph, self.names.fresh(f"{base}_const"), transposed)
        self.replace_value(node.outputs[0], constant)
        source = node.inputs[0].producer()
        node.graph.remove(node, safe=True)
        if source is not None:
            remove_dead([source])
        return True


@register_pass
class FoldReshape(FusionRewrite):
    """Collapse Reshape/Flatten chains into one node and remove Reshapes/Flattens that change nothing.

    A Reshape's ``0`` (copy a dim) in the outer node is resolved from the inner node before the
    inner one is bypassed; when that dim is unknown the chain stays. ``allowzero`` is respected.
    """

    name = "fold-reshape"
    lossless = True
    root_ops = ("Reshape", "Flatten")

    def rewrite(self, node: ir.Node) -> bool:
        if node.op_type == "Flatten":
            return self._flatten(node)
        target = int_list(input_at(node, 1))
        if target is None:
            return self._constant_target(node)
        allowzero = bool(node.attributes.get_int("allowzero", 0))
        x = node.inputs[0]
        if reshape_is_identity(x, target, allowzero):
            self.replace_value(node.outputs[0], x)
            node.graph.remove(node, safe=True)
            return True
        inner = producer_of(x, ("Reshape", "Flatten"))
        if inner is None:
            return False
        resolved = list(target)
        for axis, dim in enumerate(target):
            if dim == 0 and not allowzero:
                copied = intermediate_dim(inner, x, axis)
                if copied is None:
                    return False
                resolved[axis] = copied
        node.replace_input_with(0, inner.inputs[0])
        if resolved != target:
            base = node.inputs[1].name or "shape"
            node.replace_input_with(1, self.int64_initializer(node.graph, f"{base}_merged", resolved))
        remove_dead([inner])
        return True

    def _constant_target(self, node: ir.Node) -> bool:
        """Replace a target computed from the input's own shape by a constant one.

        Exporters write ``Reshape(x, Concat(Shape(x)[0:1], [-1]))`` for a flatten with a dynamic
        batch. An entry that is dim ``i`` of ``x`` at position ``i`` becomes ``0`` (copy), a dim
        known statically becomes its size, and one remaining unknown entry becomes ``-1`` when
        every other entry is a positive constant (the element count then fixes it).
        """
        if len(node.inputs) < 2 or node.inputs[1] is None or node.attributes.get_int("allowzero", 0):
            return False
        x = node.inputs[0]
        entries = shape_entries(node.inputs[1], x)
        if entries is None:
            return False
        target: list[int | None] = []
        for position, entry in enumerate(entries):
            if isinstance(entry, InputDim):
                target.append(0 if entry.axis == position else None)
            else:
                target.append(entry)
        unknown = [position for position, entry in enumerate(target) if entry is None]
        if len(unknown) == 1 and all(entry is None or entry > 0 for entry in target):
            target[unknown[0]] = -1
        elif unknown:
            return False
        base = node.inputs[1].name or "shape"
        node.replace_input_with(1, self.int64_initializer(node.graph, f"{base}_static", target))
        output = node.outputs[0]
        if output.shape is None and (output.type or x.type) is not None:
            output.type = output.type or x.type
            output.shape = reshaped_shape(x.shape, target)
        mark_shapes_stale(self.model)
        return True

    def _flatten(self, node: ir.Node) -> bool:
        x = node.inputs[0]
        inner = producer_of(x, ("Reshape", "Flatten"))
        axis = node.attributes.get_int("axis", 1)
        input_rank = 2 if inner is not None and inner.op_type == "Flatten" else rank_of(x)
        if input_rank == 2 and axis in (1, -1):
            self.replace_value(node.outputs[0], x)
            node.graph.remove(node, safe=True)
            if inner is not None:
                remove_dead([inner])
            return True
        if inner is None or inner.op_type != "Reshape":
            return False
        shape = reshape_dims(inner)
        if shape is None or 0 in shape:
            return False
        if axis < 0:
            axis += len(shape)
        if not 0 <= axis <= len(shape):
            return False
        left, right = shape[:axis], shape[axis:]
        if -1 in left:
            target = [-1, int(np.prod(right))]
        elif -1 in right:
            target = [int(np.prod(left)), -1]
        else:
            target = [int(np.prod(left)), int(np.prod(right))]
        base = node.outputs[0].name or "flatten"
        shape_value = self.int64_initializer(node.graph, f"{base}_shape", target)
        self.emit(node, "Reshape", [inner.inputs[0], shape_value], {}, node.outputs[0])
        remove_dead([inner, node])
        return True


@dataclasses.dataclass(frozen=True)
class InputDim:
    """An entry of a shape vector that is dim ``axis`` of the tensor being reshaped."""

    axis: int


# What an entry of a shape vector is known to be: a number, a dim of the reshaped tensor, or unknown.
ShapeEntry = int | InputDim | None

# Shape arithmetic is a handful of nodes deep; the walk stops beyond this.
_SHAPE_WALK_DEPTH = 8


def shape_entries(value: ir.Value, x: ir.Value, depth: int = 0) -> list[ShapeEntry] | None:
    """The entries of the integer shape vector ``value`` as far as they are known without running
    the model; None when not even their count is known.

    Follows the shape arithmetic exporters emit (Shape, Gather, Slice, Concat, Unsqueeze, Squeeze,
    integer Casts); entries that are dims of ``x`` are ``InputDim``s, any other value is unknown.
    """
    constant = int_list(value)
    if constant is not None:
        return list(constant)
    node = producer_of(value, ("Shape", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Cast"))
    if node is None or depth >= _SHAPE_WALK_DEPTH:
        return _unknown_entries(value)
    op = node.op_type
    if op == "Shape":
        source = node.inputs[0]
        if source.shape is None:
            return None
        rank = len(source.shape)
        dims: list[ShapeEntry] = []
        for axis, dim in enumerate(source.shape):
            size = known_dim(dim)
            dims.append(size if size is not None else (InputDim(axis) if source is x else None))
        return dims[node.attributes.get_int("start", 0):node.attributes.get_int("end", rank)]
    if op == "Cast":
        if node.attributes.get_int("to", 0) not in (ir.DataType.INT32.value, ir.DataType.INT64.value):
            return _unknown_entries(value)
        return shape_entries(node.inputs[0], x, depth + 1)
    if op in ("Unsqueeze", "Squeeze"):
        inner = shape_entries(node.inputs[0], x, depth + 1)
        if inner is not None and len(inner) == 1:
            return inner
        # A Concat input of a shape vector is 1-D, so an Unsqueeze feeding one reads a scalar.
        return [None] if op == "Unsqueeze" and rank_of(node.inputs[0]) == 0 else _unknown_entries(value)
    if op == "Gather":
        data = shape_entries(node.inputs[0], x, depth + 1)
        indices = int_list(input_at(node, 1))
        if data is None or indices is None or node.attributes.get_int("axis", 0) not in (0, -1):
            return _unknown_entries(value)
        if any(not -len(data) <= index < len(data) for index in indices):
            return None
        return [data[index] for index in indices]
    if op == "Slice":
        data = shape_entries(node.inputs[0], x, depth + 1)
        starts, ends = int_list(input_at(node, 1)), int_list(input_at(node, 2))
        axes = int_list(input_at(node, 3)) if input_at(node, 3) is not None else [0]
        steps = int_list(input_at(node, 4)) if input_at(node, 4) is not None else [1]
        if data is None or starts is None or ends is None or len(starts) != 1 or len(ends) != 1:
            return _unknown_entries(value)
        if axes not in ([0], [-1]) or steps != [1]:
            return _unknown_entries(value)
        return data[starts[0]:ends[0]]
    # Concat
    if node.attributes.get_int("axis", 0) not in (0, -1):
        return _unknown_entries(value)
    parts = [shape_entries(part, x, depth + 1) for part in node.inputs]
    if any(part is None for part in parts):
        return None
    return [entry for part in parts for entry in part]


def _unknown_entries(value: ir.Value) -> list[ShapeEntry] | None:
    """As many unknown entries as a 0-D or 1-D value of static length has, else None."""
    shape = value.shape
    if shape is None or len(shape) > 1:
        return None
    if len(shape) == 0:
        return [None]
    length = known_dim(shape[0])
    return None if length is None else [None] * length


def reshaped_shape(source: ir.Shape | None, target: list[int]) -> ir.Shape:
    """The output shape of a Reshape (allowzero=0) to ``target``: copies and sizes kept, the rest unknown."""
    dims: list[int | None] = []
    for axis, entry in enumerate(target):
        if entry == 0:
            dims.append(known_dim(source[axis]) if source is not None and axis < len(source) else None)
        else:
            dims.append(entry if entry > 0 else None)
    if dims.count(None) == 1 and -1 in target and source is not None and all(known_dim(d) is not None for d in source):
        rest = int(np.prod([d for d in dims if d is not None]))
        total = int(np.prod([int(d) for d in source]))
        if rest > 0 and total % rest == 0:
            dims[dims.index(None)] = total // rest
    return ir.Shape(dims)


def reshape_dims(node: ir.Node) -> list[int] | None:
    """A Reshape's target with every ``0`` (copy) resolved from its input's static dims, else None."""
    target = int_list(input_at(node, 1))
    if target is None:
        return None
    if node.attributes.get_int("allowzero", 0) or 0 not in target:
        return target
    source = node.inputs[0].shape
    resolved = []
    for axis, dim in enumerate(target):
        if dim == 0:
            dim = None if source is None or axis >= len(source) else known_dim(source[axis])
            if dim is None:
                return None
        resolved.append(dim)
    return resolved


def reshape_is_identity(x: ir.Value, target: list[int], allowzero: bool) -> bool:
    """Whether Reshape(x, target) returns x's shape: every dim kept or copied, at most one -1 left."""
    shape = x.shape
    if shape is None or len(shape) != len(target):
        return False
    inferred = 0
    for dim, wanted in zip(shape, target):
        if wanted == 0 and not allowzero:
            continue
        if known_dim(dim) is not None and dim == wanted:
            continue
        if wanted == -1:
            inferred += 1
            continue
        return False
    return inferred <= 1


def intermediate_dim(inner: ir.Node, value: ir.Value, axis: int) -> int | None:
    """Dim ``axis`` of ``value`` (``inner``'s output) as a Reshape target entry on ``inner``'s input.

    A static dim is returned as is; a dim ``inner`` itself copied from its input stays ``0``.
    """
    shape = value.shape
    if shape is not None and axis < len(shape) and known_dim(shape[axis]) is not None:
        return int(shape[axis])
    if inner.op_type != "Reshape":
        return None
    target = int_list(input_at(inner, 1))
    if target is None or axis >= len(target) or target[axis] == -1:
        return None
    if target[axis] == 0:
        return None if inner.attributes.get_int("allowzero", 0) else 0
    return target[axis]


def normalize_axes(axes: list[int], rank: int | None) -> list[int] | None:
    """Sorted non-negative axes; None when a negative axis needs an unknown rank or axes repeat."""
    if any(a < 0 for a in axes):
        if rank is None:
            return None
        axes = [a + rank if a < 0 else a for a in axes]
    if len(set(axes)) != len(axes) or any(a < 0 or (rank is not None and a >= rank) for a in axes):
        return None
    return sorted(axes)


def kept_positions(removed: list[int], count: int) -> list[int]:
    """The first ``count`` positions of a larger layout that are not in ``removed``."""
    positions, index = [], 0
    taken = set(removed)
    while len(positions) < count:
        if index not in taken:
            positions.append(index)
        index += 1
    return positions


@register_pass
class FoldSqueezeUnsqueeze(FusionRewrite):
    """Remove Unsqueeze->Squeeze and Squeeze->Unsqueeze pairs over the same axes; merge chains of either.

    Axes come from the attribute (opset < 13) or the constant input (opset >= 13). Negative axes
    need the input's rank. Squeeze->Unsqueeze is an identity whenever the model is valid, since
    Squeeze fails on any axis that is not of size 1.
    """

    name = "fold-squeeze-unsqueeze"
    lossless = True
    root_ops = ("Squeeze", "Unsqueeze")

    def rewrite(self, node: ir.Node) -> bool:
        outer_axes = axes_of(node)
        y = node.inputs[0]
        inner = producer_of(y, ("Squeeze", "Unsqueeze"))
        if outer_axes is None or inner is None:
            return False
        inner_axes = axes_of(inner)
        if inner_axes is None:
            return False
        x = inner.inputs[0]
        x_rank = rank_of(x)
        squeeze_outer = node.op_type == "Squeeze"
        if inner.op_type == "Squeeze":
            y_rank = None if x_rank is None else x_rank - len(inner_axes)
        else:
            y_rank = None if x_rank is None else x_rank + len(inner_axes)
        inner_norm = normalize_axes(inner_axes, x_rank if inner.op_type == "Squeeze" else y_rank)
        if squeeze_outer:
            outer_norm = normalize_axes(outer_axes, y_rank)
        else:
            outer_norm = normalize_axes(outer_axes, None if y_rank is None else y_rank + len(outer_axes))
        if inner_norm is None or outer_norm is None:
            return False
        if inner.op_type != node.op_type:
            # Unsqueeze then Squeeze: both axes lists index the larger layout; Squeeze then
            # Unsqueeze: both index x's layout. Either way equal sets cancel.
            if inner_norm != outer_norm:
                return False
            self.replace_value(node.outputs[0], x)
            node.graph.remove(node, safe=True)
            remove_dead([inner])
            return True
        if squeeze_outer:
            # The outer Squeeze's axis i is the i-th axis of x that the inner one kept.
            survivors = kept_positions(inner_norm, max(outer_norm) + 1)
            merged = sorted(inner_norm + [survivors[a] for a in outer_norm])
        else:
            # The inner Unsqueeze's axis j lands on the j-th position the outer one left free.
            free = kept_positions(outer_norm, max(inner_norm) + 1)
            merged = sorted(outer_norm + [free[a] for a in inner_norm])
        self._set_axes(node, merged)
        node.replace_input_with(0, x)
        remove_dead([inner])
        return True

    def _set_axes(self, node: ir.Node, axes: list[int]) -> None:
        if "axes" in node.attributes:
            node.attributes["axes"] = ir.AttrInt64s("axes", axes)
        else:
            base = node.inputs[1].name or "axes"
            node.replace_input_with(1, self.int64_initializer(node.graph, f"{base}_merged", axes))
