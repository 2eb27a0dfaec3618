"""The activation engine: ORT runs the model with the wanted tensors exposed, and every batch
streams straight into accumulators.

    stats = collect_activations(model, {"conv1_in": GramAccumulator(rows_for(conv1)),
                                        "fc_in": ChannelMoments(axis=-1)}, open_calibration_data("calib/", model))
    stats = collect_statistics(model, ["conv1_in", "fc_in"], data)    # histograms of each
    thresholds = compute_thresholds(stats, "entropy")

Any :class:`~onnxc.calibration.accumulators.Accumulator` can be fed: histograms (activation
ranges), per-channel moments (bias correction), Gram matrices (reconstruction, whitened SVD).
Everything below holds for all of them.

How it runs
-----------
The wanted tensors become the outputs of the model for a while (the model's own outputs are put
back afterwards, whatever happens), ORT builds a session from it (through
:class:`~onnxc.runtime.OrtRunner`, which writes large models to a temporary folder rather than
serializing them in memory), and each batch's tensors go into their accumulators as soon as ORT
returns them, never the whole data set's. Two streams (threads) take batches in turn, each
running ORT on half the cores and then its own accumulators, so one stream's accumulator updates
overlap the other's ORT run (both release the GIL); the streams' accumulators are merged at the
end, which is exact for histograms and exact to float64 rounding for moments and Gram matrices.
Each stream has ORT write into output arrays it allocated once and reuses, so memory does not
grow with the data and no run pays page faults for fresh arrays. Histograms' min/max come from
the same accumulators.

When a stream has several ORT threads, feeds of equal shapes are stacked along the batch axis (a
model exported for batch 1 gets a symbolic batch axis for the collection) so that each run gives
the threads more to share; stacking is checked on the first group (every exposed tensor must come
out stacked, the first feed's part equal to a run of that feed alone) and given up if it fails.

What the exposure costs: ORT computes convolutions in a blocked channel layout (NCHWc) and
every exposed tensor gets a copy back to NCHW, a memory-bound pass over each exposed value;
fusions such as Conv+Relu stay intact when the exposed tensor is the activation's output.

Memory budget and chunks
------------------------
One batch's exposed tensors take ``sum(size)`` bytes at once (ORT returns them together), and
each of the two streams holds one batch. When that would pass ``max_chunk_bytes``, the tensors
are split into chunks in graph order, and the data is run once per chunk with only that chunk
exposed: memory stays under the budget (a single tensor larger than half of it gets a chunk of
its own) at the price of running the model once per chunk, though a chunk of early tensors lets
ORT drop the nodes after them. Sizes come from the model's declared shapes with the first feed's
dims put in place of symbolic ones, and from shape inference when that is not enough. Data that
can be read only once (a generator, a reader without ``rewind``) is spooled to a temporary folder
during the first pass when there are several chunks.

Tensors the model holds as constants (initializers, Constant outputs) are counted once, not per
batch; graph inputs are taken from the feeds. Results depend only on the multiset of values, so
neither batch order nor batch size nor chunking nor which stream took which batch changes them
(see :mod:`onnxc.calibration.accumulators`).
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxc.calibration.accumulators import Accumulator
from onnxc.calibration.data import CalibrationData, open_calibration_data
from onnxc.calibration.histogram import HistogramAccumulator
from onnxc.calibration.state import HistogramState
from onnxc.calibration.thresholds import threshold
from onnxc.context import Feeds
from onnxc.errors import FeatureNotImplementedError, InvalidModelError, OnnxcError
from onnxc.irutil import all_graphs, constant_array
from onnxc.progress import progress_bar
from onnxc.runtime import OrtRunner

DEFAULT_MAX_CHUNK_BYTES = 512 * 1024 * 1024

# ORT's idle intra-op threads spin by default, taking the cores the other stream needs.
_SESSION_CONFIG = {"session.intra_op.allow_spinning": "0"}
# Two streams each run ORT and then the accumulators on their own batch, so one's histogram
# updates fill the cores while the other's ORT run waits on memory or on its own threads; each
# stream gets half the cores for ORT and one for its updates.
_STREAMS = 2
_WORKER_THREADS = 1
# Feeds stacked along the batch axis into one ORT run, when the model allows it and a stream has
# several ORT threads: a larger batch gives them more to share. One thread gains nothing from it
# (MobileNetV2: the same time per image at batch 1, 4 and 8) and every stacked feed is more
# memory to touch, so at one thread per stream feeds go one at a time.
_MAX_GROUP = 4

Statistics = dict[str, HistogramAccumulator]
Accumulators = dict[str, Accumulator]


def collect_activations(
    model: ir.Model,
    accumulators: Mapping[str, Accumulator],
    data: Iterable[Feeds] | CalibrationData,
    *,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    progress: bool | None = None,
) -> Accumulators:
    """Streams every batch of ``data`` into ``accumulators``, keyed by value names of the main
    graph (histograms, channel moments, Gram matrices: any
    :class:`~onnxc.calibration.accumulators.Accumulator`), and returns them in their order.

    The accumulators are filled in place. ``progress``: a bar over batches (None: on a terminal).
    The model is left as it was.
    """
    stats: Accumulators = dict(accumulators)
    names = list(stats)
    if max_chunk_bytes < 1:
        raise OnnxcError(f"max_chunk_bytes must be positive, got {max_chunk_bytes}")
    values = _resolve(model, names)
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
        # Two streams each hold one batch, so one batch's exposed tensors get half the budget.
        budget = max(1, max_chunk_bytes // _STREAMS)
        first = passes.first_feed()
        exposed = [values[n] for n in computed]
        stack = data.length != 1 and _ort_threads() > 1 and _stackable(model)
        elements = _declared_elements(model, exposed, first)
        whole: OrtRunner | None = None
        try:
            if any(count is None for count in elements.values()):
                # The model does not declare every size: a session exposing everything tells them (and
                # is the one to run when everything fits in one chunk).
                whole, stack = _first_runner(model, exposed, stack)
                _fill(elements, _session_shapes(whole, first))
            chunks = _plan_chunks(model, exposed, _bytes(model, exposed, first, elements), budget)
            if len(chunks) > 1 and whole is not None:
                whole.close()
                whole = None
            passes.expect(len(chunks))
            total = None if data.length is None else data.length * len(chunks)
            with progress_bar(total=total, desc="calibration", enabled=progress, unit="batch") as bar:
                for index, (chunk, chunk_bytes) in enumerate(chunks):
                    group = max(1, min(_MAX_GROUP, _ort_threads(), budget // max(1, chunk_bytes))) if stack else 1
                    runner, whole = whole, None
                    _collect_chunk(model, [values[n] for n in chunk], fed if index == 0 else [], values, stats,
                                   passes.next(), group, bar, runner)
        finally:
            if whole is not None:
                whole.close()
    return stats


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
    try:
        stats = {name: HistogramAccumulator(bins, _symmetric_for(symmetric, name)) for name in names}
    except ValueError as error:
        raise OnnxcError(f"calibration histograms: {error}") from None
    collect_activations(model, stats, data, max_chunk_bytes=max_chunk_bytes, progress=progress)
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


def _absorb(stats: Accumulators, outputs: dict[str, np.ndarray]) -> None:
    # Each output goes into its accumulator and is released at once.
    while outputs:
        name, array = outputs.popitem()
        stats[name].update(array, threads=_WORKER_THREADS)


def _first_runner(model: ir.Model, exposed: Sequence[ir.Value], stack: bool) -> tuple[OrtRunner, bool]:
    """A session exposing ``exposed``, with a symbolic batch axis if ``stack`` and ORT takes it;
    and whether it has one."""
    if stack:
        with contextlib.suppress(InvalidModelError):
            return exposed_runner(model, exposed, batch_axis=True), True
    return exposed_runner(model, exposed), False


def _collect_chunk(model: ir.Model, chunk: Sequence[ir.Value], fed: Sequence[str], values: Mapping[str, ir.Value],
                   stats: Accumulators, feeds: Iterator[Feeds], group: int, bar: Any,
                   runner: OrtRunner | None = None) -> None:
    """One pass over the data with ``chunk`` exposed, into ``stats`` (``fed``: graph inputs to
    take from the feeds on this pass; ``group``: feeds to stack per run; ``runner``: a session
    exposing ``chunk`` already built, with a symbolic batch axis if ``group`` > 1), which it closes."""
    names = [value.name for value in chunk]
    source = _Groups(feeds, group)
    try:
        if source.size > 1:
            if runner is None:
                with contextlib.suppress(InvalidModelError):
                    runner = exposed_runner(model, chunk, batch_axis=True)
            if runner is not None and not _first_group(runner, names, fed, values, stats, source, bar):
                runner.close()
                runner = None
            if runner is None:
                source.size = 1
        if runner is None:
            runner = exposed_runner(model, chunk)
        _run_streams(runner, names, fed, values, stats, source, bar)
    finally:
        if runner is not None:
            runner.close()


def _first_group(runner: OrtRunner, names: Sequence[str], fed: Sequence[str], values: Mapping[str, ir.Value],
                 stats: Accumulators, source: _Groups, bar: Any) -> bool:
    """Whether stacking feeds along the batch axis computes what the feeds one at a time do, tried on
    the first group: each exposed tensor must come out with the feeds' leading dimension, stacked,
    and the first feed's part must match a run of that feed alone. On success the group is
    absorbed (the first feed from its own run); otherwise it goes back to the source."""
    group = source.take()
    lead = _leading(group[0]) if group else None
    if len(group) < 2 or lead is None:
        source.put_back(group)
        return False
    try:
        single = runner.run(group[0], names)
        stacked = runner.run(_stack(group, runner.input_names), names)
    except InvalidModelError:
        source.put_back(group)
        return False
    for name in names:
        one, many = single[name], stacked[name]
        if (one.ndim == 0 or one.shape[0] != lead or many.shape != (lead * len(group), *one.shape[1:])
                or not _close(many[:lead], one)):
            source.put_back(group)
            return False
    _absorb(stats, single)
    _absorb(stats, {name: array[lead:] for name, array in stacked.items()})
    del stacked
    for feed in group:
        _update_fed(stats, fed, values, feed)
    bar.update(len(group))
    return True


def _run_streams(runner: OrtRunner, names: Sequence[str], fed: Sequence[str], values: Mapping[str, ir.Value],
                 stats: Accumulators, source: _Groups, bar: Any) -> None:
    """Every remaining group, taken by ``_STREAMS`` threads that each run ORT and then their own
    accumulators (both release the GIL); the streams' accumulators are merged into ``stats`` at
    the end, which is exact, so which stream took which group changes nothing."""
    lock = threading.Lock()
    failed = threading.Event()

    def stream() -> Accumulators:
        own = {name: stats[name].empty() for name in [*names, *fed]}
        outputs = _Outputs(runner, names)
        try:
            while not failed.is_set():
                group = source.take()
                if not group:
                    break
                _absorb(own, outputs.run(group[0] if len(group) == 1 else _stack(group, runner.input_names)))
                for feed in group:
                    _update_fed(own, fed, values, feed)
                with lock:
                    bar.update(len(group))
                del group
        except BaseException:
            failed.set()
            raise
        return own

    with ThreadPoolExecutor(max_workers=_STREAMS, thread_name_prefix="onnxc-calibration") as pool:
        futures = [pool.submit(stream) for _ in range(_STREAMS)]
        try:
            results = [future.result() for future in futures]
        except BaseException:  # an interrupt too: the streams stop after their current group
            failed.set()
            raise
    for own in results:
        for name, acc in own.items():
            stats[name].merge(acc)


class _Outputs:
    """One stream's ORT runs into output arrays it allocates once and reuses while the inputs keep
    their shapes. Fresh arrays for every run would cost a page fault per 4 KiB of exposed tensor,
    which on a virtual machine can take longer than computing the values. The shapes come from
    ORT's own shape inference, so even the first run writes into them; where it cannot tell them
    from the inputs' shapes, ORT allocates as usual."""

    def __init__(self, runner: OrtRunner, names: Sequence[str]):
        self._runner = runner
        self._names = list(names)
        self._binding = runner.session.io_binding()
        self._layout: tuple | None = None
        self._buffers: dict[str, np.ndarray] = {}
        self._inputs = {i.name for i in runner.session.get_inputs()}
        self._types = {o.name: _ORT_TYPES.get(o.type) for o in runner.session.get_outputs()}

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """The exposed tensors for ``feeds``; the arrays are valid until the next call."""
        feeds = {name: np.ascontiguousarray(array) for name, array in feeds.items() if name in self._inputs}
        layout = tuple((name, array.shape, array.dtype.str) for name, array in feeds.items())
        first = layout != self._layout
        if first:
            self._layout = layout
            self._buffers = self._allocate(feeds) or {}
            self._binding.clear_binding_outputs()
            for name, buffer in self._buffers.items():
                self._binding.bind_output(name, "cpu", 0, buffer.dtype, list(buffer.shape), buffer.ctypes.data)
        if self._buffers:
            for name, array in feeds.items():
                self._binding.bind_cpu_input(name, array)
            try:
                self._runner.session.run_with_iobinding(self._binding)
                return dict(self._buffers)
            except Exception as error:  # noqa: BLE001 - ORT raises several unrelated types
                if not first:
                    raise InvalidModelError(f"ONNX Runtime failed to run the {self._runner.label}: {error}") from None
                self._buffers = {}  # inferred shapes ORT did not keep to: let it allocate
        # Shapes ORT cannot tell from the inputs' (data-dependent ones): it allocates every time.
        return self._runner.run(feeds, self._names)

    def _allocate(self, feeds: Feeds) -> dict[str, np.ndarray] | None:
        shapes = _session_shapes(self._runner, feeds)
        buffers = {}
        for name in self._names:
            shape, dtype = shapes.get(name), self._types.get(name)
            if shape is None or dtype is None:
                return None
            buffers[name] = np.empty(shape, dtype=dtype)
        return buffers


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
              "tensor(uint16)": np.uint16, "tensor(int32)": np.int32, "tensor(int64)": np.int64}


