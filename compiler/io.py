"""Loading and saving models safely.

``load`` refuses anything it cannot read completely and correctly, with one line saying why:
missing or non-ONNX files, truncated protobuf, text that is not UTF-8, a graph without outputs or
failing the checker's full check, external data that is absent, too short, or whose ``location``
is absolute or escapes the model's folder (no file outside that folder is opened), and any stored
tensor whose type, shape and data length disagree (only lengths are compared, never values).
Weights stay memory-mapped, so loading a large model costs little memory and time: external
data through onnx_ir's lazy external tensors, and the large weights inside the model file
through arrays over the mapped file (their bytes are cut out before the protobuf is parsed).
A loaded model therefore reads its file until it is dropped: replace the file (as ``save``
does), do not rewrite it in place.

``save`` writes into a temporary folder beside the destination and renames the files into
place when they are complete, so a failure never leaves a partial output and never touches the
input. Models whose weights exceed the protobuf limit are written with external data.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import ctypes
import functools
import math
import mmap
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError

from onnxc._version import __version__
from onnxc.errors import InvalidModelError, ModelLoadError, first_line
from onnxc.irutil import all_graphs
from onnxc.shapes import apply_inferred, infer_proto

# Protobuf refuses messages over 2 GiB; stay clear of it, leaving room for the graph itself.
EXTERNAL_DATA_THRESHOLD_BYTES = 1_800_000_000
# model.meta key: the type and shape the file declared for each value it typed (value_info and
# graph outputs, subgraphs included), by name. ``save`` writes those, not what ``load`` inferred:
# inferred shapes serve the passes, and written out they made a speech model that came back
# unchanged 14 KB larger than its input.
DECLARED_TYPES = "onnxc.declared_types"


def load(path: str | os.PathLike, *, check: bool = True, infer_shapes: bool = True) -> ir.Model:
    """Load an ONNX model into the onnx_ir IR, validating file, external data and graph.

    With ``infer_shapes`` the values get the static shapes ONNX shape inference finds, from the
    proto just parsed: inferring later, from the IR, would first serialize the whole graph.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if not path.is_file():
        raise ModelLoadError(f"{path}: not a file")
    mapped = _parse_mapped(path)
    if mapped is None:
        proto, weights = _parse_whole(path), {}
    else:
        proto, weights = mapped
    if not proto.HasField("graph") or proto.ir_version <= 0 or not proto.opset_import:
        raise ModelLoadError(f"{path}: not an ONNX model (no graph, IR version or opset)")
    if not proto.graph.output:
        raise InvalidModelError(f"{path}: the graph has no outputs, so it computes nothing")
    if _has_undecodable_text(proto):
        raise InvalidModelError(f"{path}: a name or text in the model is not valid UTF-8")
    base_dir = path.resolve().parent
    sizes, has_external = _check_tensors(proto, weights, base_dir, path)
    # The checker and inference judge the graph; weights (already validated for size and place)
    # stay out, so neither costs a copy of them. The checker runs before the IR is built, so an
    # invalid graph is refused before onnx_ir logs its own complaints about it.
    weightless = _weightless(proto, weights, sizes) if check or infer_shapes else None
    if check:
        _check_opset(proto, path)
        try:
            # full_check adds strict type and shape inference: a Constant without a value, or an Add
            # of float and int32, passes the plain checker and then the output would not load in ORT.
            onnx.checker.check_model(weightless, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, UnicodeDecodeError) as error:
            # (A name that is not UTF-8 in the checker's message fails its decoding too.)
            raise InvalidModelError(f"{path}: the graph fails the ONNX checker: {first_line(error)}") from None
    try:
        model = ir.serde.deserialize_model(proto)
    except Exception as error:  # noqa: BLE001 - any deserialization failure means a bad model
        raise InvalidModelError(f"{path}: cannot read the graph: {first_line(error)}") from None
    if has_external:
        ir.external_data.set_base_dir(model.graph, str(base_dir))
    model.meta[DECLARED_TYPES] = _declared_types(model)
    if infer_shapes:
        inferred = infer_proto(weightless)
        if inferred is not None:
            apply_inferred(model, inferred, static_only=True)
    for index, array in weights.items():
        tensor = proto.graph.initializer[index]
        value = model.graph.initializers[tensor.name]
        value.const_value = ir.Tensor(
            array, dtype=ir.DataType(tensor.data_type), name=tensor.name, doc_string=tensor.doc_string or None
        )
    return model


