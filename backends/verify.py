"""Does a lowered artifact compute what the ONNX model computes? Run its :class:`Runner` and ORT
on the same feeds and judge each output against a stated bound.

Bounds, per output (``max_rel`` is the largest absolute error over the reference's largest
magnitude across all the feeds: an input on which the output is near zero everywhere, a blank
page for a text detector, does not turn a 1e-5 error into a large relative one):

- float model at f32: ``max_rel <= 1e-3``;
- float model at a reduced precision (bf16, f16): ``max_rel <= 3e-2`` (8 mantissa bits, errors
  add up over the layers);
- quantized (Q/DQ) model whose output comes out of a DequantizeLinear (through data movement
  only): ``max_abs <=`` one output quantization step, that DequantizeLinear's scale. Runtimes
  round ties and fuse requantization differently, so an activation a hair from a rounding edge
  can land one step apart; the output may then differ by a step, not more;
- quantized model whose output is computed in float from quantized inputs (a float head), or
  a model quantized with integer ops (DynamicQuantizeLinear, MatMulInteger, ConvInteger,
  QLinear*): ``rel_error <= 5e-2`` (RMS error over the output's spread,
  :mod:`onnxc.search.errors`, the measure quantize's accuracy guard bounds) and cosine >= 0.999.
  A one-step flip of an input moves such an output by an amount no scale in the graph states, at
  a few positions: PP-OCRv4's text detector on OpenVINO differs from ORT by up to 0.29 on a
  handful of its sigmoid map's pixels (rel_error 0.034), yet its mask agrees with the float
  model's as well as ORT's own int8 run does (IoU 0.974 vs 0.976). So this bound judges the bulk
  of the output, not its worst element (and a runtime may dequantize integer weights and skip
  dynamic activation quantization altogether). Integers a quantizing op computes (a u8
  activation, an i32 accumulator) are judged the same way, as float values.
  ORT itself does not compute a Q/DQ graph's own arithmetic (DequantizeLinear, the float op,
  QuantizeLinear): its integer kernels requantize once, in their own rounding. Where an output
  fails that bound, ORT is run once more with its graph optimizations off (the Q/DQ arithmetic
  as written) and the bound widens to twice ORT's own distance from it, in rel_error and in
  angle: two implementations that each stay that close to the graph's arithmetic can be that far
  apart. layout-cdla (PicoDet, 60 int8 layers) on OpenVINO is 0.057 from ORT while ORT is 0.053
  from the Q/DQ arithmetic; captcha-crnn's real fault (cosine 0.66) is far outside either.

Where a mismatch starts: when outputs are outside their bound and the runner can keep values
inside the model (:class:`~onnxc.backends.base.ExposingRunner`), :func:`locate_divergence` keeps
them as outputs of both runtimes and judges each by the same bounds (one step bounds graph
outputs only), in one line: the first op whose output diverges while its inputs agree, or,
where keeping values makes the mismatch go, the value across which the backend's fusion
computes something else. Measured on the corpus (2 cores, shared): tashkeel-bilstm-int8, 49
nodes, an op in 2 runs and 1-2.4 s; captcha-crnn, 1407 nodes, a fusion in 11 runs and 25-33 s;
at most ``LOCATE_SECONDS`` in all.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxc.backends.base import ExposingRunner, Feeds, Runner
from onnxc.errors import OnnxcError
from onnxc.irutil import constant_array
from onnxc.search.errors import output_errors
from onnxc.verify import compare_outputs

FLOAT_RTOL = 1e-3
REDUCED_PRECISION_RTOL = 3e-2
QUANTIZED_RTOL = 5e-2
QUANTIZED_MIN_COSINE = 0.999
STEP_ROUNDING = 1e-5
REDUCED_PRECISIONS = frozenset({"bf16", "f16", "fp16"})
QUANTIZING_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                            "ConvInteger", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"})
# Localization (:func:`locate_divergence`), run only on a mismatch: values kept per run (each
# run compiles the artifact again and builds an ORT session), and the seconds it may take in all.
LOCATE_VALUES_PER_RUN = 256
LOCATE_SECONDS = 60.0
# Bytes of kept values per run and runtime (ORT's and the artifact's each hold them), by the
# values' declared shapes, a symbolic dimension counted as 1.
LOCATE_BYTES_PER_RUN = 1 << 30
# Runs that follow a divergence upstream when keeping fewer values moves it there.
MAX_UPSTREAM_STEPS = 6
_FLOAT_OF_QUANTIZED = "float output of a quantized model"
# Ops that move or select values without changing them: an output behind them keeps its step.
_PASS_THROUGH = frozenset({"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "MaxPool",
                           "Slice", "Gather", "Split", "Concat", "Expand", "Tile", "DepthToSpace", "SpaceToDepth"})


@dataclasses.dataclass(frozen=True)
class OutputCheck:
    """One output's error against ORT and the bound it was held to."""

    name: str
    max_abs: float
    max_rel: float
    cosine: float
    rule: str
    passed: bool
    rel_error: float | None = None  # RMS error over the output's spread (float outputs)


