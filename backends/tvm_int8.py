"""Real INT8 for TVM: Q/DQ compute units rewritten into integer kernels in the Relax module.

TVM's ONNX importer keeps QDQ as it is written: dequantize, float convolution, quantize. That
simulates INT8 and runs no faster. This rewrite finds each ``conv2d`` or ``matmul`` whose input
is ``dequantize(x_q)`` with one scale and zero point and whose weight is a dequantized int8
constant with zero zero points, and computes it as the integer kernel INT8 backends run::

    acc   = conv2d(pad(x_q, value=zx), w_q, out_dtype=int32)      # uint8/int8 x int8 -> int32
    acc  += bias_q - zx * sum(w_q)                                 # int32 constants
    y     = float(acc) * (sx * sw)                                 # requantized by the Q after it

Padding with the zero point keeps ``pad`` exact (a zero pad would add ``-zx * w`` at the borders);
subtracting ``zx * sum(w_q)`` per output channel removes the activation zero point from the
product. The bias joins in int32 when the model stores it as int32 at scale ``sx * sw`` (the
onnxruntime/TVM placement profiles do); a float bias is added after the scale. The ``quantize``
that follows stays: it rounds the float result into the next layer's uint8/int8, i.e. the
requantization. Activation x activation matmuls (attention) stay float and are counted.
"""
from __future__ import annotations

import dataclasses

import numpy as np

_INTEGER = ("int8", "uint8")


@dataclasses.dataclass
class IntegerReport:
    """What the rewrite did: one line per integer kernel ("conv2d uint8 x int8 -> int32 ..."), and
    how many conv2d/matmul ops on dequantized inputs stayed float."""

    rewritten: list[str] = dataclasses.field(default_factory=list)
    left_float: int = 0


def integer_compute(module):
    """``module`` with its Q/DQ conv2d/matmul units as integer kernels, and a report."""
    from tvm import relax

    report = IntegerReport()
    mutator = _integer_mutator()(module, report)
    updated = {}
    for global_var, function in module.functions.items():
        if isinstance(function, relax.Function):
            updated[global_var] = mutator.rewrite(function)
    for global_var, function in updated.items():
        module[global_var] = function
    return relax.transform.DeadCodeElimination()(module), report


def lowered_ops(module) -> list[str]:
    """Every conv2d/matmul call in ``module``'s Relax functions as "op input x weight -> output"
    dtypes: what the build runs, for the metadata and for tests."""
    from tvm import relax

    found = []

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") in ("relax.nn.conv2d", "relax.matmul"):
            data, weight = expr.args[0], expr.args[1]
            found.append(f"{expr.op.name.rsplit('.', 1)[-1]} {data.ty.dtype} x {weight.ty.dtype} -> {expr.ty.dtype}")

    for function in module.functions.values():
        if isinstance(function, relax.Function):
            relax.analysis.post_order_visit(function, visit)
    return found