def _check_opset(proto: onnx.ModelProto, path: Path) -> None:
    """Refuse a default-domain opset newer than ONNX defines: the checker lets it through, ONNX Runtime does not."""
    newest = onnx.defs.onnx_opset_version()
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version > newest:
            raise InvalidModelError(f"{path}: opset {entry.version} does not exist (the newest ONNX opset is {newest})")


def _parse_whole(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"{path}: not a readable ONNX model (corrupt or truncated protobuf: {first_line(error)})") from None
    except MemoryError:
        raise ModelLoadError(f"{path}: not a readable ONNX model (protobuf parse ran out of memory)") from None


# Main-graph initializers whose raw bytes exceed this are not parsed: their tensors read the
# memory-mapped file (no copy at load, none at save). Smaller ones are not worth a mapping.
_MAPPED_MIN_BYTES = 1024
# TensorProto fields a mapped initializer may have: dims, data_type, name, raw_data, doc_string.
_PLAIN_TENSOR_FIELDS = frozenset({1, 2, 8, 9, 12})
_MAPPED_DTYPES = frozenset(
    {
        ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16, ir.DataType.BOOL,
        ir.DataType.INT8, ir.DataType.INT16, ir.DataType.INT32, ir.DataType.INT64,
        ir.DataType.UINT8, ir.DataType.UINT16, ir.DataType.UINT32, ir.DataType.UINT64,
    }
)


class _WireError(Exception):
    """The bytes are not well-formed protobuf; the ordinary parser reports why."""


