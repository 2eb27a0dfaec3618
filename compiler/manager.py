"""The PassManager: runs a pipeline, verifies each pass, and records what each one did."""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Union

import onnx
import onnx_ir as ir

from onnxc import speed
from onnxc.context import Context
from onnxc.errors import InvalidModelError, OnnxcError, PassCrashedError, PassFailedError
from onnxc.graph.edit import list_initializers_as_inputs
from onnxc.inputs import random_feeds, resolve_input_shapes
from onnxc.io import tensor_bytes
from onnxc.irutil import all_graphs, constant_node_tensors
from onnxc.pass_base import Pass, unmet_requirements
from onnxc.progress import progress_bar
from onnxc.verify import Comparison, compare_outputs, run_feeds

LOSSLESS_ATOL = 1e-4
LOSSLESS_RTOL = 1e-4
VERIFICATION_FEEDS = 2


@dataclasses.dataclass
class Group:
    """Passes run together, repeatedly until none changes the model when ``fixed_point`` is set."""

    passes: list["Step"]
    name: str = "group"
    fixed_point: bool = True
    max_iterations: int = 10


Step = Union[Pass, Group]


@dataclasses.dataclass
class PassRecord:
    """What one pass did over a run (summed over its applications inside fixed-point groups)."""

    name: str
    description: str
    lossless: bool
    applications: int = 0
    changes: int = 0
    time_s: float = 0.0
    nodes_removed: int = 0
    params_removed: int = 0
    bytes_removed: int = 0
    max_abs_error: float | None = None
    min_cosine: float | None = None
    details: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class CompileReport:
    passes: list[PassRecord]
    before: dict
    after: dict
    total_time_s: float
    iterations: dict[str, int]
    error_vs_original: dict | None = None
    speed_check: dict | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class PassManager:
    """Run ``steps`` over a model in place, with optional per-pass numerical verification.

    With ``verify=True`` every pass that changed the model is checked against the model before
    it on the verification inputs: a lossless pass whose outputs moved beyond float tolerance
    stops the run with an error naming it; a lossy pass has its error recorded.
    """

    def __init__(
        self,
        steps: Sequence[Step],
        context: Context | None = None,
        *,
        verify: bool = False,
        atol: float = LOSSLESS_ATOL,
        rtol: float = LOSSLESS_RTOL,
    ):
        self.steps = list(steps)
        self.context = context or Context()
        self.verify = verify
        self.atol = atol
        self.rtol = rtol
        self._records: dict[int, PassRecord] = {}
        self._order: list[int] = []
        self._iterations: dict[str, int] = {}
        self._feeds = None
        self._stats: dict = {}
        self._count = _StatsCounter()
        self._modifications = 0
        self._unchanged_since: dict[int, int] = {}
        self._previous_outputs = None
        self._original_outputs = None

    def run(self, model: ir.Model) -> CompileReport:
        start = time.perf_counter()
        passes = _passes(self.steps)
        # Before anything runs: a missing input should not cost the minutes of the passes before it.
        for pass_ in passes:
            unmet = unmet_requirements(pass_, self.context)
            if unmet:
                raise OnnxcError(f"{pass_.name} needs {'; '.join(unmet)}")
        before = self._stats = self._count(model)
        if self.verify:
            shapes = resolve_input_shapes(model, self.context.input_shapes)
            given = self.context.verification_inputs or self._calibration_feeds(model)
            self._feeds = given or [
                random_feeds(model, shapes, seed=self.context.seed + i) for i in range(VERIFICATION_FEEDS)
            ]
            try:
                self._original_outputs = self._previous_outputs = run_feeds(model, self._feeds, label="input model")
            except InvalidModelError as error:
                if given:
                    raise
                raise InvalidModelError(
                    f"{error} (on generated verification inputs: give concrete shapes with --shape NAME=DIMS "
                    "or real inputs)"
                ) from None
        claims = [p.describe() for p in passes if p.claims_speed()] if self.context.check_speed else []
        original = speed.snapshot(model) if claims else None
        with progress_bar(total=len(passes), desc="passes", enabled=self.context.progress) as bar:
            for step in self.steps:
                self._run_step(model, step, bar)
        # Whatever the pipeline, an IR < 4 model's new initializers must also be graph inputs to be valid.
        if list_initializers_as_inputs(model) != ([], 0):
            self._stats = self._count(model)
        speed_check = self._keep_faster(model, original, claims) if claims else None
        error = None
        if self.verify:
            if speed_check and speed_check["kept"] == "input":
                self._previous_outputs = self._original_outputs
            error = compare_outputs(self._original_outputs, self._previous_outputs).as_dict()
        records = [self._records[key] for key in self._order]
        return CompileReport(records, before, self._stats, time.perf_counter() - start, self._iterations, error,
                             speed_check)

    def _keep_faster(self, model: ir.Model, original: onnx.ModelProto | None, claims: list[str]) -> dict:
        """Time the compiled model against the input for the passes that promised speed."""
        if original is None:
            return {"claimed_by": claims, "kept": "output", "reason": "not timed: the model is too large to keep a copy"}
        if not self._modifications:
            return {"claimed_by": claims, "kept": "output", "reason": "unchanged"}
        feed = self._feeds[0] if self._feeds else self._timing_feed(model)
        result = {"claimed_by": claims, **speed.keep_faster(model, original, feed, self.context.target)}
        if result["kept"] == "input":
            self._stats = self._count(model)
        return result

    def _timing_feed(self, model: ir.Model) -> dict:
        given = self._calibration_feeds(model)[:1]
        return given[0] if given else random_feeds(model, resolve_input_shapes(model, self.context.input_shapes),
                                                   seed=self.context.seed)

    def _calibration_feeds(self, model: ir.Model) -> list:
        """The first calibration feeds when the Context has real ones: a lossy pass is judged
        better on real data, and at the shapes the model really runs at, than on generated inputs."""
        if self.context.calibration_data is None:
            return []
        return list(self.context.calibration(model, VERIFICATION_FEEDS))

    def _run_step(self, model: ir.Model, step: Step, bar) -> bool:
        if isinstance(step, Group):
            changed_any = False
            for iteration in range(step.max_iterations):
                self._iterations[step.name] = iteration + 1
                changed = False
                for inner in step.passes:
                    changed |= self._run_step(model, inner, bar if iteration == 0 else None)
                changed_any |= changed
                if not (step.fixed_point and changed):
                    break
            return changed_any
        return self._run_pass(model, step, bar)

    def _run_pass(self, model: ir.Model, pass_: Pass, bar) -> bool:
        if self._unchanged_since.get(id(pass_)) == self._modifications:
            # It found nothing to do and no pass has changed the model since: it would find nothing again.
            return False
        record = self._records.get(id(pass_))
        stats_before = self._stats
        if record is None:
            record = PassRecord(pass_.name, pass_.describe(), pass_.lossless)
            self._records[id(pass_)] = record
            self._order.append(id(pass_))
        if bar is not None:
            bar.set_postfix_str(pass_.name)
        started = time.perf_counter()
        try:
            result = pass_.bind(self.context)(model)
        except OnnxcError:
            raise
        except Exception as error:  # noqa: BLE001 - anything else is a bug in the pass: name it, keep the traceback
            raise PassCrashedError(pass_.describe(), error) from error
        record.time_s += time.perf_counter() - started
        record.applications += 1
        record.changes += int(result.modified)
        if result.modified:
            self._modifications += 1
        else:
            self._unchanged_since[id(pass_)] = self._modifications
        record.details.update(pass_.details())
        # Counting is linear in the graph, so it is redone only when the pass changed something.
        stats_after = self._stats = self._count(model) if result.modified else stats_before
        record.nodes_removed += stats_before["nodes"] - stats_after["nodes"]
        record.params_removed += stats_before["params"] - stats_after["params"]
        record.bytes_removed += stats_before["weight_bytes"] - stats_after["weight_bytes"]
        if bar is not None:
            bar.update(1)
        if self.verify and result.modified:
            self._check(model, pass_, record)
        return result.modified

    def _check(self, model: ir.Model, pass_: Pass, record: PassRecord) -> None:
        outputs = run_feeds(model, self._feeds, label=f"model after pass {pass_.name!r}")
        comparison: Comparison = compare_outputs(self._previous_outputs, outputs)
        record.max_abs_error = max(record.max_abs_error or 0.0, comparison.max_abs)
        record.min_cosine = min(record.min_cosine if record.min_cosine is not None else 1.0, comparison.min_cosine)
        if pass_.lossless and not comparison.within(self.atol, self.rtol):
            raise PassFailedError(
                f"pass {pass_.describe()!r} is lossless but changed the outputs ({comparison.summary()}); "
                "run without it or report the model"
            )
        self._previous_outputs = outputs


