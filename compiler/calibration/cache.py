"""Calibration caches: collected statistics saved to a file and reused while they still apply.

    stats = cached_statistics("calib.npz", model, tensors, data)   # collects only when needed

which is, spelled out:

    key = statistics_key(model, tensors, data.fingerprint, bins=2048)
    stats = load_statistics("calib.npz", key)          # None: absent, unreadable or stale
    if stats is None:
        stats = collect_statistics(model, tensors, data)
        save_statistics("calib.npz", stats, key=key)

The key hashes what the statistics depend on: the model's graph (nodes, attributes, inputs,
and its weights: in full up to 1 MiB per tensor, from 64 evenly spaced 4 KiB windows beyond,
which any retraining or rewrite of a weight changes), the tensor names, the data fingerprint
(:attr:`CalibrationData.fingerprint`: file names, sizes and times, preprocessing, limit, seed),
``bins`` and ``symmetric``. A cache whose key differs is ignored with a logged message, never
used silently. Data a fingerprint cannot see into (a Python function, a reader) is keyed by its
name only: change its name, or delete the cache, when its output changes.

The file is an uncompressed ``.npz``: ``key``, ``names`` and each tensor's
:meth:`HistogramState.to_arrays` fields under ``t<i>.<field>``. It is written to a temporary
file beside the destination and renamed into place, so readers never see half a cache.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxc.calibration.collect import Statistics, collect_statistics
from onnxc.calibration.data import open_calibration_data
from onnxc.calibration.histogram import HistogramAccumulator
from onnxc.calibration.state import HistogramState
from onnxc.errors import OnnxcError

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
_FULL_HASH_BYTES = 1 << 20
_WINDOWS = 64
_WINDOW_BYTES = 4096


def statistics_key(
    model: ir.Model,
    tensors: Sequence[str],
    data_fingerprint: str,
    *,
    bins: int = 2048,
    symmetric: bool | Mapping[str, bool] = True,
) -> str:
    """A hex digest of everything collected statistics depend on (see the module docstring)."""
    h = hashlib.sha256()
    h.update(f"onnxc-calibration-cache/{CACHE_FORMAT}\n".encode())
    _hash_model(h, model)
    h.update(b"tensors\n")
    for name in dict.fromkeys(tensors):
        sym = symmetric.get(name, True) if isinstance(symmetric, Mapping) else symmetric
        h.update(f"{name}\0{bool(sym)}\n".encode())
    h.update(f"data\0{data_fingerprint}\nbins\0{int(bins)}\n".encode())
    return h.hexdigest()


def cached_statistics(
    path: str | os.PathLike | None,
    model: ir.Model,
    tensors: Sequence[str],
    data: Any,
    *,
    bins: int = 2048,
    symmetric: bool | Mapping[str, bool] = True,
    **collect_options: Any,
) -> Statistics:
    """Statistics from the cache at ``path`` when it holds them for this model, tensors, data and
    settings; else collected (see :func:`collect_statistics`) and saved there. ``path=None``: no cache."""
    if path is None:
        return collect_statistics(model, tensors, data, bins=bins, symmetric=symmetric, **collect_options)
    data = open_calibration_data(data, model)
    key = statistics_key(model, tensors, data.fingerprint, bins=bins, symmetric=symmetric)
    stats = load_statistics(path, key)
    if stats is not None:
        logger.info("calibration statistics of %d tensors reused from %s", len(stats), path)
        return stats
    stats = collect_statistics(model, tensors, data, bins=bins, symmetric=symmetric, **collect_options)
    save_statistics(path, stats, key=key)
    return stats


def save_statistics(path: str | os.PathLike, stats: Mapping[str, Any], *, key: str) -> None:
    """Write ``stats`` (accumulators or states) with ``key``, atomically."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {
        "format": np.asarray(CACHE_FORMAT, dtype=np.int64),
        "key": np.asarray(key),
        "names": np.asarray(list(stats), dtype=np.str_),
    }
    for i, item in enumerate(stats.values()):
        state = item if isinstance(item, HistogramState) else item.state()
        for field, array in state.to_arrays().items():
            arrays[f"t{i}.{field}"] = array
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise OnnxcError(f"cannot write the calibration cache {path}: {error.strerror or error}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        raise OnnxcError(f"cannot write the calibration cache {path}: {error.strerror or error}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_statistics(path: str | os.PathLike, key: str) -> Statistics | None:
    """The statistics saved in ``path`` under ``key``; None (and a logged reason) when the file is
    absent, unreadable, or was saved for another model, data or settings."""
    path = Path(path)
    if not path.exists():
        logger.info("no calibration cache at %s yet; collecting statistics", path)
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        if int(arrays["format"]) != CACHE_FORMAT:
            logger.warning("calibration cache %s has format %s (expected %s); ignoring it and collecting again",
                           path, int(arrays["format"]), CACHE_FORMAT)
            return None
        saved_key = str(arrays["key"])
        if saved_key != key:
            logger.warning("calibration cache %s was saved for another model, tensors, data or settings "
                           "(key %s..., expected %s...); ignoring it and collecting again", path, saved_key[:12], key[:12])
            return None
        stats: Statistics = {}
        for i, name in enumerate(arrays["names"].tolist()):
            prefix = f"t{i}."
            state = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            stats[str(name)] = HistogramAccumulator.from_state(state)
        return stats
    except (OSError, ValueError, KeyError, EOFError, RuntimeError) as error:
        logger.warning("calibration cache %s is unreadable (%s); ignoring it and collecting again", path, error)
        return None


# Hashing the model -------------------------------------------------------------------------------


def _hash_model(h: Any, model: ir.Model) -> None:
    h.update(f"ir{model.ir_version}\n".encode())
    for domain, version in sorted(model.opset_imports.items()):
        h.update(f"opset\0{domain}\0{version}\n".encode())
    _hash_graph(h, model.graph)
    for key in sorted(model.functions, key=repr):
        function = model.functions[key]
        h.update(f"function\0{key!r}\n".encode())
        for node in function:
            _hash_node(h, node)


def _hash_graph(h: Any, graph: ir.Graph) -> None:
    h.update(b"graph\n")
    for value in graph.inputs:
        h.update(f"in\0{value.name}\0{value.dtype}\0{value.shape}\n".encode())
    for name in sorted(graph.initializers):
        value = graph.initializers[name]
        h.update(f"init\0{name}\n".encode())
        if value.const_value is not None:
            _hash_tensor(h, value.const_value)
    for node in graph:
        _hash_node(h, node)
    for value in graph.outputs:
        h.update(f"out\0{value.name}\n".encode())


def _hash_node(h: Any, node: ir.Node) -> None:
    inputs = ",".join("" if v is None else (v.name or "") for v in node.inputs)
    outputs = ",".join(v.name or "" for v in node.outputs)
    h.update(f"node\0{node.domain}\0{node.op_type}\0{node.overload}\0{inputs}\0{outputs}\n".encode())
    for name in sorted(node.attributes):
        attr = node.attributes[name]
        h.update(f"attr\0{name}\0{attr.type}\0".encode())
        if attr.type == ir.AttributeType.TENSOR:
            _hash_tensor(h, attr.value)
        elif attr.type == ir.AttributeType.GRAPH:
            _hash_graph(h, attr.value)
        elif attr.type == ir.AttributeType.GRAPHS:
            for sub in attr.value:
                _hash_graph(h, sub)
        elif attr.type == ir.AttributeType.TENSORS:
            for tensor in attr.value:
                _hash_tensor(h, tensor)
        else:
            h.update(repr(attr.value).encode())
        h.update(b"\n")


def _hash_tensor(h: Any, tensor: ir.TensorProtocol) -> None:
    h.update(f"tensor\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
    raw = np.ascontiguousarray(tensor.numpy()).reshape(-1).view(np.uint8)
    if raw.size <= _FULL_HASH_BYTES:
        h.update(raw.tobytes())
        return
    starts = np.linspace(0, raw.size - _WINDOW_BYTES, _WINDOWS).astype(np.int64)
    for start in starts:
        h.update(raw[start:start + _WINDOW_BYTES].tobytes())
