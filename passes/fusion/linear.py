"""Per-output-channel affine maps folded into Conv / ConvTranspose / Gemm weights, and MatMul+Add to Gemm.

``fold-batchnorm``, ``fold-affine``, ``fold-pad-into-conv`` and ``matmul-add-to-gemm``.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxc.graph.channels import output_channels
from onnxc.graph.match import operand_orders
from onnxc.graph.ops import DEFAULT_DOMAINS
from onnxc.irutil import constant_array, single_consumer, use_count
from onnxc.passes.fusion.rewrite import (FusionRewrite, input_at, int_list, is_float, producer_of, rank_of,
                                         remove_dead)
from onnxc.registry import register_pass

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
            channels = output_channels(node, weight)
            if channels is None or (bias is not None and bias.shape[0] != channels):
                return None
            return cls(node, weight, bias, channels, weight.ndim)
        # Gemm before opset 7 broadcasts C only with its `broadcast` attribute: not worth the cases.
        if opset < 7 or weight.ndim != 2 or (bias is not None and bias.ndim > 2):
            return None
        return cls(node, weight, bias, output_channels(node, weight), 2)

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
            return self.reject(node, "not an inference-mode BatchNormalization")
        x = node.inputs[0]
        linear = LinearProducer.of(x.producer(), self.opset)
        if linear is None or single_consumer(x) is not node:
            return self.reject(node, "its input is no foldable Conv/ConvTranspose/Gemm output read only here")
        params = [constant_array(input_at(node, i)) for i in range(1, 5)]
        if any(p is None or p.shape != (linear.channels,) or not is_float(p) for p in params):
            return self.reject(node, "its scale, bias, mean and var are not constant float vectors over the channels")
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
        for position, source, other in operand_orders(node):
            if source is None or single_consumer(source) is not node:
                continue
            linear = LinearProducer.of(source.producer(), self.opset)
            constant = constant_array(other)
            if linear is not None and constant is not None:
                break
        else:
            return self.reject(node, "no operand is a foldable Conv/ConvTranspose/Gemm output (read only here) "
                                     "with a constant as the other operand")
        vector = per_channel(constant, linear)
        if vector is None:
            return self.reject(node, "the constant does not broadcast along the output channels only")
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
            return self.reject(node, "a division by the output (or by zero) is no affine map of it")
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
        if self.opset < 7:
            return self.reject(node, f"Gemm broadcasts its bias only from opset 7 (model: {self.opset})")
        for _, product, bias_value in operand_orders(node):
            matmul = producer_of(product, "MatMul")
            bias = constant_array(bias_value)
            if matmul is not None and bias is not None and single_consumer(product) is node:
                break
        else:
            return self.reject(node, "not a MatMul output read only here plus a constant")
        a, w_value = matmul.inputs
        weight = constant_array(w_value)
        if weight is None or weight.ndim != 2 or not is_float(weight):
            return self.reject(node, "the MatMul's weight is no constant 2-D float matrix")
        if rank_of(a) != 2:
            return self.reject(node, "the MatMul's input is not known to be 2-D (Gemm takes only 2-D operands)")
        n = weight.shape[1]
        if bias.dtype != weight.dtype or bias.ndim > 2 or (bias.ndim and bias.shape[-1] not in (1, n)):
            return False
        if bias.ndim == 2 and bias.shape[0] != 1:
            return False
        self.emit(node, "Gemm", [a, w_value, bias_value], {}, node.outputs[0])
        remove_dead([matmul, node])
        return True