@dataclasses.dataclass(frozen=True)
class Divergence:
    """Where an artifact's values first depart from ORT's (:func:`locate_divergence`).

    ``cause``: "op" (``node``'s output ``value`` diverges while its inputs agree), "fusion" (no
    kept value diverges: keeping values removes the mismatch, ``value`` the one whose keeping
    alone does when found), or "unknown" (not located; ``line`` says why).
    """

    line: str
    cause: str
    op_type: str | None = None
    node: str | None = None
    value: str | None = None
    runs: int = 0
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class Verification:
    feeds: int
    outputs: list[OutputCheck]
    divergence: Divergence | None = None

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.outputs)

    def lines(self) -> list[str]:
        lines = [f"{c.name}: max abs {c.max_abs:.3g}  rel {c.max_rel:.3g}  "
                 + ("" if c.rel_error is None else f"rel_error {c.rel_error:.3g}  ")
                 + f"cosine {c.cosine:.6f}  [{c.rule}] {'ok' if c.passed else 'MISMATCH'}" for c in self.outputs]
        return lines + ([] if self.divergence is None else [self.divergence.line])

    def as_dict(self) -> dict:
        record = {"feeds": self.feeds, "passed": self.passed, "outputs": [dataclasses.asdict(c) for c in self.outputs]}
        if self.divergence is not None:
            record["divergence"] = dataclasses.asdict(self.divergence)
        return record


def verify_runner(runner: Runner, model: ir.Model, feeds: Sequence[Feeds], *, precision: str | None = None,
                  locate: bool = True) -> Verification:
    """Run ``runner`` and ORT (on ``model``) on ``feeds`` and judge every output (module docstring).
    On a mismatch, with ``locate`` and a runner that can keep inner values
    (:class:`~onnxc.backends.base.ExposingRunner`), say where it starts (:func:`locate_divergence`)."""
    from onnxc.runtime import OrtRunner

    with OrtRunner(model, label="ONNX model") as reference_runner:
        reference = [reference_runner.run(feed) for feed in feeds]
    candidate = [runner.run(feed) for feed in feeds]
    facts = _GraphFacts.of(model)
    checks = judge_values(model, reference, candidate, precision, facts=facts)
    widened = [check.name for check in checks if not check.passed and check.rule.startswith(_FLOAT_OF_QUANTIZED)]
    if widened:
        checks = judge_values(model, reference, candidate, precision,
                              ort_own_distance(model, feeds, reference, widened), facts=facts)
    verification = Verification(len(feeds), checks)
    if locate and not verification.passed and isinstance(runner, ExposingRunner):
        failing = [check.name for check in checks if not check.passed]
        verification = dataclasses.replace(verification, divergence=locate_divergence(
            runner, model, feeds, failing, reference=reference, precision=precision))
    return verification


def _angle(cosine: float) -> float:
    return math.acos(min(1.0, max(-1.0, cosine)))


def ort_own_distance(model: ir.Model, feeds: Sequence[Feeds], reference: Sequence[dict[str, np.ndarray]],
                     names: Sequence[str]) -> dict[str, tuple[float, float]]:
    """For each of ``names``, how far ORT's run (``reference``) is from the quantized graph's own
    Q/DQ arithmetic (ORT with graph optimizations off): (rel_error, cosine)."""
    from onnxc.runtime import OrtRunner

    with OrtRunner(model, optimization="none", label="ONNX model (Q/DQ arithmetic)") as arithmetic_runner:
        arithmetic = [{name: arithmetic_runner.run(feed)[name] for name in names} for feed in feeds]
    ours = [{name: values[name] for name in names} for values in reference]
    return {error.name: (error.rel_error, error.cosine) for error in output_errors(arithmetic, ours).outputs}