def _read_varint(data: mmap.mmap, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _WireError
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: mmap.mmap, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, tag start, value start, value end) of each field in data[start:end]."""
    pos = start
    while pos < end:
        tag_start = pos
        key = data[pos]
        # One-byte tags and lengths are the common case: read them without a call.
        if key < 0x80:
            pos += 1
        else:
            key, pos = _read_varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value_start = pos
            _, pos = _read_varint(data, pos, end)
        elif wire == 2:
            length = data[pos] if pos < end else 0x80
            if length < 0x80:
                value_start = pos + 1
            else:
                length, value_start = _read_varint(data, pos, end)
            pos = value_start + length
        elif wire in (1, 5):
            value_start = pos
            pos += 8 if wire == 1 else 4
        else:
            raise _WireError
        if number == 0 or pos > end:
            raise _WireError
        yield number, wire, tag_start, value_start, pos


def _raw_data_field(data: mmap.mmap, start: int, end: int) -> tuple[int, int, int] | None:
    """(tag start, value start, value end) of the raw_data of a plain TensorProto worth mapping."""
    found = None
    for number, wire, tag_start, value_start, value_end in _fields(data, start, end):
        if number not in _PLAIN_TENSOR_FIELDS:
            return None
        if number == 9:
            if found is not None or wire != 2:
                return None
            found = (tag_start, value_start, value_end)
    if found is None or found[2] - found[1] <= _MAPPED_MIN_BYTES:
        return None
    return found


def _parse_mapped(path: Path) -> tuple[onnx.ModelProto, dict[int, np.ndarray]] | None:
    """Parse the model without the raw bytes of its large main-graph initializers.

    Those bytes are cut out of the protobuf before parsing and come back as arrays over the
    memory-mapped file, keyed by initializer index. None when the file is not plain enough
    (empty, malformed, several graph fields): the ordinary parser then reads it, and reports
    what is wrong with it.
    """
    try:
        with open(path, "rb") as file:
            data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
    try:
        graphs = [field for field in _fields(data, 0, len(data)) if field[0] == 7]
        if len(graphs) != 1 or graphs[0][1] != 2:
            return None
        _, _, graph_tag, graph_start, graph_end = graphs[0]
        pieces: list = []
        cursor = graph_start
        cuts: dict[int, tuple[int, int]] = {}
        index = 0
        for number, wire, tag_start, value_start, value_end in _fields(data, graph_start, graph_end):
            if number != 5 or wire != 2:
                continue
            raw = _raw_data_field(data, value_start, value_end)
            if raw is not None:
                raw_tag, raw_start, raw_end = raw
                length = (value_end - value_start) - (raw_end - raw_tag)
                pieces += [data[cursor:tag_start], _TAG_INITIALIZER + _varint(length), data[value_start:raw_tag], data[raw_end:value_end]]
                cursor = value_end
                cuts[index] = (raw_start, raw_end)
            index += 1
    except _WireError:
        return None
    pieces.append(data[cursor:graph_end])
    graph_bytes = b"".join(pieces)
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data[:graph_tag] + _TAG_GRAPH + _varint(len(graph_bytes)) + graph_bytes + data[graph_end:])
    except (DecodeError, RuntimeWarning, ValueError, UnicodeDecodeError, MemoryError):
        return None
    return proto, _map_weights(proto, data, cuts)


def _map_weights(proto: onnx.ModelProto, data: mmap.mmap, cuts: dict[int, tuple[int, int]]) -> dict[int, np.ndarray]:
    """Arrays over the file for the cut initializers; any that cannot be one gets its bytes back."""
    initializers = proto.graph.initializer
    counts = collections.Counter(tensor.name for tensor in initializers)
    weights = {}
    for index, (start, end) in cuts.items():
        tensor = initializers[index]
        array = None
        if counts[tensor.name] == 1 and all(d >= 0 for d in tensor.dims):
            try:
                dtype = ir.DataType(tensor.data_type)
            except ValueError:
                dtype = None
            if dtype in _MAPPED_DTYPES and math.prod(tensor.dims) * dtype.itemsize == end - start:
                array = np.frombuffer(data, dtype=dtype.numpy().newbyteorder("<"), count=math.prod(tensor.dims), offset=start)
        if array is None:
            tensor.raw_data = data[start:end]
        else:
            weights[index] = array.reshape(tuple(tensor.dims))
    return weights


def _weightless(proto: onnx.ModelProto, weights: dict[int, np.ndarray], sizes: dict[int, int]) -> onnx.ModelProto:
    """``proto`` without its large weights: mapped, external or large initializers become typed inputs.

    ``sizes`` holds each initializer's bytes of data (asking protobuf would serialize the tensor).
    """
    initializers = proto.graph.initializer
    offloaded = set(weights) | {
        index
        for index, tensor in enumerate(initializers)
        if tensor.data_location == onnx.TensorProto.EXTERNAL or sizes[index] > _MAPPED_MIN_BYTES
    }
    if not offloaded:
        return proto
    checked = onnx.ModelProto()
    checked.CopyFrom(proto)
    graph = checked.graph
    graph.ClearField("initializer")
    inputs = {info.name for info in graph.input}
    for index, tensor in enumerate(initializers):
        if index not in offloaded:
            graph.initializer.append(tensor)
        elif tensor.name not in inputs:
            info = graph.input.add()
            info.name = tensor.name
            tensor_type = info.type.tensor_type
            tensor_type.elem_type = tensor.data_type
            tensor_type.shape.SetInParent()
            for dim in tensor.dims:
                tensor_type.shape.dim.add().dim_value = dim
    return checked


def save(model: ir.Model, path: str | os.PathLike, *, external_data: bool | None = None) -> list[Path]:
    """Save atomically; returns the files written (the model, and its external data if any).

    ``external_data=None`` chooses: external data when the weights are too large for one
    protobuf file or the model already kept weights outside, else a single file.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a folder, give a file name for the output")
    path.parent.mkdir(parents=True, exist_ok=True)
    if external_data is None:
        external_data = weight_bytes(model) > EXTERNAL_DATA_THRESHOLD_BYTES or _has_external_tensors(model)
    model.producer_name = "onnxc"
    model.producer_version = __version__
    try:
        with _declared_types_written(model):
            if external_data:
                return _save_with_external_data(model, path)
            with _staged_file(path) as staged:
                _write_single_file(model, staged)
                os.replace(staged, path)
            return [path]
    except ValueError as error:
        raise InvalidModelError(f"cannot save {path}: {first_line(error)}") from None