class _Groups:
    """Feeds handed out in groups of up to ``size`` with equal shapes, to several threads."""

    def __init__(self, feeds: Iterator[Feeds], size: int):
        self._feeds = feeds
        self.size = size
        self._held: list[Feeds] = []  # a stack: the next feed is last
        self._lock = threading.Lock()

    def take(self) -> list[Feeds]:
        with self._lock:
            group: list[Feeds] = []
            while len(group) < self.size:
                if self._held:
                    feed = self._held.pop()
                else:
                    feed = next(self._feeds, None)
                    if feed is None:
                        break
                if group and not _same_layout(group[0], feed):
                    self._held.append(feed)
                    break
                group.append(feed)
            return group

    def put_back(self, group: Sequence[Feeds]) -> None:
        with self._lock:
            self._held.extend(reversed(group))


def _stackable(model: ir.Model) -> bool:
    """Whether every input of the model is fed and has a leading batch axis (symbolic, or 1 in a
    model exported for batch 1) that feeds can be stacked along."""
    for value in model.graph.inputs:
        if value.const_value is not None:
            return False
        shape = value.shape
        if shape is not None and (len(shape) == 0 or (isinstance(shape[0], int) and shape[0] != 1)):
            return False
    return bool(model.graph.inputs)


def _leading(feeds: Feeds) -> int | None:
    """The leading dimension all of ``feeds`` share, if they do."""
    leads = {np.shape(array)[0] if np.ndim(array) else None for array in feeds.values()}
    return leads.pop() if len(leads) == 1 else None


