"""Latency and throughput of models on a target across batch sizes: the core of ``onnxc bench``.

Each model is lowered for the target at each batch size (fixed input shapes), loaded as a
runner, and timed against the other models at the same batch, interleaved, by
:func:`onnxc.timing.compare_latency`. The median is the min over rounds of the per-round median
(onnxc's robust figure); the p90 is over every timed call. The first model is the reference the
others' speed-ups are against. A model exported with batch 1 gets a symbolic batch axis where
:mod:`onnxc.batching` finds that safe, else it is timed at batch 1 only and a note says why.

    from onnxc.benchmarking import bench
    result = bench({"fp32": "model.onnx", "int8": "model.int8.onnx"}, "onnxruntime", batches=(1, 8))
    print(result.table(budget_ms=10))
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import platform
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxc._version import __version__
from onnxc.backends.base import Artifact, Backend, Feeds, LowerOptions, Runner
from onnxc.batching import dynamic_batch
from onnxc.errors import OnnxcError, first_line
from onnxc.targets import get_target
from onnxc.timing import compare_latency

DEFAULT_BATCHES = (1, 8, 16)
PLOT_INSTALL = "pip install 'onnxc[plot]'"
PLOT_FORMATS = (".png", ".svg")
# Which figure a latency budget is held against: the tail a user's requests see, not the best case.
BUDGET_STATISTIC = "p90"

ModelSource = ir.Model | Artifact | str | os.PathLike


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One model at one batch size; seconds."""

    model: str
    batch: int
    median_s: float
    p90_s: float
    calls: int

    @property
    def throughput(self) -> float:
        """Samples per second at the median latency."""
        return self.batch / self.median_s