def _declared_types(model: ir.Model) -> dict[str, tuple[ir.TypeProtocol | None, ir.Shape | None]]:
    """What the file said of each value it typed: a graph output, or an intermediate value with
    a type or shape (only value_info gives those before inference)."""
    declared = {}
    for graph in all_graphs(model):
        typed = [value for node in graph for value in node.outputs
                 if value.name and (value.type is not None or value.shape is not None)]
        for value in [*graph.outputs, *typed]:
            declared[value.name] = (value.type, None if value.shape is None else value.shape.copy())
    return declared


@contextlib.contextmanager
def _declared_types_written(model: ir.Model) -> Iterator[None]:
    """While saving a model ``load`` read, give each value the type and shape its file declared
    (none for an intermediate value it did not type), so what inference found is not written,
    unless a pass changed a size the file fixed (then the value's own shape); everything is
    restored afterwards. A value whose element type a pass changed keeps its own,
    as do values the passes made and graphs built in memory (no record of what was declared)."""
    declared = model.meta.get(DECLARED_TYPES)
    if declared is None:
        yield
        return
    changed = []
    for graph in all_graphs(model):
        outputs = {id(value) for value in graph.outputs}
        interface = outputs | {id(value) for value in graph.inputs}
        values = [value for node in graph for value in node.outputs]
        values += [value for value in graph.outputs if value.producer() is None]
        # A tensor holds its own type and shape: a value_info for an initializer repeats them.
        values += [value for value in graph.initializers.values() if id(value) not in interface]
        for value in values:
            was = declared.get(value.name)
            if was is None:
                if id(value) in outputs or (value.type is None and value.shape is None):
                    continue
                written = (None, None)
            elif was[0] is None or value.type is None or was[0] == value.type:
                written = (was[0] or value.type, was[1] if _agrees(was[1], value.shape) else value.shape)
            else:
                continue
            changed.append((value, value.type, value.shape))
            value.type, value.shape = written
    try:
        yield
    finally:
        for value, type_, shape in changed:
            value.type, value.shape = type_, shape