def _same_layout(a: Feeds, b: Feeds) -> bool:
    return a.keys() == b.keys() and all(
        np.shape(a[k]) == np.shape(b[k]) and np.asarray(a[k]).dtype == np.asarray(b[k]).dtype for k in a)


def _stack(group: Sequence[Feeds], inputs: Sequence[str]) -> Feeds:
    return {name: np.concatenate([feed[name] for feed in group]) for name in inputs if name in group[0]}


def _close(stacked: np.ndarray, alone: np.ndarray) -> bool:
    # Kernels may sum in another order for another batch size; a batch-mixing model is off by far more.
    if stacked.dtype.kind != "f":
        return bool(np.array_equal(stacked, alone))
    finite = np.isfinite(alone)
    scale = float(np.abs(alone[finite]).max()) if finite.any() else 0.0
    return bool(np.allclose(stacked, alone, rtol=1e-3, atol=1e-4 * scale, equal_nan=True))


def _update_fed(stats: Accumulators, fed: Sequence[str], values: Mapping[str, ir.Value], feeds: Feeds) -> None:
    for name in fed:
        # An initializer-backed input left out of the feed keeps its initializer's value.
        stats[name].update(feeds[name] if name in feeds else values[name].const_value.numpy())


def _plan_chunks(model: ir.Model, values: Sequence[ir.Value], sizes: Mapping[str, int], budget: int
                 ) -> list[tuple[list[str], int]]:
    """Tensor names in graph order, cut where one batch's exposed bytes (``sizes``) would pass
    ``budget``; each chunk with its bytes for one batch."""
    position = {id(node): i for i, node in enumerate(model.graph)}
    ordered = sorted(values, key=lambda v: position.get(id(v.producer()), -1))
    chunks: list[tuple[list[str], int]] = []
    current: list[str] = []
    used = 0
    for value in ordered:
        size = sizes[value.name]
        if current and used + size > budget:
            chunks.append((current, used))
            current, used = [], 0
        current.append(value.name)
        used += size
    chunks.append((current, used))
    return chunks