class _StatsCounter:
    """``analysis.model_stats``'s counts, each tensor's size computed once per run.

    Sizes come from shapes, which parsed tensors rebuild on every read; the manager counts after
    every change, so it keeps the sizes of the tensors it saw last time (only those, so no tensor
    a pass dropped stays alive).
    """

    def __init__(self) -> None:
        self._sizes: dict[int, tuple[ir.TensorProtocol, int, int]] = {}

    def __call__(self, model: ir.Model) -> dict:
        sizes: dict[int, tuple[ir.TensorProtocol, int, int]] = {}
        nodes = params = nbytes = 0
        for graph in all_graphs(model):
            nodes += len(graph)
            weights = [value.const_value for value in graph.initializers.values()]
            constants = constant_node_tensors(graph)
            for tensor, is_initializer in [*((t, True) for t in weights), *((t, False) for t in constants)]:
                if tensor is None:
                    continue
                entry = self._sizes.get(id(tensor))
                if entry is None or entry[0] is not tensor:
                    entry = (tensor, math.prod(tensor.shape.dims), tensor_bytes(tensor))
                sizes[id(tensor)] = entry
                params += entry[1]
                # weight_bytes counts initializers (what io.weight_bytes sizes memory by)
                nbytes += entry[2] if is_initializer else 0
        self._sizes = sizes
        return {"nodes": nodes, "params": params, "weight_bytes": nbytes}


def _passes(steps: Sequence[Step]) -> list[Pass]:
    return [p for s in steps for p in (_passes(s.passes) if isinstance(s, Group) else [s])]