def _agrees(declared: ir.Shape | None, current: ir.Shape | None) -> bool:
    """Whether the file's shape still holds for the value: a pass that removed channels changed a
    size the file fixed, and writing the old one would contradict the weights. A declared -1 is a
    size here, unlike in :func:`onnxc.inputs.check_input_shapes` (a user's ``--shape``): the full
    checker compares it with what it infers, so where onnxc now knows the size, the size is written."""
    if declared is None or current is None:
        return True
    if len(declared) != len(current):
        return False
    return all(not isinstance(d, int) or not isinstance(c, int) or d == c for d, c in zip(declared, current))


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write a text file (a report) the way ``save`` writes models: complete or not at all."""
    with staged_output(path) as staged:
        staged.write_text(text)


@contextlib.contextmanager
def staged_output(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file beside ``path`` to write into; it becomes ``path`` when the block ends
    without an error, and is removed otherwise (a plot, a report: never a partial file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _staged_file(path) as staged:
        yield staged
        os.replace(staged, path)


@contextlib.contextmanager
def _staged_file(path: Path) -> Iterator[Path]:
    """A new empty file beside ``path``, removed on the way out unless it was renamed onto ``path``.

    Created with mode 0666 less the umask, as any new file: ``mkstemp`` would make it 0600, and
    the rename would hand the user an output no one else may read.
    """
    while True:
        staged = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield staged
    finally:
        if os.path.lexists(staged):
            os.unlink(staged)


def _save_with_external_data(model: ir.Model, path: Path) -> list[Path]:
    """Stage the model and its ``<name>.data`` in a folder beside ``path``, then move both into place.

    The data file's name is recorded inside the model, so both are written under their final
    names in the staging folder; the data is moved first so the model never points at nothing.
    """
    data_name = f"{path.name}.data"
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        ir.save(model, staging / path.name, external_data=data_name)
        written = [path]
        if (staging / data_name).exists():
            os.replace(staging / data_name, path.parent / data_name)
            written.append(path.parent / data_name)
        os.replace(staging / path.name, path)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# Protobuf wire tags (field number << 3 | length-delimited): ModelProto.graph = 7,
# GraphProto.initializer = 5, TensorProto.raw_data = 9.
_TAG_GRAPH, _TAG_INITIALIZER, _TAG_RAW_DATA = b"\x3a", b"\x2a", b"\x4a"


def _varint(value: int) -> bytes:
    if value < 0:
        # Shifting a negative number right never reaches zero.
        raise ValueError(f"a length of {value} bytes cannot be written (a tensor with a negative dimension?)")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _write_single_file(model: ir.Model, path: Path) -> None:
    """Write the model as one protobuf file, streaming the main graph's weights.

    Building the weights into a protobuf message and serializing it copies them twice; here the
    graph is serialized without them and each weight's bytes are written straight after its
    header, in the wire format protobuf readers merge into the same ModelProto.
    """
    graph = model.graph
    streamed = [v for v in graph.initializers.values() if v.const_value is not None
                and v.const_value.dtype != ir.DataType.STRING and not _small_integers(v.const_value)]
    streamed_ids = {id(v) for v in streamed}
    view = ir.GraphView(
        graph.inputs, graph.outputs, nodes=graph,
        initializers=[v for v in graph.initializers.values() if id(v) not in streamed_ids],
        doc_string=graph.doc_string, opset_imports=graph.opset_imports, name=graph.name, metadata_props=graph.metadata_props,
    )
    shell = copy.copy(model)
    shell.graph = view
    proto = ir.serde.serialize_model(shell)
    for tensor in proto.graph.initializer:
        _pack_integers(tensor)
    graph_bytes = proto.graph.SerializeToString(deterministic=True)
    proto.ClearField("graph")
    headers = []
    for value in streamed:
        tensor = value.const_value
        header = onnx.TensorProto(name=value.name, dims=[int(d) for d in tensor.shape], data_type=tensor.dtype.value)
        if tensor.doc_string:
            header.doc_string = tensor.doc_string
        headers.append(header.SerializeToString(deterministic=True) + _TAG_RAW_DATA + _varint(tensor.nbytes))
    lengths = [len(h) + v.const_value.nbytes for h, v in zip(headers, streamed)]
    graph_length = len(graph_bytes) + sum(len(_TAG_INITIALIZER) + len(_varint(n)) + n for n in lengths)
    model_bytes = proto.SerializeToString(deterministic=True)
    graph_header = _TAG_GRAPH + _varint(graph_length)
    with open(path, "wb") as file:
        _preallocate(file.fileno(), len(model_bytes) + len(graph_header) + graph_length)
        file.write(model_bytes)
        file.write(graph_header)
        file.write(graph_bytes)
        for header, length, value in zip(headers, lengths, streamed):
            raw = _wire_bytes(value.const_value)
            if raw.nbytes != value.const_value.nbytes:
                raise ValueError(f"initializer {value.name!r} has {raw.nbytes} bytes of data, expected {value.const_value.nbytes}")
            file.write(_TAG_INITIALIZER + _varint(length))
            file.write(header)
            file.write(raw)


# Shapes, axes and zero points: small integer tensors exporters write as varints (int64_data),
# which for small values take a byte or two where raw_data takes eight. Such tensors are not
# streamed but written in whichever encoding is shorter, so a model does not grow by passing through.
_SMALL_INTEGER_ELEMENTS = 64
_PACKED_FIELDS = {ir.DataType.INT64.value: "int64_data", ir.DataType.INT32.value: "int32_data"}


def _small_integers(tensor: ir.TensorProtocol) -> bool:
    return tensor.dtype.value in _PACKED_FIELDS and tensor.size <= _SMALL_INTEGER_ELEMENTS


def _pack_integers(tensor: onnx.TensorProto) -> None:
    """Move a small integer tensor's raw_data into its packed varint field where that is shorter."""
    field = _PACKED_FIELDS.get(tensor.data_type)
    if field is None or not tensor.HasField("raw_data") or tensor.external_data:
        return
    values = np.frombuffer(tensor.raw_data, dtype="<i8" if field == "int64_data" else "<i4").tolist()
    packed = onnx.TensorProto()
    getattr(packed, field).extend(values)
    if len(packed.SerializeToString()) < len(tensor.raw_data) + 2:
        tensor.ClearField("raw_data")
        getattr(tensor, field).extend(values)