@dataclasses.dataclass(frozen=True)
class _GraphFacts:
    """What judging needs from the model, walked once: its values by name, the graph outputs,
    whether it quantizes, and the values a quantizing op computes."""

    values: dict[str, ir.Value]
    outputs: frozenset[str]
    quantized: bool
    quantizer_made: frozenset[str]

    @classmethod
    def of(cls, model: ir.Model) -> _GraphFacts:
        values = {value.name: value for value in _all_values(model)}
        return cls(values, frozenset(value.name for value in model.graph.outputs), _is_quantized(model),
                   frozenset(name for name, value in values.items()
                             if value.producer() is not None and _quantizing(value.producer())))


def judge_values(model: ir.Model, reference: Sequence[dict[str, np.ndarray]],
                 candidate: Sequence[dict[str, np.ndarray]], precision: str | None = None,
                 ort_distance: Mapping[str, tuple[float, float]] | None = None,
                 facts: _GraphFacts | None = None) -> list[OutputCheck]:
    """Each value of ``reference`` (per feed, by name; a graph output or any value inside
    ``model``) against ``candidate``'s of the same name, held to the bound of the module docstring.
    One step bounds graph outputs only: inside the graph a value a step off at a few positions is
    what the bulk bound of the values after it allows, so quantized models' inner values are held
    to that bulk bound. ``ort_distance``: ORT's own (rel_error, cosine) from the Q/DQ arithmetic
    by name (:func:`ort_own_distance`); a float output of a quantized model may then be twice as
    far from ORT. ``facts``: the model's :class:`_GraphFacts` when judging it many times."""
    facts = facts or _GraphFacts.of(model)
    quantized = facts.quantized
    # Integers a quantizing op computes (u8 activations, i32 accumulators) are judged in bulk as
    # float values are: a one-step flip upstream moves a few of them far, like the floats after them.
    reference, candidate = _as_float(reference, facts.quantizer_made), _as_float(candidate, facts.quantizer_made)
    spread_errors = {error.name: error.rel_error for error in output_errors(reference, candidate).outputs}
    checks = []
    for diff in compare_outputs(reference, candidate).outputs:
        scale = _largest_magnitude(reference, diff.name)
        max_rel = diff.max_abs / scale if scale > 0 else (0.0 if diff.max_abs == 0 else math.inf)
        step = value_step(facts.values[diff.name]) if diff.name in facts.outputs else None
        if quantized and step is not None:
            # One step computed in float32 ((q1 - zp) * s - (q2 - zp) * s) can exceed s by an ulp.
            rule, passed = f"<= one output step {step:.3g}", diff.max_abs <= step * (1 + STEP_ROUNDING)
        elif quantized:
            # Integer values (indices) have no spread to measure against: their largest error counts.
            rel_error = spread_errors.get(diff.name, max_rel)
            rel_bound, cosine_bound = QUANTIZED_RTOL, QUANTIZED_MIN_COSINE
            rule = f"{_FLOAT_OF_QUANTIZED}: rel_error <= {rel_bound:g}, cosine >= {cosine_bound:g}"
            own = (ort_distance or {}).get(diff.name)
            widened = None if own is None else (
                max(rel_bound, 2 * own[0]), min(cosine_bound, math.cos(min(math.pi, 2 * _angle(own[1])))))
            if widened is not None and widened != (rel_bound, cosine_bound):
                (rel_bound, cosine_bound), (own_rel, own_cosine) = widened, own
                rule = (f"{_FLOAT_OF_QUANTIZED}: rel_error <= {rel_bound:.3g}, cosine >= {cosine_bound:.6g} "
                        f"(twice ORT's own distance from the Q/DQ arithmetic: rel_error {own_rel:.3g}, "
                        f"cosine {own_cosine:.6f})")
            passed = rel_error <= rel_bound and diff.cosine >= cosine_bound
        else:
            rtol = REDUCED_PRECISION_RTOL if (precision or "").lower() in REDUCED_PRECISIONS else FLOAT_RTOL
            rule, passed = f"rel <= {rtol:g}", max_rel <= rtol
        checks.append(OutputCheck(diff.name, diff.max_abs, max_rel, diff.cosine, rule, passed,
                                  spread_errors.get(diff.name)))
    return checks


