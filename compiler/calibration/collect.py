"""Collecting calibration statistics: ORT runs the model with the wanted tensors exposed, and
every batch streams straight into native accumulators.

    stats = collect_statistics(model, ["conv1_in", "fc_in"], open_calibration_data("calib/", model))
    thresholds = compute_thresholds(stats, "entropy")

How it runs
-----------
The wanted tensors become the outputs of the model for a while (the model's own outputs are put
back afterwards, whatever happens), ORT builds a session from it (through
:class:`~onnxc.runtime.OrtRunner`, which writes large models to a temporary folder rather than
serializing them in memory), and each batch's tensors go into their accumulators as soon as ORT
returns them and are dropped right after, never the whole data set's. The accumulators take one
batch on a worker thread while ORT computes the next (both release the GIL), so at most two
batches' exposed tensors are alive at once. The session's idle threads sleep rather than spin,
and the worker updates on one thread, so neither takes the cores the other is computing on.
Min/max come from the same accumulators.

What the exposure costs: ORT computes convolutions in a blocked channel layout (NCHWc) and
every exposed tensor gets a copy back to NCHW, a memory-bound pass over each exposed value;
fusions such as Conv+Relu stay intact when the exposed tensor is the activation's output.

Memory budget and chunks
------------------------
One batch's exposed tensors take ``sum(size)`` bytes at once (ORT returns them together), and
two batches are in flight. When that would pass ``max_chunk_bytes``, the tensors are split into
chunks in graph order, and the data is run once per chunk with only that chunk exposed: memory
stays under the budget (a single tensor larger than half of it gets a chunk of its own) at the
price of running the model once per chunk, though a chunk of early tensors lets ORT drop the
nodes after them. Sizes come from the model's declared shapes with the first feed's dims put in
place of symbolic ones, and from shape inference when that is not enough. Data that can be read
only once (a generator, a reader without ``rewind``) is spooled to a temporary folder during the
first pass when there are several chunks.

Tensors the model holds as constants (initializers, Constant outputs) are counted once, not per
batch; graph inputs are taken from the feeds. Results depend only on the multiset of values, so
neither batch order nor batch size nor chunking changes them (see
:mod:`onnxc.calibration.histogram`).
"""
from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxc.calibration.data import CalibrationData, open_calibration_data
from onnxc.calibration.histogram import HistogramAccumulator
from onnxc.calibration.state import HistogramState
from onnxc.calibration.thresholds import threshold
from onnxc.context import Feeds
from onnxc.errors import FeatureNotImplementedError, OnnxcError
from onnxc.irutil import all_graphs, constant_array
from onnxc.progress import progress_bar
from onnxc.runtime import OrtRunner

DEFAULT_MAX_CHUNK_BYTES = 512 * 1024 * 1024

# ORT's idle intra-op threads spin by default, taking the cores the accumulator worker needs
# while ORT waits for the next batch; without spinning they sleep and the worker gets the cycles.
_SESSION_CONFIG = {"session.intra_op.allow_spinning": "0"}
# The worker overlaps ORT, which already uses the cores: more update threads only compete with it.
_WORKER_THREADS = 1

Statistics = dict[str, HistogramAccumulator]