@dataclasses.dataclass
class BenchedModel:
    """What a model was and what happened to it beside its timings.

    Attributes:
        source: the file or folder it came from ("<memory>" for an ir.Model).
        kind: "onnx" (lowered here at each batch) or "artifact" (a prebuilt ``onnxc build`` folder).
        batch_axis: "dynamic", "made dynamic" (symbolic here, checked), "fixed" or "prebuilt".
        notes: one line per thing the user should know (a fixed batch and why, a batch skipped).
        artifact: the lowerer's metadata from the model's first build (precision, INT8 layers, ...).
    """

    source: str
    kind: str
    batch_axis: str
    notes: list[str] = dataclasses.field(default_factory=list)
    artifact: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class BenchResult:
    """Every measurement of one ``bench`` run, the models' facts, the settings and the machine."""

    target: str
    batches: list[int]
    models: dict[str, BenchedModel]
    measurements: list[Measurement]
    settings: dict[str, Any]
    machine: dict[str, Any]

    @property
    def reference(self) -> str:
        return next(iter(self.models))

    def get(self, model: str, batch: int) -> Measurement | None:
        return next((m for m in self.measurements if m.model == model and m.batch == batch), None)

    def speedup(self, model: str, batch: int) -> float | None:
        """The reference's median latency over ``model``'s at ``batch`` (None when either is missing)."""
        reference, measured = self.get(self.reference, batch), self.get(model, batch)
        if reference is None or measured is None:
            return None
        return reference.median_s / measured.median_s

    def largest_batch_within(self, budget_ms: float) -> dict[str, int | None]:
        """Per model, the largest batch whose p90 latency is within ``budget_ms`` (None: none is)."""
        fits: dict[str, int | None] = {}
        for name in self.models:
            within = [m.batch for m in self.measurements if m.model == name and m.p90_s * 1e3 <= budget_ms]
            fits[name] = max(within) if within else None
        return fits

    def to_json(self, budget_ms: float | None = None) -> dict[str, Any]:
        """All figures (milliseconds, samples per second) as plain data."""
        record: dict[str, Any] = {
            "target": self.target,
            "reference": self.reference,
            "batches": self.batches,
            "settings": self.settings,
            "machine": self.machine,
            "models": {name: dataclasses.asdict(model) for name, model in self.models.items()},
            "results": [{
                "model": m.model, "batch": m.batch, "median_ms": m.median_s * 1e3, "p90_ms": m.p90_s * 1e3,
                "throughput": m.throughput, "calls": m.calls, "speedup": self.speedup(m.model, m.batch),
            } for m in self.measurements],
        }
        if budget_ms is not None:
            record["latency_budget"] = {"ms": budget_ms, "statistic": BUDGET_STATISTIC,
                                        "largest_batch": self.largest_batch_within(budget_ms)}
        return record

    def table(self, budget_ms: float | None = None) -> str:
        """A readable table, by batch then model, with speed-ups against the reference; notes and
        the budget's answer below it."""
        versions = ", ".join(f"{k} {v}" for k, v in self.machine["versions"].items())
        threads = self.settings["threads"] or "default"
        lines = [f"target {self.target} ({versions}); {self.machine['cpu']}, {self.machine['logical_cores']} cores; "
                 f"threads {threads}, {self.settings['rounds']} rounds",
                 ""]
        width = max(len("model"), *(len(name) for name in self.models))
        lines.append(f"{'model':<{width}}  {'batch':>5}  {'median ms':>10}  {'p90 ms':>10}  {'samples/s':>10}  {'speed-up':>8}")
        for batch in self.batches:
            for name in self.models:
                m = self.get(name, batch)
                if m is None:
                    continue
                ratio = self.speedup(name, batch)
                shown = "-" if name == self.reference or ratio is None else f"{ratio:.2f}x"
                lines.append(f"{name:<{width}}  {batch:>5}  {m.median_s * 1e3:>10.3f}  {m.p90_s * 1e3:>10.3f}  "
                             f"{m.throughput:>10.1f}  {shown:>8}")
        notes = [f"{name}: {note}" for name, model in self.models.items() for note in model.notes]
        if notes:
            lines += ["", *notes]
        if budget_ms is not None:
            lines += ["", f"latency budget {budget_ms:g} ms ({BUDGET_STATISTIC}):"]
            for name, batch in self.largest_batch_within(budget_ms).items():
                if batch is None:
                    lines.append(f"  {name}: no batch tried fits")
                else:
                    lines.append(f"  {name}: batch {batch} ({self.get(name, batch).p90_s * 1e3:.3f} ms)")
        return "\n".join(lines)

    def write_json(self, path: str | os.PathLike, budget_ms: float | None = None) -> None:
        from onnxc.io import write_text_atomically

        write_text_atomically(path, json.dumps(self.to_json(budget_ms), indent=2, default=str) + "\n")

    def plot(self, path: str | os.PathLike) -> None:
        """Latency and throughput against batch size, one line per model, as PNG or SVG (by suffix)."""
        path = Path(path)
        check_plot_path(path)
        import matplotlib
        from matplotlib.figure import Figure

        figure = Figure(figsize=(10, 4), layout="constrained")
        latency, throughput = figure.subplots(1, 2)
        for name in self.models:
            points = sorted((m.batch, m) for m in self.measurements if m.model == name)
            if not points:
                continue
            batches = [b for b, _ in points]
            latency.plot(batches, [m.median_s * 1e3 for _, m in points], marker="o", label=name)
            throughput.plot(batches, [m.throughput for _, m in points], marker="o", label=name)
        for axes, label in ((latency, "median latency (ms)"), (throughput, "throughput (samples/s)")):
            axes.set_xlabel("batch size")
            axes.set_ylabel(label)
            axes.set_xticks(self.batches)
            axes.grid(True, alpha=0.3)
        latency.legend()
        figure.suptitle(f"{self.target}: {self.machine['cpu']}")
        from onnxc.io import staged_output

        # No date and fixed element ids in an SVG, so the same figures give the same file.
        with staged_output(path) as staged, matplotlib.rc_context({"svg.hashsalt": "onnxc"}):
            figure.savefig(staged, format=path.suffix[1:].lower(),
                           metadata={"Date": None} if path.suffix.lower() == ".svg" else None)


def check_plot_path(path: str | os.PathLike) -> None:
    """Refuse a plot format onnxc does not write, or a missing matplotlib, before any timing."""
    if Path(path).suffix.lower() not in PLOT_FORMATS:
        raise OnnxcError(f"cannot plot to {path}: give a .png or .svg file name")
    if importlib.util.find_spec("matplotlib") is None:
        raise OnnxcError(f"plotting needs matplotlib: {PLOT_INSTALL}")