def _preallocate(fd: int, size: int) -> None:
    """Reserve the blocks of a file about to be written with ``size`` bytes (best effort).

    ext4 allocates blocks lazily; when a file whose blocks are not yet allocated is renamed over
    an existing one, it writes the new file out during the rename (``auto_da_alloc``), which took
    15 ms of a 20 ms save for a 14 MB model written over its previous output. Blocks reserved up
    front leave the writing to the kernel's usual write-back, as for any other file we write, and
    make the writes themselves cheaper. Systems or filesystems without ``fallocate`` are left as they are.
    """
    fallocate = _fallocate()
    if fallocate is not None and size > 0:
        fallocate(fd, _FALLOC_FL_KEEP_SIZE, 0, size)


# The file keeps its size; only blocks are reserved, so a size reckoned wrong cannot pad the file.
_FALLOC_FL_KEEP_SIZE = 1


@functools.cache
def _fallocate():
    # Linux's fallocate, not posix_fallocate: that one emulates the call by writing the whole file
    # where the filesystem lacks it, which would double the writing instead of saving any.
    try:
        function = ctypes.CDLL(None, use_errno=True).fallocate
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


def _wire_bytes(tensor: ir.TensorProtocol) -> memoryview:
    """The tensor's little-endian bytes; for a plain numpy-backed tensor, its array's memory (no copy)."""
    if type(tensor) is ir.Tensor and tensor.dtype in _MAPPED_DTYPES and sys.byteorder == "little":
        array = tensor.numpy()
        if (
            isinstance(array, np.ndarray)
            and array.flags.c_contiguous
            and array.dtype.byteorder in "=<|"
            and array.dtype.itemsize == tensor.dtype.itemsize
        ):
            return memoryview(array.reshape(-1).view(np.uint8))
    return memoryview(tensor.tobytes())


def weight_bytes(model: ir.Model) -> int:
    """Bytes held by all initializers of all graphs."""
    return sum(tensor_bytes(v.const_value) for g in all_graphs(model) for v in g.initializers.values() if v.const_value is not None)


def tensor_bytes(tensor: ir.TensorProtocol) -> int:
    """Bytes of a tensor's data, from shape and dtype: asking the tensor itself is several times slower for parsed tensors."""
    if tensor.dtype == ir.DataType.STRING:
        return tensor.nbytes
    return math.ceil(math.prod(tensor.shape.dims) * tensor.dtype.itemsize)


def _has_external_tensors(model: ir.Model) -> bool:
    return any(
        isinstance(v.const_value, ir.ExternalTensor) for g in all_graphs(model) for v in g.initializers.values()
    )