def _declared_elements(model: ir.Model, values: Sequence[ir.Value], feeds: Feeds) -> dict[str, int | None]:
    """Elements of each value for one batch like ``feeds`` by its declared shape (``None`` if unknown)."""
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

    return {value.name: declared(value) for value in values}


def _fill(elements: dict[str, int | None], shapes: Mapping[str, list[int] | None]) -> None:
    for name, count in elements.items():
        shape = shapes.get(name)
        if count is None and shape is not None:
            elements[name] = math.prod(shape)


def _bytes(model: ir.Model, values: Sequence[ir.Value], feeds: Feeds, elements: dict[str, int | None]
           ) -> dict[str, int]:
    """Bytes from element counts, the unknown ones from shape inference or else guessed."""
    if any(count is None for count in elements.values()):
        from onnxc.costs import concrete_shapes

        _fill(elements, concrete_shapes(model, {name: list(np.shape(a)) for name, a in feeds.items()}))
    known = [count for count in elements.values() if count is not None]
    # A size neither declared nor inferable is guessed as the largest known one.
    fallback = max(known + [max((int(np.size(a)) for a in feeds.values()), default=1)])
    sizes = {}
    for value in values:
        itemsize = value.dtype.itemsize if value.dtype is not None and value.dtype.itemsize else 4
        count = elements[value.name]
        sizes[value.name] = int(math.ceil((fallback if count is None else count) * itemsize))
    return sizes


