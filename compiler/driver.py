"""From a pipeline description to a compiled model: ``compile``, ``compile_file`` (what the
``compile`` and ``demo`` commands run) and the default pipeline."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx_ir as ir

from onnxc.context import Context
from onnxc.errors import OnnxcError, PipelineError
from onnxc.io import load, save
from onnxc.manager import CompileReport, Group, PassManager, Step
from onnxc.pass_base import Pass
from onnxc.pipeline import PassSpec, parse_pipeline
from onnxc.registry import create_pass, registered_passes

DEFAULT = "default"


def default_pipeline(max_iterations: int = 10) -> list[Step]:
    """The lossless pipeline: cleanup and fusion run together to a fixed point, then ordering."""
    from onnxc.passes import DEFAULT_FIXED_POINT, DEFAULT_FINAL

    registered_passes()
    return [
        Group([create_pass(name) for name in DEFAULT_FIXED_POINT], name=DEFAULT, max_iterations=max_iterations),
        *[create_pass(name) for name in DEFAULT_FINAL],
    ]


def build_steps(pipeline: str | Sequence[PassSpec | Pass | str] | None) -> list[Step]:
    """Turn a pipeline string, specs, or pass objects into runnable steps (``None`` = default)."""
    if pipeline is None:
        return default_pipeline()
    items: Sequence[Any] = parse_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
    steps: list[Step] = []
    for item in items:
        if isinstance(item, Pass):
            steps.append(item)
            continue
        spec = item if isinstance(item, PassSpec) else parse_pipeline(item)[0]
        if spec.name == DEFAULT:
            unknown = set(spec.options) - {"max_iterations"}
            if unknown:
                raise PipelineError(f"pass 'default' has no option {sorted(unknown)[0]!r} (options: max_iterations)")
            steps.extend(default_pipeline(int(spec.options.get("max_iterations", 10))))
        else:
            steps.append(create_pass(spec.name, spec.options))
    return steps


def compile(
    model: ir.Model,
    pipeline: str | Sequence[PassSpec | Pass | str] | None = None,
    *,
    verify: bool = False,
    context: Context | None = None,
) -> CompileReport:
    """Run ``pipeline`` over ``model`` in place and return the per-pass report.

    ``pipeline`` is a string such as ``"default,quantize(method=entropy)"``, a list of pass
    objects or specs, or None for the default lossless pipeline.
    """
    return PassManager(build_steps(pipeline), context, verify=verify).run(model)


def compile_file(
    source: Path,
    output: Path,
    pipeline: str | Sequence[PassSpec | Pass | str] | None = None,
    *,
    context: Context | None = None,
    verify: bool = False,
    external_data: bool | None = None,
) -> tuple[CompileReport, list[Path]]:
    """Compile the model file ``source`` into ``output`` (never over ``source``); the report and the
    files written. ``external_data``: weights in a side file (None: when large or the input had one)."""
    steps = build_steps(pipeline)
    if Path(output).resolve() == Path(source).resolve():
        raise OnnxcError(f"output {output} is the input file; onnxc never overwrites its input, choose another name")
    model = load(source)
    report = PassManager(steps, context, verify=verify).run(model)
    return report, save(model, output, external_data=external_data)
