"""The ``Pass`` base class every onnxc pass derives from.

A pass is a dataclass: its fields are its options (the same names a pipeline string or a recipe
uses, e.g. ``prune(ratio=0.3)``). It states what it needs from the Context (``needs``), whether it keeps
the model's numbers (``lossless``), and implements ``call(model) -> PassResult`` by mutating the
IR in place through the use-def API.
"""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from onnxc.context import Context
from onnxc.errors import OnnxcError

__all__ = ["Pass", "PassResult", "option", "REQUIREMENTS", "unmet_requirements"]

# What a pass may require of the Context: how to tell it is there, and how a user provides it.
REQUIREMENTS: dict[str, tuple[Callable[[Context], bool], str]] = {
    "calibration": (
        lambda context: context.calibration_data is not None or context.calibration_allow_random,
        "calibration data: give --calib-data PATH (a folder of .npz feeds, images, ...; Context(calibration_data=...) "
        "from Python) or --calib-random",
    ),
}


def option(default: Any, help: str) -> Any:
    """Declare a pass option with its default and the one-line help ``onnxc passes`` shows."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


class Pass(InPlacePass):
    """Base of onnxc passes.

    Class attributes a subclass sets:
        name: the registered name used in pipelines.
        lossless: True when outputs must match the input model within float tolerance.
        requirements: what must be available in the Context, from :data:`REQUIREMENTS`
            (``"calibration"``), checked before the pipeline runs; a pass whose needs depend on
            its options overrides ``needs``, one whose needs depend on the model calls
            ``require`` once it knows (onnx-ir's ``requires``/``ensures`` check the model itself).
    """

    name: ClassVar[str] = ""
    lossless: ClassVar[bool] = True
    requirements: ClassVar[tuple[str, ...]] = ()

    _context: Context | None = None

    @property
    def context(self) -> Context:
        if self._context is None:
            self._context = Context()
        return self._context

    def bind(self, context: Context) -> "Pass":
        """Attach the run's context; the PassManager calls this before running the pass."""
        self._context = context
        return self

    def needs(self) -> tuple[str, ...]:
        """What this pass, as configured, needs from the Context; checked before the pipeline runs."""
        return self.requirements

    def require(self, name: str) -> None:
        """Stop with one clear line when the Context lacks ``name`` (a key of :data:`REQUIREMENTS`)."""
        unmet = unmet_requirements(self, self.context, (name,))
        if unmet:
            raise OnnxcError(f"{self.name} needs {unmet[0]}")

    @classmethod
    def summary(cls) -> str:
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} if dataclasses.is_dataclass(self) else {}

    def describe(self) -> str:
        """The pass as a pipeline-string item, e.g. ``quantize(method=entropy)``."""
        changed = {
            f.name: getattr(self, f.name)
            for f in (dataclasses.fields(self) if dataclasses.is_dataclass(self) else ())
            if getattr(self, f.name) != _field_default(f)
        }
        if not changed:
            return self.name
        return f"{self.name}(" + ",".join(f"{k}={_format_value(v)}" for k, v in changed.items()) + ")"

    def details(self) -> dict[str, Any]:
        """What the last run decided, for the report (e.g. layers kept in float); JSON-able."""
        return {}

    def claims_speed(self) -> bool:
        """True when this pass, as configured, promises a model that is never slower: the
        PassManager then times the compiled model against the input and keeps the faster."""
        return False

    def call(self, model: ir.Model) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError


def unmet_requirements(pass_: Pass, context: Context, names: tuple[str, ...] | None = None) -> list[str]:
    """How to provide each of ``names`` (default: what ``pass_`` needs) that ``context`` lacks."""
    names = pass_.needs() if names is None else names
    unknown = [name for name in names if name not in REQUIREMENTS]
    if unknown:
        raise ValueError(f"pass {pass_.name!r} requires unknown {unknown}; known: {sorted(REQUIREMENTS)}")
    return [REQUIREMENTS[name][1] for name in names if not REQUIREMENTS[name][0](context)]


def _field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    return str(value)