def _session_shapes(runner: OrtRunner, feeds: Feeds) -> dict[str, list[int] | None]:
    """The shapes ORT's own inference gives the session's outputs for inputs like ``feeds``
    (``None`` where it cannot tell them before running)."""
    symbols: dict[str, int] = {}
    for declared in runner.session.get_inputs():
        if declared.name in feeds and declared.shape is not None and len(declared.shape) == np.ndim(feeds[declared.name]):
            for dim, size in zip(declared.shape, np.shape(feeds[declared.name])):
                if isinstance(dim, str):
                    symbols.setdefault(dim, size)
    shapes: dict[str, list[int] | None] = {}
    for output in runner.session.get_outputs():
        dims = None if output.shape is None else [d if isinstance(d, int) else symbols.get(d) for d in output.shape]
        shapes[output.name] = None if dims is None or any(d is None for d in dims) else dims
    return shapes


def exposed_runner(model: ir.Model, values: Sequence[ir.Value], batch_axis: bool = False) -> OrtRunner:
    """An ORT session whose outputs are ``values``, for one of ``_STREAMS`` streams; with
    ``batch_axis`` the inputs' leading dimension is made symbolic and the declared shapes of the
    main graph's values are dropped (ORT infers them again). The model gets its own outputs and
    shapes back once the session is built (ORT keeps its own copy of the graph)."""
    outputs = model.graph.outputs
    original = list(outputs)
    shapes: dict[ir.Value, ir.Shape] = {}
    if batch_axis:
        for value in [*model.graph.inputs, *(v for node in model.graph for v in node.outputs)]:
            if value.shape is not None:
                shapes[value] = value.shape
    threads = _ort_threads()
    try:
        outputs.clear()
        outputs.extend(values)
        for value in shapes:
            value.shape = None
        for value in model.graph.inputs:
            if value in shapes:
                value.shape = ir.Shape([_BATCH_AXIS, *list(shapes[value])[1:]])
        runner = OrtRunner(model, label="model with calibration tensors exposed", config=_SESSION_CONFIG,
                           threads=threads)
    finally:
        outputs.clear()
        outputs.extend(original)
        for value, shape in shapes.items():
            value.shape = shape
    return runner


_BATCH_AXIS = "onnxc_calibration_batch"


def _ort_threads() -> int:
    """ORT intra-op threads of each stream's runs."""
    return max(1, _cpu_count() // _STREAMS)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