def locate_divergence(runner: ExposingRunner, model: ir.Model, feeds: Sequence[Feeds], outputs: Sequence[str], *,
                      reference: Sequence[dict[str, np.ndarray]] | None = None, precision: str | None = None,
                      values_per_run: int = LOCATE_VALUES_PER_RUN, seconds: float = LOCATE_SECONDS,
                      progress: bool | None = None) -> Divergence:
    """Where the artifact behind ``runner`` first departs from ORT on the way to ``outputs`` (the
    graph outputs that mismatch; ``reference``: ORT's outputs on ``feeds`` when already run).

    The values those outputs are computed from are kept as extra outputs of both runtimes,
    ``values_per_run`` at a time (and ``LOCATE_BYTES_PER_RUN``) in the graph's (topological)
    order, and judged as outputs are (:func:`judge_values`). The first one outside its bound,
    every value before it within, is the op that diverges; a run keeping only its inputs and it
    confirms it (where its inputs diverge in that run, they are followed upstream). A run whose
    outputs agree means keeping its values removed the mismatch: the backend fuses ops across
    one of them and the fusion computes something else. Its values are then halved while keeping
    one half still removes it, down to the one value whose keeping alone does where there is
    one, and its consumers' outputs are kept instead to show what the fusion gives. The work
    stops after ``seconds`` with what it found; every run compiles the artifact again. Only the
    first feed on which the outputs mismatch by themselves is run. ``progress``: a bar over the
    runs (None: on a terminal).
    """
    from onnxc.progress import progress_bar
    from onnxc.runtime import OrtRunner

    if reference is None:
        with OrtRunner(model, label="ONNX model") as reference_runner:
            reference = [reference_runner.run(feed) for feed in feeds]

    facts = _GraphFacts.of(model)
    feeds, reference = _one_mismatching(runner, model, feeds, reference, outputs, precision, facts)
    with progress_bar(desc="locating the diverging op", unit="run", enabled=progress) as bar:
        locator = _Locator(runner, model, facts, feeds, reference, outputs, precision, seconds, bar)
        try:
            return locator.locate(max(1, values_per_run))
        except OnnxcError as error:
            return locator.result("unknown", f"no op located: {error}")


def _one_mismatching(runner: Runner, model: ir.Model, feeds: Sequence[Feeds], reference: Sequence[dict[str, np.ndarray]],
                     outputs: Sequence[str], precision: str | None,
                     facts: _GraphFacts) -> tuple[list[Feeds], list[dict[str, np.ndarray]]]:
    """The first feed on which ``outputs`` mismatch by themselves, and ORT's outputs on it: judging
    every value kept costs time in proportion to the feeds, and one feed shows where the values
    part. All of them when none mismatches alone."""
    for feed, expected in zip(feeds, reference):
        candidate = runner.run(feed)
        if not all(check.passed for check in judge_values(model, *_paired([expected], [candidate], outputs), precision,
                                                          facts=facts)):
            return [feed], [expected]
    return list(feeds), list(reference)