def collect_statistics(
    model: ir.Model,
    tensors: Sequence[str],
    data: Iterable[Feeds] | CalibrationData,
    *,
    bins: int = 2048,
    symmetric: bool | Mapping[str, bool] = True,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    progress: bool | None = None,
) -> Statistics:
    """Min/max and histograms of ``tensors`` (value names of the main graph) over ``data``.

    ``symmetric``: histogram ``|x|`` (the default) or ``x``, for all tensors or per name (names
    left out of a mapping are symmetric). ``progress``: a bar over batches (None: on a
    terminal). Returns one accumulator per tensor, in the order of ``tensors``. The model is
    left as it was.
    """
    names = list(dict.fromkeys(tensors))
    if max_chunk_bytes < 1:
        raise OnnxcError(f"max_chunk_bytes must be positive, got {max_chunk_bytes}")
    values = _resolve(model, names)
    try:
        stats = {name: HistogramAccumulator(bins, _symmetric_for(symmetric, name)) for name in names}
    except ValueError as error:
        raise OnnxcError(f"calibration histograms: {error}") from None
    if not names:
        return stats
    data = open_calibration_data(data, model)

    fed, computed = [], []
    for name in names:
        value = values[name]
        if value.is_graph_input():
            fed.append(name)
            continue
        constant = constant_array(value)
        if constant is not None:
            stats[name].update(constant)
        else:
            computed.append(name)

    passes = _Passes(data)
    with passes:
        if not computed:
            with progress_bar(total=data.length, desc="calibration", enabled=progress, unit="batch") as bar:
                for feeds in passes.next():
                    _update_fed(stats, fed, values, feeds)
                    bar.update()
            return stats
        # Two batches are in flight (see below), so one batch's exposed tensors get half the budget.
        chunks = _plan_chunks(model, [values[n] for n in computed], passes.first_feed(), max(1, max_chunk_bytes // 2))
        passes.expect(len(chunks))
        total = None if data.length is None else data.length * len(chunks)
        with progress_bar(total=total, desc="calibration", enabled=progress, unit="batch") as bar, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxc-calibration") as worker:
            for index, chunk in enumerate(chunks):
                with _exposed_runner(model, [values[n] for n in chunk]) as runner:
                    # The accumulators take batch k on the worker while ORT computes batch k + 1 (both
                    # release the GIL); waiting for batch k before queueing k + 1 keeps two batches alive at most.
                    pending: Future | None = None
                    for feeds in passes.next():
                        outputs = runner.run(feeds, chunk)
                        if pending is not None:
                            pending.result()
                        pending = worker.submit(_absorb, stats, outputs, fed if index == 0 else (), values, feeds)
                        del outputs, feeds
                        bar.update()
                    if pending is not None:
                        pending.result()
    return stats


def merge_statistics(a: Mapping[str, Any], b: Mapping[str, Any]) -> Statistics:
    """The statistics of both collections, as new accumulators (neither input changes).

    Values may be accumulators or :class:`~onnxc.calibration.state.HistogramState` snapshots (as
    another process or machine would send them); tensors in only one side are copied.
    Tensors in both must have been collected with the same ``bins`` and ``symmetric``.
    """
    out: Statistics = {}
    for name in list(dict.fromkeys([*a, *b])):
        parts = [side[name] for side in (a, b) if name in side]
        merged = HistogramAccumulator.from_state(_state(parts[0]))
        for part in parts[1:]:
            try:
                merged.merge(_state(part))
            except (ValueError, RuntimeError) as error:
                raise OnnxcError(f"cannot merge the statistics of {name!r}: {error}") from None
        out[name] = merged
    return out


def compute_thresholds(
    stats: Mapping[str, Any],
    method: str = "entropy",
    *,
    progress: bool | None = None,
    **options: Any,
) -> dict[str, float | tuple[float, float]]:
    """:func:`~onnxc.calibration.thresholds.threshold` of every tensor, with a progress bar."""
    out: dict[str, float | tuple[float, float]] = {}
    with progress_bar(total=len(stats), desc=f"thresholds ({method})", enabled=progress, unit="tensor") as bar:
        for name, acc in stats.items():
            try:
                out[name] = threshold(acc, method, **options)
            except ValueError as error:
                raise OnnxcError(f"calibration threshold of {name!r}: {error}") from None
            bar.update()
    return out


# Pieces ------------------------------------------------------------------------------------------


def _state(item: Any) -> HistogramState:
    if isinstance(item, HistogramState):
        return item
    if hasattr(item, "state"):
        return item.state()
    raise TypeError(f"statistics must be accumulators or HistogramState, got {type(item).__name__}")


def _symmetric_for(symmetric: bool | Mapping[str, bool], name: str) -> bool:
    if isinstance(symmetric, Mapping):
        return bool(symmetric.get(name, True))
    return bool(symmetric)


def _resolve(model: ir.Model, names: Sequence[str]) -> dict[str, ir.Value]:
    """Main-graph values by name; a name only found in a subgraph cannot be exposed."""
    graph = model.graph
    found: dict[str, ir.Value] = {}
    wanted = set(names)
    for value in graph.inputs:
        if value.name in wanted:
            found[value.name] = value
    for name, value in graph.initializers.items():
        if name in wanted:
            found.setdefault(name, value)
    for node in graph:
        for value in node.outputs:
            if value.name in wanted:
                found.setdefault(value.name, value)
    unusable = [f"{name!r} ({value.dtype})" for name, value in found.items()
                if value.dtype is not None and value.dtype.numpy().kind not in "fiu"]
    if unusable:
        raise OnnxcError(f"calibration statistics need numeric tensors: {', '.join(unusable[:5])}")
    missing = [name for name in names if name not in found]
    if missing:
        inner = {v.name for g in all_graphs(model) if g is not graph for n in g for v in n.outputs}
        nested = [name for name in missing if name in inner]
        if nested:
            raise FeatureNotImplementedError(f"calibration cannot expose tensors inside subgraphs (If/Loop/Scan "
                                             f"bodies): {', '.join(map(repr, nested[:5]))}")
        raise OnnxcError(f"calibration tensor(s) not in the model: {', '.join(map(repr, missing[:5]))}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    return found


def _absorb(stats: Statistics, outputs: dict[str, np.ndarray], fed: Sequence[str], values: Mapping[str, ir.Value],
            feeds: Feeds) -> None:
    # Each output goes into its accumulator and is released at once.
    while outputs:
        name, array = outputs.popitem()
        stats[name].update(array, threads=_WORKER_THREADS)
    _update_fed(stats, fed, values, feeds)


def _update_fed(stats: Statistics, fed: Sequence[str], values: Mapping[str, ir.Value], feeds: Feeds) -> None:
    for name in fed:
        # An initializer-backed input left out of the feed keeps its initializer's value.
        stats[name].update(feeds[name] if name in feeds else values[name].const_value.numpy())


def _plan_chunks(model: ir.Model, values: Sequence[ir.Value], feeds: Feeds, budget: int) -> list[list[str]]:
    """Tensor names in graph order, cut where one batch's exposed bytes would pass ``budget``."""
    position = {id(node): i for i, node in enumerate(model.graph)}
    ordered = sorted(values, key=lambda v: position.get(id(v.producer()), -1))
    sizes = _estimate_bytes(model, ordered, feeds)
    chunks: list[list[str]] = []
    current: list[str] = []
    used = 0
    for value in ordered:
        size = sizes[value.name]
        if current and used + size > budget:
            chunks.append(current)
            current, used = [], 0
        current.append(value.name)
        used += size
    chunks.append(current)
    return chunks


def _estimate_bytes(model: ir.Model, values: Sequence[ir.Value], feeds: Feeds) -> dict[str, int]:
    """Bytes each value takes for one batch like ``feeds``."""
    concrete = {name: list(np.shape(a)) for name, a in feeds.items()}
    symbols: dict[str, int] = {}
    for value in model.graph.inputs:
        if value.name in concrete and value.shape is not None and len(value.shape) == len(concrete[value.name]):
            for dim, size in zip(value.shape, concrete[value.name]):
                if isinstance(dim, ir.SymbolicDim) and dim.value:
                    symbols.setdefault(dim.value, size)

    def declared(value: ir.Value) -> int | None:
        if value.shape is None:
            return None
        dims = []
        for dim in value.shape:
            if isinstance(dim, int):
                dims.append(dim)
            elif dim.value in symbols:
                dims.append(symbols[dim.value])
            else:
                return None
        return math.prod(dims)

    elements = {value.name: declared(value) for value in values}
    if any(count is None for count in elements.values()):
        inferred = _inferred_shapes(model, concrete)
        for name, count in elements.items():
            shape = inferred.get(name)
            if count is None and shape is not None:
                elements[name] = math.prod(shape)
    known = [count for count in elements.values() if count is not None]
    # A size neither declared nor inferable is guessed as the largest known one.
    fallback = max(known + [max((int(np.size(a)) for a in feeds.values()), default=1)])
    sizes = {}
    for value in values:
        itemsize = value.dtype.itemsize if value.dtype is not None and value.dtype.itemsize else 4
        count = elements[value.name]
        sizes[value.name] = int(math.ceil((fallback if count is None else count) * itemsize))
    return sizes


def _inferred_shapes(model: ir.Model, concrete: dict[str, list[int]]) -> dict[str, tuple[int, ...] | None]:
    from onnxc.costs import ShapeInferenceFailed, _infer_concrete_shapes

    try:
        return _infer_concrete_shapes(model, concrete)
    except ShapeInferenceFailed:
        return {}


@contextlib.contextmanager
def _exposed_runner(model: ir.Model, values: Sequence[ir.Value]) -> Iterator[OrtRunner]:
    """An ORT session whose outputs are ``values``; the model gets its own outputs back once the
    session is built (ORT keeps its own copy of the graph)."""
    outputs = model.graph.outputs
    original = list(outputs)
    try:
        outputs.clear()
        outputs.extend(values)
        runner = OrtRunner(model, label="model with calibration tensors exposed", config=_SESSION_CONFIG)
    finally:
        outputs.clear()
        outputs.extend(original)
    try:
        yield runner
    finally:
        runner.close()


class _Passes:
    """The passes over the data one collection makes: the first feed can be looked at before the
    first pass, and data readable only once is spooled to disk for the later passes."""

    def __init__(self, data: CalibrationData):
        self._data = data
        self._iterator: Iterator[Feeds] | None = None
        self._peeked: list[Feeds] = []
        self._count = 0
        self._passes = 1
        self._spool: str | None = None

    def first_feed(self) -> Feeds:
        if self._iterator is None:
            self._iterator = iter(self._data)
        if not self._peeked:
            try:
                self._peeked.append(next(self._iterator))
            except StopIteration:
                raise OnnxcError(f"calibration data from {self._data.description} holds no feeds") from None
        return self._peeked[0]

    def expect(self, passes: int) -> None:
        self._passes = passes
        if passes > 1 and not self._data.reiterable:
            self._spool = tempfile.mkdtemp(prefix="onnxc-calib-spool-")

    def next(self) -> Iterator[Feeds]:
        self._count += 1
        if self._count == 1:
            iterator = self._iterator if self._iterator is not None else iter(self._data)
            self._iterator = None
            peeked, self._peeked = self._peeked, []
            return self._spooled(_chain(peeked, iterator))
        if self._spool is not None:
            return self._read_spool()
        return iter(self._data)

    def _spooled(self, feeds: Iterator[Feeds]) -> Iterator[Feeds]:
        for index, feed in enumerate(feeds):
            if self._spool is not None:
                np.savez(Path(self._spool) / f"{index:09d}.npz", **feed)
            yield feed

    def _read_spool(self) -> Iterator[Feeds]:
        assert self._spool is not None
        for path in sorted(Path(self._spool).iterdir()):
            with np.load(path, allow_pickle=False) as archive:
                feed = {name: archive[name] for name in archive.files}
            yield feed

    def __enter__(self) -> _Passes:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
            self._spool = None


def _chain(first: list[Feeds], rest: Iterator[Feeds]) -> Iterator[Feeds]:
    yield from first
    first.clear()
    yield from rest