def bench(
    models: Mapping[str, ModelSource],
    target: str,
    batches: Sequence[int] = DEFAULT_BATCHES,
    *,
    shapes: Mapping[str, Sequence[int]] | None = None,
    rounds: int = 5,
    warmup: int = 3,
    threads: int | None = None,
    precision: str | None = None,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> BenchResult:
    """Time ``models`` (name -> ir.Model, .onnx path, or ``onnxc build`` folder; the first is the
    reference) on ``target`` at each of ``batches``, interleaved per batch.

    ``shapes``: concrete shapes for symbolic input dims other than the batch (``--shape``);
    ``progress(what, done, total)`` is told each step (a lowering, a batch's timing) with how many
    of the (model, batch) pairs to time are finished.
    """
    if not models:
        raise OnnxcError("nothing to bench: give at least one model")
    if not batches or any(b < 1 for b in batches):
        raise OnnxcError(f"batch sizes must be positive integers, got {list(batches)}")
    backend = get_target(target).available_lowerer()
    shapes = {name: list(dims) for name, dims in (shapes or {}).items()}
    opened = {name: _open(source) for name, source in models.items()}
    for name, source in opened.items():
        if isinstance(source, Artifact) and source.backend != backend.name:
            raise OnnxcError(f"{name} was built for {source.backend}, not {target}")
    _check_shape_names(opened, shapes)
    facts: dict[str, BenchedModel] = {}
    runnable: dict[str, ir.Model | Artifact] = {}
    batches_of: dict[str, list[int]] = {}
    axes = {name: dynamic_batch(source, shapes=shapes, seed=seed)
            for name, source in opened.items() if isinstance(source, ir.Model)}
    # Prebuilt artifacts are fed like the first ONNX model, at the batches it runs at.
    feed_axis = None
    if len(axes) < len(opened):
        feed_axis = next(iter(axes.values()), None) or dynamic_batch(_onnx_in_artifacts(opened), shapes=shapes, seed=seed)
    for name, source in opened.items():
        where = str(models[name]) if isinstance(models[name], (str, os.PathLike)) else "<memory>"
        axis = axes.get(name, feed_axis)
        batches_of[name] = sorted(set(batches)) if axis.dynamic else [axis.fixed_batch]
        if isinstance(source, Artifact):
            facts[name] = BenchedModel(where, "artifact", "prebuilt", artifact=source.metadata)
            runnable[name] = source
        elif axis.dynamic:
            notes = ["exported with batch 1: its batch axis was made symbolic (at batch 2 each sample's outputs "
                     "match the sample run alone)"] if axis.changed else []
            facts[name] = BenchedModel(where, "onnx", "made dynamic" if axis.changed else "dynamic", notes)
            runnable[name] = axis.model
        else:
            facts[name] = BenchedModel(where, "onnx", "fixed", [
                f"timed at batch {axis.fixed_batch} only: the batch axis cannot be made symbolic ({axis.reason})"])
            runnable[name] = axis.model
    feed_model = feed_axis.model if feed_axis is not None else None
    all_batches = sorted({b for bs in batches_of.values() for b in bs})
    total = sum(len(bs) for bs in batches_of.values())

    def report(what: str, done: int) -> None:
        if progress is not None:
            progress(what, done, total)

    measurements: list[Measurement] = []
    prebuilt: dict[str, Runner] = {}
    done = 0
    try:
        with tempfile.TemporaryDirectory(prefix="onnxc-bench-") as scratch:
            for batch in all_batches:
                built: list[Runner] = []
                try:
                    contenders: dict[str, tuple[Runner, Feeds]] = {}
                    for index, (name, source) in enumerate(runnable.items()):
                        if batch not in batches_of[name]:
                            continue
                        if isinstance(source, Artifact):
                            if name not in prebuilt:
                                prebuilt[name] = backend.load(source)
                            runner, feeds = prebuilt[name], _feeds(feed_model, shapes, batch, seed)
                            why = _cannot_run(runner, feeds)
                        else:
                            report(f"lowering {name} at batch {batch}", done)
                            feeds = _feeds(source, shapes, batch, seed)
                            options = LowerOptions(shapes={k: tuple(v.shape) for k, v in feeds.items()},
                                                   precision=precision, threads=threads)
                            runner, why = _lower_and_load(backend, source, Path(scratch) / f"{index}-batch{batch}",
                                                          options, facts[name])
                            if runner is not None:
                                built.append(runner)
                        if why:
                            facts[name].notes.append(f"batch {batch} skipped: {why}")
                        else:
                            contenders[name] = (runner, feeds)
                    report(f"timing {len(contenders)} models at batch {batch}", done)
                    measurements += _time(contenders, batch, rounds, warmup)
                    done += sum(batch in bs for bs in batches_of.values())
                    report(f"timed batch {batch}", done)
                finally:
                    for runner in built:
                        runner.close()
    finally:
        for runner in prebuilt.values():
            runner.close()
    if not measurements:
        raise OnnxcError(f"nothing could be timed on {target}: "
                         + "; ".join(f"{name}: {note}" for name, f in facts.items() for note in f.notes))
    settings = {"rounds": rounds, "warmup": warmup, "threads": threads, "precision": precision, "seed": seed,
                "shapes": shapes}
    return BenchResult(target, sorted({m.batch for m in measurements}) or all_batches, facts, measurements,
                       settings, machine_facts(target))


def _lower_and_load(backend: Backend, model: ir.Model, out_dir: Path, options: LowerOptions,
                    facts: BenchedModel) -> tuple[Runner | None, str]:
    """The model lowered and loaded, or why it could not be (the target refuses an op, ...)."""
    try:
        artifact = backend.lower(model, out_dir, options)
        facts.artifact = facts.artifact or artifact.metadata
        runner = backend.load(artifact)
    except OnnxcError as error:
        return None, f"{backend.name} cannot lower or load it ({error})"
    return runner, ""


def _time(contenders: Mapping[str, tuple[Runner, Feeds]], batch: int, rounds: int, warmup: int) -> list[Measurement]:
    """The contenders at one batch, timed interleaved: the median of onnxc's one timing loop and
    the p90 over every call it timed."""
    if not contenders:
        return []
    samples: dict[str, list[float]] = {}
    medians = compare_latency({name: (lambda r=runner, f=feeds: r.run(f)) for name, (runner, feeds) in contenders.items()},
                              rounds=rounds, warmup=warmup, samples=samples)
    return [Measurement(name, batch, medians[name], float(np.percentile(samples[name], 90)), len(samples[name]))
            for name in contenders]


def machine_facts(target: str) -> dict[str, Any]:
    """What the figures depend on: CPU, cores, and the versions of onnxc and the runtimes used."""
    import psutil

    runtime = get_target(target).runtime_module or "onnxruntime"
    versions = {"onnxc": __version__}
    for module in dict.fromkeys(["onnxruntime", runtime]):
        for distribution in importlib.metadata.packages_distributions().get(module, [module]):
            try:
                versions[distribution] = importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                continue
    return {"cpu": _cpu_model(), "logical_cores": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
            "platform": platform.platform(), "python": platform.python_version(), "versions": versions}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _open(source: ModelSource) -> ir.Model | Artifact:
    """An ir.Model or Artifact as given, else read from the file (.onnx) or folder (a build)."""
    if isinstance(source, (ir.Model, Artifact)):
        return source
    from onnxc.io import load

    path = Path(source)
    return Artifact.read(path) if path.is_dir() else load(path)


def _onnx_in_artifacts(opened: Mapping[str, ir.Model | Artifact]) -> ir.Model:
    """The ONNX model a prebuilt artifact holds (an ORT build is its .onnx), when no .onnx is given."""
    from onnxc.io import load

    for artifact in opened.values():
        onnx_files = [f for f in artifact.files if f.suffix == ".onnx"]
        if onnx_files:
            return load(onnx_files[0])
    raise OnnxcError("cannot tell the inputs of prebuilt artifacts: give the original .onnx model first")


def _check_shape_names(opened: Mapping[str, ir.Model | Artifact], shapes: Mapping[str, list[int]]) -> None:
    names = {v.name for m in opened.values() if isinstance(m, ir.Model) for v in m.graph.inputs if not v.is_initializer()}
    unknown = sorted(set(shapes) - names) if names else []
    if unknown:
        raise OnnxcError(f"no model has an input {unknown[0]!r} (inputs: {', '.join(sorted(names))})")


def _feeds(model: ir.Model, shapes: Mapping[str, list[int]], batch: int, seed: int) -> Feeds:
    """Seeded random inputs for ``model`` at ``batch``: ``shapes`` for other symbolic dims, with the
    batch put in the leading dim of every input whose leading dim is symbolic."""
    from onnxc.inputs import random_feeds, resolve_input_shapes

    overrides = {name: list(dims) for name, dims in shapes.items()}
    for value in model.graph.inputs:
        leading = value.shape[0] if value.shape is not None and len(value.shape) else 0
        if value.name in overrides and overrides[value.name] and not (isinstance(leading, int) and leading >= 0):
            overrides[value.name][0] = batch
    return random_feeds(model, resolve_input_shapes(model, overrides, batch=batch), seed=seed)


def _cannot_run(runner: Runner, feeds: Feeds) -> str:
    """Why a prebuilt runner fails on ``feeds`` (built for other shapes); empty when it runs."""
    try:
        runner.run(feeds)
    except Exception as error:  # noqa: BLE001 - each runtime raises its own types for a shape it was not built for
        return f"the prebuilt artifact does not run it ({first_line(error)})"
    return ""