class _Locator:
    """One localization's runs, clock and findings (:func:`locate_divergence`)."""

    def __init__(self, runner: ExposingRunner, model: ir.Model, facts: _GraphFacts, feeds: Sequence[Feeds],
                 reference: Sequence[dict[str, np.ndarray]], outputs: Sequence[str], precision: str | None,
                 seconds: float, bar: Any):
        self.runner, self.model, self.feeds, self.precision = runner, model, feeds, precision
        self.facts = facts
        self.bar = bar
        self.outputs = list(outputs)
        self.reference = [{name: values[name] for name in self.outputs} for values in reference]
        self.seconds = seconds
        self.start = time.perf_counter()
        self.runs = 0
        self.exposable: set[str] = set()

    def locate(self, values_per_run: int) -> Divergence:
        self.exposable = self.runner.exposable()
        candidates = [value for value in _computed_ancestors(self.model, self.outputs) if value.name in self.exposable]
        if not candidates:
            return self.result("unknown", "no op located: the artifact keeps none of the ONNX model's values")
        judged: set[str] = set()
        for chunk in _chunks(candidates, values_per_run, LOCATE_BYTES_PER_RUN // max(1, len(self.feeds))):
            if self._late():
                return self.result("unknown", f"no op located within {self.seconds:g} s "
                                              f"({len(judged)} of {len(candidates)} values compared)")
            candidate = self._run(chunk)
            if self._outputs_agree(candidate):
                # Keeping these values alone removes the mismatch: the ops compute what ORT does once
                # the backend cannot fuse across them.
                return self._fusion(chunk)
            checks = self._judge(chunk, candidate)
            judged.update(checks)
            diverging = next((value for value in chunk if value.name in checks and not checks[value.name].passed), None)
            if diverging is not None:
                return self._confirm(diverging, len(chunk))
        if set(self.outputs) <= set(judged):
            return self.result("unknown", "no op located: with the values kept, ORT computes the outputs as the "
                                          "artifact does; they differ only from ORT's run that fuses across them")
        return self.result("unknown", f"no op located: all {len(judged)} values kept agree with ORT, yet the outputs "
                                      "still do not")

    def result(self, cause: str, line: str, node: ir.Node | None = None, value: ir.Value | None = None) -> Divergence:
        return Divergence(line, cause, None if node is None else node.op_type, None if node is None else node.name,
                          None if value is None else value.name, self.runs, round(time.perf_counter() - self.start, 3))

    def _late(self) -> bool:
        return time.perf_counter() - self.start > self.seconds

    def _run(self, values: Sequence[ir.Value]) -> list[dict[str, np.ndarray]]:
        """The artifact's outputs and ``values`` on every feed, from a runner compiled to keep them."""
        kept = self.runner.exposing([value.name for value in values])
        self.runs += 1
        self.bar.update()
        try:
            return [kept.run(feed) for feed in self.feeds]
        finally:
            kept.close()

    def _outputs_agree(self, candidate: Sequence[dict[str, np.ndarray]]) -> bool:
        return all(check.passed for check in judge_values(self.model, *_paired(self.reference, candidate, self.outputs),
                                                          self.precision, facts=self.facts))

    def _judge(self, values: Sequence[ir.Value], candidate: Sequence[dict[str, np.ndarray]]) -> dict[str, OutputCheck]:
        """``values`` of ``candidate`` judged against ORT's with ORT keeping them too, in order up to
        the first outside its bound (judging is most of the work)."""
        from onnxc.calibration.collect import exposed_runner

        with exposed_runner(self.model, values) as ort_runner:
            reference = [ort_runner.run(feed) for feed in self.feeds]
        checks: dict[str, OutputCheck] = {}
        for value in values:
            for check in judge_values(self.model, *_paired(reference, candidate, [value.name]), self.precision,
                                      facts=self.facts):
                checks[check.name] = check
            if value.name in checks and not checks[value.name].passed:
                break
        return checks

    def _confirm(self, found: ir.Value, kept: int) -> Divergence:
        """``found`` was the first value outside its bound in a run keeping ``kept`` values; a run
        keeping only its producer's inputs and it says whether that op diverges by itself. Keeping
        fewer values lets the backend fuse more: an input that diverges then is followed upstream."""
        value = found
        for _ in range(MAX_UPSTREAM_STEPS):
            if self._late():
                break
            node = value.producer()
            inputs = [v for v in node.inputs if v is not None and not v.is_graph_input() and constant_array(v) is None]
            compared = [v for v in inputs if v.name in self.exposable]
            checks = self._judge([*compared, value], self._run([*compared, value]))
            diverging_input = next((v for v in compared if v.name in checks and not checks[v.name].passed), None)
            if diverging_input is not None:
                value = diverging_input
                continue
            if value.name in checks and checks[value.name].passed:
                return self.result("fusion", f"no op diverges by itself: {_describe(found)} is the first value to diverge "
                                             f"with {kept} values kept, but {_describe(value)} agrees when only its "
                                             "inputs are kept, so the difference comes with what the backend fuses "
                                             "around it" + self._fused(node), node, value)
            missing = [v.name for v in inputs if v not in compared]
            if not inputs:
                upstream = "its inputs are the model's inputs and constants"
            elif compared:
                measure, worst = max((_judged_by(checks[v.name]) for v in compared), key=lambda pair: pair[1])
                upstream = f"its inputs agree ({measure} at most {worst:.1g})"
            else:
                upstream = "the values before it agree"
            if missing:
                upstream += "; " + ", ".join(map(repr, missing)) + " not kept by the artifact"
            line = f"first diverging op: {_describe(value)} ({_error_text(checks[value.name])} vs ORT; {upstream})"
            if value is not found:
                line += f"; with {kept} values kept the first to diverge was {_describe(found)} instead"
            return self.result("op", line + self._fused(node), node, value)
        if value is found:
            return self.result("unknown", f"no op located within {self.seconds:g} s: {_describe(found)} is the first "
                                          f"value to diverge with {kept} values kept (unconfirmed)")
        return self.result("unknown", f"no op located: {_describe(found)} is the first value to diverge with {kept} "
                                      f"values kept, but with fewer kept the values before it diverge too (followed up "
                                      f"to {_describe(value)})")

    def _fused_result(self, value: ir.Value) -> str:
        """What the fusion across ``value`` gives: its consumers' outputs, kept while it is not,
        against ORT's (with the inputs of ``value``'s producer kept too, which agree)."""
        after = [v for node in value.consumers() for v in node.outputs if v.name in self.exposable]
        before = [v for v in value.producer().inputs if v is not None and v.name in self.exposable
                  and not v.is_graph_input() and constant_array(v) is None]
        if not after or self._late():
            return ""
        checks = self._judge([*before, *after], self._run([*before, *after]))
        if not all(checks[v.name].passed for v in before if v.name in checks):
            return ""
        diverging = next((v for v in after if v.name in checks and not checks[v.name].passed), None)
        if diverging is None:
            return ""
        return f" ({_describe(diverging)} comes out {_error_text(checks[diverging.name])} vs ORT)"

    def _fused(self, node: ir.Node) -> str:
        """How the backend runs ``node`` in the artifact as built, when it fuses it with other ops."""
        fused = _onnx_nodes(self.model, self.runner.fused_with(node.name))
        fused = [name for name in fused if name != node.name]
        if not fused:
            return ""
        more = f" and {len(fused) - 4} more" if len(fused) > 4 else ""
        return f"; the artifact runs '{node.name}' fused with {', '.join(map(repr, fused[:4]))}{more}"

    def _fusion(self, values: list[ir.Value]) -> Divergence:
        """Keeping ``values`` removes the mismatch: halve them while one half still does."""
        while len(values) > 1 and not self._late():
            half = len(values) // 2
            removing = next((part for part in (values[:half], values[half:]) if self._outputs_agree(self._run(part))), None)
            if removing is None:
                break
            values = removing
        if len(values) == 1:
            (value,) = values
            node = value.producer()
            consumers = ", ".join(f"{n.op_type} '{n.name}'" for n in value.consumers()) or "the model's output"
            return self.result("fusion", f"no op diverges by itself: keeping {_describe(value)} as an output alone "
                                         f"removes the mismatch, so the backend's fusion of {node.op_type} '{node.name}' "
                                         f"with {consumers} across that value computes something else"
                                         + self._fused_result(value) + self._fused(node), node, value)
        how = "together" if not self._late() else f"(narrowed no further within {self.seconds:g} s)"
        return self.result("fusion", f"no op diverges by itself: keeping the {len(values)} values from "
                                     f"'{values[0].name}' to '{values[-1].name}' as outputs {how} removes the mismatch, "
                                     "so what the backend fuses among their ops computes something else")


def _onnx_nodes(model: ir.Model, names: Sequence[str]) -> list[str]:
    """The ONNX nodes among a backend's op ``names``, in their order: a name is a node's, or a
    node's followed by "/" and the part the backend split off (OpenVINO's ``/conv1/Conv/WithoutBiases``)."""
    nodes = {node.name for node in model.graph if node.name}
    found: list[str] = []
    for name in names:
        parts = name.split("/")
        owner = next(("/".join(parts[:end]) for end in range(len(parts), 0, -1) if "/".join(parts[:end]) in nodes), None)
        if owner is not None and owner not in found:
            found.append(owner)
    return found


def _describe(value: ir.Value) -> str:
    node = value.producer()
    return f"{node.op_type} '{node.name}' -> '{value.name}'"


def _computed_ancestors(model: ir.Model, outputs: Sequence[str]) -> list[ir.Value]:
    """The values of the main graph that ``outputs`` are computed from (themselves included), in
    the graph's order, leaving out inputs, constants and strings."""
    stack = [value for value in model.graph.outputs if value.name in outputs]
    seen: set[ir.Value] = set()
    while stack:
        value = stack.pop()
        if value in seen:
            continue
        seen.add(value)
        node = value.producer()
        if node is not None and node.graph is model.graph:
            stack.extend(v for v in node.inputs if v is not None)
    return [value for node in model.graph for value in node.outputs
            if value in seen and constant_array(value) is None and value.dtype != ir.DataType.STRING]


def _chunks(values: Sequence[ir.Value], count: int, max_bytes: int) -> list[list[ir.Value]]:
    """``values`` in order, cut into runs of at most ``count`` values and ``max_bytes`` (a value
    larger than that alone)."""
    chunks: list[list[ir.Value]] = [[]]
    size = 0
    for value in values:
        nbytes = _declared_bytes(value)
        if chunks[-1] and (len(chunks[-1]) >= count or size + nbytes > max_bytes):
            chunks.append([])
            size = 0
        chunks[-1].append(value)
        size += nbytes
    return chunks if chunks[0] else []


def _declared_bytes(value: ir.Value) -> int:
    if value.shape is None or value.dtype is None:
        return 0
    elements = math.prod(dim if isinstance(dim, int) else 1 for dim in value.shape)
    return int(elements * value.dtype.itemsize)


def _paired(reference: Sequence[dict[str, np.ndarray]], candidate: Sequence[dict[str, np.ndarray]],
            names: Sequence[str]) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """Both runs' ``names`` that both returned, in that order; a candidate array of the
    reference's size but another shape (a scalar as [1]) takes the reference's shape."""
    present = [name for name in names if all(name in r for r in reference) and all(name in c for c in candidate)]
    paired_candidate = []
    for ref, cand in zip(reference, candidate):
        arrays = {}
        for name in present:
            array, like = np.asarray(cand[name]), np.asarray(ref[name])
            arrays[name] = array.reshape(like.shape) if array.shape != like.shape and array.size == like.size else array
        paired_candidate.append(arrays)
    return [{name: ref[name] for name in present} for ref in reference], paired_candidate


def _judged_by(check: OutputCheck) -> tuple[str, float]:
    """The measure ``check``'s bound holds and its value."""
    if "rel_error" in check.rule:
        return "rel_error", check.rel_error if check.rel_error is not None else check.max_rel
    return ("max abs", check.max_abs) if "step" in check.rule else ("rel", check.max_rel)


def _error_text(check: OutputCheck) -> str:
    spread = "" if check.rel_error is None else f", rel_error {check.rel_error:.2g}"
    return f"max abs {check.max_abs:.2g}, rel {check.max_rel:.2g}{spread}, cosine {check.cosine:.4f}"


def _largest_magnitude(outputs: Sequence[dict[str, np.ndarray]], name: str) -> float:
    """The largest finite |value| of output ``name`` over all feeds (0 for non-numeric outputs)."""
    largest = 0.0
    for output in outputs:
        value = np.asarray(output[name])
        if np.issubdtype(value.dtype, np.number) and value.size:
            finite = np.abs(value[np.isfinite(value)])
            largest = max(largest, float(finite.max()) if finite.size else 0.0)
    return largest


def _all_values(model: ir.Model) -> list[ir.Value]:
    return [*model.graph.inputs, *(value for node in model.graph for value in node.outputs)]


def _is_quantized(model: ir.Model) -> bool:
    """Whether any node (subgraphs included) quantizes: Q/DQ or an integer op."""
    return any(_quantizing(node) for node in ir.traversal.RecursiveGraphIterator(model.graph))


def _quantizing(node: ir.Node) -> bool:
    return node.op_type in QUANTIZING_OPS or node.op_type.startswith(("QLinear", "QGemm"))


def _as_float(outputs: Sequence[dict[str, np.ndarray]], names: set[str]) -> list[dict[str, np.ndarray]]:
    """``outputs`` with the integer arrays of ``names`` as float64."""
    return [{name: (array.astype(np.float64) if name in names and np.issubdtype(np.asarray(array).dtype, np.integer)
                    else array) for name, array in output.items()} for output in outputs]


def value_step(value: ir.Value) -> float | None:
    """The quantization step of ``value``: the scale of the DequantizeLinear it comes out of
    (through data movement only; the largest scale when per channel), else None."""
    while value is not None and value.producer() is not None:
        node = value.producer()
        if node.op_type == "DequantizeLinear":
            scale = constant_array(node.inputs[1])
            return None if scale is None else float(np.abs(scale).max())
        if node.op_type not in _PASS_THROUGH or not node.inputs:
            return None
        value = node.inputs[0]
    return None
