"""Initializers that are also graph inputs: freeze them into constants, keep them valid per IR version.

Exporters of IR < 4 (Caffe2, early PyTorch) had to list every initializer as a graph input. ONNX
reads such an initializer as a default a caller may override, so onnxc passes treat it as a
variable and fold nothing that reads it. ``freeze-weights`` says the weights are fixed (the model
loses those inputs); ``initializer-inputs`` runs last in the default pipeline to keep a model
that stays at IR < 4 valid and to tell the user about weights that are overridable inputs.
"""
from __future__ import annotations

from typing import Any

import onnx_ir as ir

from onnxc.analysis import overridable_weights
from onnxc.graph.edit import list_initializers_as_inputs
from onnxc.irutil import FIRST_IR_WITHOUT_INITIALIZER_INPUTS
from onnxc.pass_base import Pass, PassResult
from onnxc.registry import register_pass

# How many removed or added input names a report spells out.
_NAMES_SHOWN = 5


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_NAMES_SHOWN])
    return f"{len(names)}: {shown}" + (", ..." if len(names) > _NAMES_SHOWN else "")


@register_pass
class FreezeWeights(Pass):
    """Turn initializers that are also graph inputs into constants: the model loses those inputs.

    The model's interface changes on purpose (a caller can no longer feed those tensors), which
    lets every other pass fold through the weights. IR versions before 4 cannot hold an
    initializer that is not an input, so the model moves to IR 4, which changes nothing else.
    """

    name = "freeze-weights"

    def __post_init__(self) -> None:
        self._removed: list[str] = []
        self._ir_version: tuple[int, int] | None = None

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        frozen = [value for value in graph.inputs if value.is_initializer()]
        self._removed = [value.name or "" for value in frozen]
        self._ir_version = None
        if not frozen:
            return PassResult(model, False)
        kept = [value for value in graph.inputs if not value.is_initializer()]
        graph.inputs.clear()
        graph.inputs.extend(kept)
        if model.ir_version < FIRST_IR_WITHOUT_INITIALIZER_INPUTS:
            self._ir_version = (model.ir_version, FIRST_IR_WITHOUT_INITIALIZER_INPUTS)
            model.ir_version = FIRST_IR_WITHOUT_INITIALIZER_INPUTS
        return PassResult(model, True)

    def details(self) -> dict[str, Any]:
        if not self._removed:
            return {}
        details: dict[str, Any] = {"inputs_removed": _names(self._removed)}
        if self._ir_version is not None:
            details["ir_version"] = f"{self._ir_version[0]} -> {self._ir_version[1]}"
        return details


@register_pass
class InitializerInputs(Pass):
    """List new initializers as graph inputs where the IR version (< 4) requires it; report overridable weights.

    Passes add initializers (folded weights, lifted constants) as constants, which an IR < 4
    model cannot hold: they are listed as inputs at the end, as the model's own weights are.
    """

    name = "initializer-inputs"

    def __post_init__(self) -> None:
        self._details: dict[str, Any] = {}

    def call(self, model: ir.Model) -> PassResult:
        self._details = {}
        # Counted before listing: the model's own overridable weights are what the user must know about.
        overridable = overridable_weights(model)
        if overridable is not None:
            self._details["overridable_weights"] = overridable["note"]
        added, turned = list_initializers_as_inputs(model)
        if added:
            self._details[f"inputs_added_for_ir_{model.ir_version}"] = _names(added)
        if turned:
            self._details[f"subgraph_initializers_made_constant_for_ir_{model.ir_version}"] = turned
        return PassResult(model, bool(added) or turned > 0)

    def details(self) -> dict[str, Any]:
        return dict(self._details)