def _tensors(proto: onnx.ModelProto, *, main_initializers: bool = True) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every tensor the model stores, with words saying where it is: initializers, sparse ones,
    and the tensors of node attributes in every graph, subgraph and function."""
    yield from _graph_tensors(proto.graph, "", main_initializers)
    for function in proto.functions:
        yield from _node_tensors(function.node, f"function {function.name!r}: ")


def _graph_tensors(graph: onnx.GraphProto, prefix: str, initializers: bool = True) -> Iterator[tuple[str, onnx.TensorProto]]:
    if initializers:
        for tensor in graph.initializer:
            yield f"{prefix}initializer {tensor.name!r}", tensor
    for sparse in graph.sparse_initializer:
        yield f"{prefix}sparse initializer {sparse.values.name!r}", sparse.values
        yield f"{prefix}indices of sparse initializer {sparse.values.name!r}", sparse.indices
    yield from _node_tensors(graph.node, prefix)


def _node_tensors(nodes, prefix: str) -> Iterator[tuple[str, onnx.TensorProto]]:
    for node in nodes:
        for attr in node.attribute:
            where = f"{prefix}tensor of attribute {attr.name!r} of node {node.name or node.op_type!r}"
            if attr.HasField("t"):
                yield where, attr.t
            for tensor in attr.tensors:
                yield where, tensor
            for sparse in [attr.sparse_tensor] if attr.HasField("sparse_tensor") else []:
                yield where, sparse.values
                yield f"indices of {where}", sparse.indices
            for sparse in attr.sparse_tensors:
                yield where, sparse.values
                yield f"indices of {where}", sparse.indices
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g, f"{where}: ")
            for sub in attr.graphs:
                yield from _graph_tensors(sub, f"{where}: ")


def _check_tensors(
    proto: onnx.ModelProto, weights: dict[int, np.ndarray], base_dir: Path, path: Path
) -> tuple[dict[int, int], bool]:
    """Validate every stored tensor; returns the bytes of data of each main-graph initializer,
    and whether any tensor has external data.

    Mapped weights were checked as they were cut out (shape, type and byte count agree).
    """
    sizes = {}
    has_external = False
    for index, tensor in enumerate(proto.graph.initializer):
        if index in weights:
            sizes[index] = weights[index].nbytes
        else:
            sizes[index] = _check_tensor(tensor, f"{path}: initializer {tensor.name!r}", base_dir)
            has_external |= tensor.data_location == onnx.TensorProto.EXTERNAL
    for where, tensor in _tensors(proto, main_initializers=False):
        _check_tensor(tensor, f"{path}: {where}", base_dir)
        has_external |= tensor.data_location == onnx.TensorProto.EXTERNAL
    return sizes, has_external


# No tensor is this large; a shape that claims more is corrupt (and numpy could not even hold it empty).
_MAX_TENSOR_BYTES = 1 << 48
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def _check_tensor(tensor: onnx.TensorProto, where: str, base_dir: Path) -> int:
    """Refuse a tensor whose type, shape and data do not agree; returns its bytes of data.

    Only lengths are compared, never values. The large main-graph weights were cut out of the
    file before parsing and external data is only stat'ed, so their bytes are never touched.
    """
    try:
        dtype = ir.DataType(tensor.data_type)
    except ValueError:
        dtype = ir.DataType.UNDEFINED
    if dtype == ir.DataType.UNDEFINED:
        raise InvalidModelError(f"{where} has data type {tensor.data_type}, which is not an ONNX tensor type")
    dims = list(tensor.dims)
    if any(d < 0 for d in dims):
        raise InvalidModelError(f"{where} has a negative dimension in its shape {dims}")
    bits = 8 if dtype == ir.DataType.STRING else dtype.bitwidth
    if math.prod(d for d in dims if d) * bits > _MAX_TENSOR_BYTES * 8:
        raise InvalidModelError(f"{where} has shape {dims}: more elements than any tensor can hold")
    count = math.prod(dims)
    places = [name for name in _TYPED_FIELDS if len(getattr(tensor, name))]
    if tensor.HasField("raw_data"):
        places.append("raw_data")
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        places.append("external data")
    if len(places) > 1:
        raise InvalidModelError(f"{where} stores its values in several places ({', '.join(places)})")
    place = places[0] if places else None
    nbytes = -(-count * bits // 8)
    if dtype == ir.DataType.STRING:
        if place not in (None, "string_data"):
            raise InvalidModelError(f"{where} is a STRING tensor with its values in {place}; strings belong in string_data")
        stored, expected, nbytes = len(tensor.string_data), count, 0
    elif place == "external data":
        _check_external_data(tensor, where, nbytes, base_dir)
        return nbytes
    elif place == "raw_data":
        # A copy of the bytes, but only of those not cut out of the file: small or unusual tensors.
        stored, expected = len(tensor.raw_data), nbytes
    elif place is None:
        stored, expected = 0, count
    else:
        field = onnx.helper.tensor_dtype_to_field(dtype.value)
        if place != field:
            raise InvalidModelError(f"{where} is {dtype.name} but has its values in {place} (expected {field} or raw_data)")
        stored, expected = len(getattr(tensor, place)), _typed_count(count, dtype)
    if stored != expected:
        raise InvalidModelError(
            f"{where} has {stored} {'bytes' if place == 'raw_data' else 'values'} of data; "
            f"its shape {dims} and type {dtype.name} need {expected}"
        )
    return nbytes


def _typed_count(count: int, dtype: ir.DataType) -> int:
    """Entries of the typed field that hold ``count`` values: two per complex value; 4- and
    2-bit values packed into one byte per entry (6-bit ones take an entry each)."""
    if dtype in (ir.DataType.COMPLEX64, ir.DataType.COMPLEX128):
        return 2 * count
    if dtype.bitwidth in (2, 4):
        return -(-count * dtype.bitwidth // 8)
    return count


def _check_external_data(tensor: onnx.TensorProto, where: str, nbytes: int, base_dir: Path) -> None:
    """The data file must lie inside the model's folder and hold ``nbytes`` at the offset given."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    if not location:
        raise ModelLoadError(f"{where} has external data without a location")
    if "\0" in location:
        raise ModelLoadError(f"{where}: external data location {location!r} contains a NUL character")
    if os.path.isabs(location) or location.startswith(("\\", "/")) or (len(location) > 1 and location[1] == ":"):
        raise ModelLoadError(f"{where}: external data location {location!r} is absolute; only paths inside the model's folder are allowed")
    normalized = os.path.normpath(location)
    if normalized == ".." or normalized.startswith(".." + os.sep):
        raise ModelLoadError(f"{where}: external data location {location!r} escapes the model's folder")
    offset, length = (_byte_count(info.get(key), key, where) for key in ("offset", "length"))
    if length is not None and length != nbytes:
        raise ModelLoadError(f"{where}: external data length {length} does not match the {nbytes} bytes its shape and type need")
    try:
        target = (base_dir / normalized).resolve()
        if base_dir != target and base_dir not in target.parents:
            raise ModelLoadError(f"{where}: external data location {location!r} escapes the model's folder (through a link)")
        if not target.is_file():
            raise ModelLoadError(f"{where}: external data file {location!r} not found next to the model")
        size = target.stat().st_size
    except (OSError, RuntimeError) as error:  # a name too long, a link loop
        raise ModelLoadError(f"{where}: cannot open external data file {location!r}: {error.strerror or error}") from None
    needed = (offset or 0) + nbytes
    if needed > size:
        raise ModelLoadError(f"{where}: external data file {location!r} is too short ({size} bytes, needs {needed})")


