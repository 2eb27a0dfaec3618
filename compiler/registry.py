"""The pass registry: names to pass classes, option coercion, plugins.

Built-in passes register themselves when ``onnxc.passes`` is imported; users register theirs
with ``@onnxc.register_pass`` and load the module with ``--plugin``.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import importlib.util
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx_ir as ir

from onnxc.errors import PipelineError
from onnxc.pass_base import Pass, PassResult

_PASSES: dict[str, type[Pass]] = {}
_BUILTINS_LOADED = False


def register_pass(target: type | Callable | None = None, *, name: str | None = None, lossless: bool = True):
    """Register a pass under its name.

    Use on a ``Pass`` subclass (made a dataclass if it is not one), or on a function
    ``f(model: ir.Model) -> bool | None`` that mutates the model in place and returns whether it
    changed anything (``None`` counts as changed)::

        @onnxc.register_pass(name="drop-docstrings")
        def drop_docstrings(model):
            for node in model.graph:
                node.doc_string = None
    """

    def decorate(obj):
        if isinstance(obj, type):
            if not issubclass(obj, Pass):
                raise TypeError(f"{obj.__name__} must derive from onnxc.Pass to be registered")
            cls = obj if dataclasses.is_dataclass(obj) else dataclasses.dataclass(obj)
            if name:
                cls.name = name
        else:
            cls = _function_pass(obj, name or obj.__name__.replace("_", "-"), lossless)
        if not cls.name:
            raise ValueError(f"pass {cls.__name__} has no name")
        existing = _PASSES.get(cls.name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"a pass named {cls.name!r} is already registered ({existing.__module__})")
        _PASSES[cls.name] = cls
        return cls

    return decorate(target) if target is not None else decorate


def _function_pass(function: Callable[[ir.Model], bool | None], pass_name: str, is_lossless: bool) -> type[Pass]:
    def call(self, model: ir.Model) -> PassResult:
        changed = function(model)
        return PassResult(model, modified=True if changed is None else bool(changed))

    cls = type(
        f"FunctionPass_{function.__name__}",
        (Pass,),
        {"name": pass_name, "lossless": is_lossless, "call": call, "__doc__": function.__doc__, "__module__": function.__module__},
    )
    return dataclasses.dataclass(cls)


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("onnxc.passes")


def registered_passes() -> dict[str, type[Pass]]:
    _load_builtins()
    return dict(sorted(_PASSES.items()))


def get_pass(name: str) -> type[Pass]:
    passes = registered_passes()
    if name not in passes:
        hint = difflib.get_close_matches(name, list(passes) + ["default"], n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else "; `onnxc passes` lists them"
        raise PipelineError(f"unknown pass {name!r}{suggestion}")
    return passes[name]


@functools.lru_cache(maxsize=None)
def _type_hints(cls: type) -> dict[str, Any]:
    # Resolving string annotations compiles them each time; pipelines create the same passes often.
    return typing.get_type_hints(cls)


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    name: str
    type_name: str
    default: Any
    help: str


def pass_options(cls: type[Pass]) -> list[OptionInfo]:
    hints = _type_hints(cls)
    infos = []
    for field in dataclasses.fields(cls):
        if field.name.startswith("_"):
            continue
        default = field.default
        if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = field.default_factory()  # type: ignore[misc]
        infos.append(OptionInfo(field.name, _type_name(hints.get(field.name, Any)), default, field.metadata.get("help", "")))
    return infos


def create_pass(name: str, options: dict[str, Any] | None = None) -> Pass:
    """Instantiate a registered pass, checking and converting option values to the field types."""
    cls = get_pass(name)
    options = dict(options or {})
    hints = _type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")}
    kwargs = {}
    for key, value in options.items():
        key_norm = key.replace("-", "_")
        if key_norm not in known:
            valid = ", ".join(sorted(known)) or "none"
            raise PipelineError(f"pass {name!r} has no option {key!r} (options: {valid})")
        kwargs[key_norm] = _coerce(value, hints.get(key_norm, Any), f"{name}({key}=...)")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise PipelineError(f"pass {name!r}: {error}") from None


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except PipelineError as error:
                errors.append(str(error))
        raise PipelineError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise PipelineError(f"{where}: {value!r} is not one of {', '.join(map(str, args))}")
    if origin in (list, tuple):
        items = value if isinstance(value, (list, tuple)) else [value]
        inner = args[0] if args else Any
        converted = [_coerce(v, inner, where) for v in items]
        return converted if origin is list else tuple(converted)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise PipelineError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise PipelineError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise PipelineError(f"{where}: expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise PipelineError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise PipelineError(f"{where}: expected a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, (list, dict)):
            raise PipelineError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(annotation))
    return str(annotation).replace("typing.", "")


def load_plugin(spec: str) -> None:
    """Import a module (``pkg.module``) or a Python file path so its passes register themselves."""
    path = Path(spec)
    try:
        if spec.endswith(".py") or path.is_file():
            if not path.is_file():
                raise PipelineError(f"plugin file not found: {spec}")
            module_name = f"onnxc_plugin_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
            sys.modules[module_name] = module
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            importlib.import_module(spec)
    except ModuleNotFoundError as error:
        raise PipelineError(f"cannot import plugin {spec!r}: {error}") from None