def _integer_mutator():
    """The mutator class, made on first use so that importing this module does not import TVM."""
    import tvm
    from tvm import relax

    conv2d, matmul = tvm.ir.Op.get("relax.nn.conv2d"), tvm.ir.Op.get("relax.matmul")
    dequantize, reshape, add = tvm.ir.Op.get("relax.dequantize"), tvm.ir.Op.get("relax.reshape"), tvm.ir.Op.get("relax.add")
    permute_dims = tvm.ir.Op.get("relax.permute_dims")

    def const(expr) -> np.ndarray | None:
        return expr.value.numpy() if isinstance(expr, tvm.ir.expr.Constant) else None

    @relax.expr_functor.mutator
    class IntegerMutator(relax.PyExprMutator):
        def __init__(self, module, report: IntegerReport):
            super().__init__(module)
            self.report = report
            self.values: dict = {}
            self.users: dict = {}
            self.replaced: dict = {}

        def rewrite(self, function):
            self.values, self.users, self.replaced = {}, {}, {}
            for block in function.body.blocks:
                for binding in block.bindings:
                    self.values[binding.var] = binding.value
                    for used in _vars_used(binding.value):
                        self.users.setdefault(used, []).append(binding.var)
            return self.visit_expr(function)

        def visit_var_binding_(self, binding) -> None:
            if binding.var in self.replaced:
                self.set_var_remap(binding.var, self.replaced[binding.var])
                return
            value = binding.value
            if isinstance(value, relax.Call) and value.op in (conv2d, matmul):
                result = self._integer(binding.var, value)
                if result is not None:
                    self.set_var_remap(binding.var, result)
                    return
                if self._dequantized(value.args[0]) is not None:
                    self.report.left_float += 1
            super().visit_var_binding_(binding)

        def _dequantized(self, var):
            """(x_q, scale, zero point, axis) when ``var`` is bound to a dequantize of int8/uint8."""
            value = self.values.get(var)
            if not (isinstance(value, relax.Call) and value.op == dequantize):
                return None
            x_q, scale, zero = value.args
            if x_q.ty.dtype not in _INTEGER or const(scale) is None or const(zero) is None:
                return None
            return x_q, const(scale), const(zero), int(value.attrs.axis)

        def _weight(self, var, is_conv: bool):
            """(w_q, per-output-channel scale) for a dequantized int8 constant with zero zero points,
            laid out as the op takes it (OIHW for conv2d, [K, N] for matmul)."""
            value, transposed = self.values.get(var), False
            if not is_conv and isinstance(value, relax.Call) and value.op == permute_dims:
                if [int(a) for a in value.attrs.axes] != [1, 0]:
                    return None
                var, transposed = value.args[0], True
            found = self._dequantized(var)
            if found is None:
                return None
            w_q, scale, zero, axis = found
            w = const(w_q)
            if w is None or w.dtype != np.int8 or np.any(zero != 0):
                return None
            out_axis = 0 if is_conv or transposed else w.ndim - 1
            if scale.size != 1 and (axis % w.ndim != out_axis or w.ndim != (4 if is_conv else 2)):
                return None
            if transposed:
                w = np.ascontiguousarray(w.T)
            channels = w.shape[0] if is_conv else w.shape[-1]
            return w, np.broadcast_to(scale.astype(np.float32).reshape(-1), (channels,))

        def _int32_bias(self, var, scale: np.ndarray, is_conv: bool):
            """(the add binding, int32 bias) when ``var``'s one user adds an int32 bias stored at
            the product's scale, one value per output channel."""
            users = self.users.get(var, [])
            if len(users) != 1:
                return None
            add_value = self.values[users[0]]
            if not (isinstance(add_value, relax.Call) and add_value.op == add):
                return None
            other = add_value.args[1] if add_value.args[0].same_as(var) else add_value.args[0]
            per_channel = [1, scale.size, 1, 1] if is_conv else [scale.size]
            shape = [int(d) for d in other.ty.shape]
            if shape != per_channel and not (not is_conv and shape[-1:] == per_channel and set(shape[:-1]) <= {1}):
                return None
            value = self.values.get(other)
            if isinstance(value, relax.Call) and value.op == reshape:
                value = self.values.get(value.args[0])
            if not (isinstance(value, relax.Call) and value.op == dequantize):
                return None
            bias, b_scale, b_zero = (const(arg) for arg in value.args)
            if bias is None or b_scale is None or b_zero is None:
                return None
            if bias.dtype != np.int32 or bias.size != scale.size or np.any(b_zero != 0):
                return None
            if not np.allclose(np.broadcast_to(b_scale.reshape(-1), scale.shape), scale, rtol=1e-5, atol=0):
                return None
            return users[0], bias.reshape(-1).astype(np.int64)

        def _integer(self, var, call):
            is_conv = call.op == conv2d
            data, weight = call.args
            activation = self._dequantized(data)
            found = self._weight(weight, is_conv)
            if activation is None or found is None:
                return None
            x_q, x_scale, x_zero, _ = activation
            if x_scale.size != 1 or x_zero.size != 1:
                return None
            w, w_scale = found
            if is_conv and (call.attrs.data_layout != "NCHW" or call.attrs.kernel_layout != "OIHW"):
                return None
            zx = int(x_zero.reshape(-1)[0])
            scale = (float(x_scale.reshape(-1)[0]) * w_scale.astype(np.float64)).astype(np.float32)
            correction = -zx * w.astype(np.int64).sum(axis=(1, 2, 3) if is_conv else 0)
            bias = self._int32_bias(var, scale, is_conv)
            if bias is not None:
                add_var, bias_q = bias
                correction = correction + bias_q
            if np.abs(correction).max() >= 2**31:
                return None
            x_q = self.visit_expr(x_q)
            emit = self.builder_.emit
            if is_conv:
                top, left, bottom, right = (int(p) for p in call.attrs.padding)
                padded = x_q
                if top or left or bottom or right:
                    padded = emit(relax.op.nn.pad(x_q, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(zx)))
                acc = emit(relax.op.nn.conv2d(padded, relax.const(w), strides=call.attrs.strides, padding=[0, 0, 0, 0],
                                              dilation=call.attrs.dilation, groups=int(call.attrs.groups),
                                              out_dtype="int32"))
                channel_shape = (1, -1, 1, 1)
            else:
                acc = emit(relax.op.matmul(x_q, relax.const(w), out_dtype="int32"))
                channel_shape = (-1,)
            self.report.rewritten.append(
                f"{'conv2d' if is_conv else 'matmul'} {x_q.ty.dtype} x int8 -> int32 "
                f"{[int(d) for d in acc.ty.shape]}{' + int32 bias' if bias is not None else ''}")
            if np.any(correction != 0):
                acc = emit(relax.op.add(acc, relax.const(correction.astype(np.int32).reshape(channel_shape))))
            result = emit(relax.op.multiply(relax.op.astype(acc, "float32"),
                                            relax.const(scale.reshape(channel_shape))))
            if bias is not None:
                self.replaced[add_var] = result
            return result

    return IntegerMutator


def _vars_used(expr) -> list:
    from tvm import relax

    used = []
    relax.analysis.post_order_visit(expr, lambda e: used.append(e) if isinstance(e, relax.Var) else None)
    return used