def _byte_count(text: str | None, key: str, where: str) -> int | None:
    if text is None or text == "":
        return None
    # int() would also take signs, spaces, underscores and non-ASCII digits.
    if not (text.isascii() and text.isdigit()):
        raise ModelLoadError(f"{where}: external data {key} {text!r} is not a non-negative integer")
    return int(text)


# Bytes fields that onnx_ir decodes as text (string attributes): it drops an attribute that is not UTF-8.
_TEXT_IN_BYTES = frozenset({"onnx.AttributeProto.s", "onnx.AttributeProto.strings"})


def _has_undecodable_text(proto: onnx.ModelProto) -> bool:
    """Whether any string field (a name, a doc string, ...) holds bytes that are not UTF-8.

    Protobuf hands such a field back as bytes instead of str; onnx_ir would carry them through
    every pass and fail only when writing the output. Tensor data is not visited.
    """
    stack: list = [proto]
    while stack:
        message = stack.pop()
        if isinstance(message, onnx.TensorProto):
            if type(message.name) is not str or type(message.doc_string) is not str:
                return True
            stack += message.external_data
            stack += message.metadata_props
            continue
        for field, value in message.ListFields():
            if field.type == FieldDescriptor.TYPE_STRING:
                if any(type(v) is not str for v in (value if field.is_repeated else (value,))):
                    return True
            elif field.full_name in _TEXT_IN_BYTES:
                try:
                    for text in value if field.is_repeated else (value,):
                        text.decode("utf-8")
                except UnicodeDecodeError:
                    return True
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                if field.is_repeated:
                    stack += value
                else:
                    stack.append(value)
    return False



