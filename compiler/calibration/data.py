"""Calibration data: every source a user may give, read as a stream of validated feeds.

    data = open_calibration_data("calib/", model)          # folder of .npz, one feed each
    for feeds in data:                                      # dict[input name, np.ndarray]
        ...
    len(data)                                               # when the source knows it

Sources (``spec``):

* a folder of ``.npz`` files, one feed each, arrays named by the model's inputs (sorted by file
  name); a folder of ``.npy`` files works the same for single-input models;
* one ``.npz`` file with arrays named by the inputs, or one ``.npy`` file for a single-input
  model, holding many samples along a leading axis: an array of the input's rank has its samples
  on the batch axis and is cut into batches of the model's batch size (a fixed batch dim) or of
  ``batch_size`` (a symbolic one, default 1); an array of one rank more stacks whole feeds;
* a folder of images (``.png .jpg .jpeg .bmp``, needs Pillow) with declared preprocessing
  (:class:`ImagePreprocess`, or the recipe's ``[calibration.preprocess]`` table);
* ``"package.module:function"`` or ``"path/to/file.py:function"``, or a Python callable: called
  with no arguments, it returns one feed, an iterable of feeds, or a reader (below). It is called
  again for each pass over the data, so it must give the same feeds every time;
* an ONNX Runtime ``CalibrationDataReader`` (anything with ``get_next()`` returning dicts until
  ``None``); read again after ``rewind()`` when it has one, else once only;
* a dict (one feed) or an iterable of dicts;
* ``None`` or ``"random"``: seeded random feeds, only with ``allow_random=True``, with a warning.

Every feed is checked against the model's inputs, and any problem is one line of
:class:`~onnxc.errors.OnnxcError` naming the file or item: a missing or unknown input name, a
wrong rank, a wrong fixed dim. Dtypes: a float array for a float input of another width is cast
(numpy saves float64 by default, and narrowing is what inference of that data would do anyway);
an integer or bool array for an integer input is cast when every value fits; any other mismatch
(an integer image for a float input, floats for token ids) is refused, because a silent cast
would skip the model's own preprocessing and calibrate on the wrong range.

``limit`` caps the number of feeds (batches), not of samples.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import itertools
import logging
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxc.context import Feeds
from onnxc.errors import OnnxcError
from onnxc.inputs import random_feeds, resolve_input_shapes

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png")
DEFAULT_RANDOM_FEEDS = 8


# What the model takes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """One graph input a feed must (or, for an initializer-backed input, may) provide."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...] | None  # None: rank unknown; a None dim: symbolic
    required: bool

    @property
    def batch(self) -> int | None:
        """The fixed batch (leading) dim, or None when it is symbolic or the input is a scalar."""
        return self.shape[0] if self.shape else None


def model_inputs(model: ir.Model) -> list[InputSpec]:
    specs = []
    for value in model.graph.inputs:
        dtype = value.dtype.numpy() if value.dtype is not None else np.dtype(np.float32)
        shape = None if value.shape is None else tuple(d if isinstance(d, int) and d >= 0 else None for d in value.shape)
        specs.append(InputSpec(value.name or "", np.dtype(dtype), shape, not value.is_initializer()))
    return specs


def _conform_array(array: Any, spec: InputSpec, where: str) -> np.ndarray:
    """``array`` as the input takes it, or one line saying why it cannot be."""
    try:
        a = np.asarray(array)
    except Exception as error:  # noqa: BLE001 - any object may arrive from a user's callable
        raise OnnxcError(f"{where}: input {spec.name!r} is not an array ({type(array).__name__}: {error})") from None
    want = spec.dtype
    if a.dtype != want:
        if a.dtype.kind == "f" and want.kind == "f":
            a = a.astype(want)
        elif a.dtype.kind in "iub" and want.kind in "iu":
            info = np.iinfo(want)
            if a.size and (a.min() < info.min or a.max() > info.max):
                raise OnnxcError(f"{where}: input {spec.name!r} has values outside {want} (range {a.min()}..{a.max()})")
            a = a.astype(want)
        else:
            raise OnnxcError(
                f"{where}: input {spec.name!r} is {a.dtype} but the model takes {want}; apply the model's "
                f"preprocessing before saving (or use an image folder with a preprocess recipe)")
    if spec.shape is not None:
        if a.ndim != len(spec.shape):
            raise OnnxcError(f"{where}: input {spec.name!r} has rank {a.ndim} (shape {list(a.shape)}) but the model "
                             f"takes rank {len(spec.shape)} ({_shape_text(spec.shape)})")
        for axis, (have, fixed) in enumerate(zip(a.shape, spec.shape)):
            if fixed is not None and have != fixed:
                raise OnnxcError(f"{where}: input {spec.name!r} has shape {list(a.shape)} but the model takes "
                                 f"{_shape_text(spec.shape)} (axis {axis})")
    return a


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


class _Conformer:
    """Checks feeds against the model's inputs and casts what may be cast."""

    def __init__(self, model: ir.Model):
        self.inputs = {spec.name: spec for spec in model_inputs(model)}
        self.required = [spec.name for spec in self.inputs.values() if spec.required]

    def __call__(self, feed: Any, where: str) -> Feeds:
        if not isinstance(feed, Mapping):
            raise OnnxcError(f"{where}: expected a dict of input name -> array, got {type(feed).__name__}")
        missing = [name for name in self.required if name not in feed]
        if missing:
            raise OnnxcError(f"{where}: missing input(s) {', '.join(map(repr, missing))} "
                             f"(the model takes {', '.join(map(repr, self.required))})")
        extra = sorted(str(name) for name in feed if name not in self.inputs)
        if extra:
            raise OnnxcError(f"{where}: unknown input name(s) {', '.join(map(repr, extra))} "
                             f"(the model takes {', '.join(map(repr, self.required))})")
        return {name: _conform_array(array, self.inputs[name], where) for name, array in feed.items()}


# The stream --------------------------------------------------------------------------------------


class CalibrationData:
    """An iterable of validated feeds; see the module docstring.

    Attributes:
        description: a short human-readable account of the source.
        fingerprint: a string that changes when the data may have changed (file names, sizes,
            modification times, preprocessing, limit, seed); calibration caches key on it.
        reiterable: False for sources that can be read once only (a generator, a reader without
            ``rewind``); :func:`~onnxc.calibration.collect.collect_statistics` spools those to a
            temporary folder when it needs several passes.
        length: the number of feeds when known, else None (``len()`` then raises TypeError).
    """

    def __init__(
        self,
        open_items: Callable[[], Iterator[tuple[str, Any]]],
        *,
        conformer: _Conformer,
        description: str,
        fingerprint: str | Callable[[], str],
        length: int | None,
        reiterable: bool = True,
        limit: int | None = None,
        preprocess: Callable[[Feeds], Feeds] | None = None,
    ):
        if limit is not None and limit < 1:
            raise OnnxcError(f"calibration limit must be at least 1, got {limit}")
        self._open_items = open_items
        self._conformer = conformer
        self._limit = limit
        self._preprocess = preprocess
        self._opened = False
        self.description = description
        self._fingerprint = fingerprint
        self.reiterable = reiterable
        self.length = length if limit is None or length is None else min(length, limit)

    @property
    def fingerprint(self) -> str:
        # Computed on first use: hashing feeds given in memory costs time nobody needs without a cache.
        if callable(self._fingerprint):
            self._fingerprint = self._fingerprint()
        return self._fingerprint + (f"|limit={self._limit}" if self._limit is not None else "")

    def __iter__(self) -> Iterator[Feeds]:
        if self._opened and not self.reiterable:
            raise OnnxcError(f"calibration data from {self.description} can be read only once")
        self._opened = True
        items = self._open_items()
        if self._limit is not None:
            items = itertools.islice(items, self._limit)
        count = 0
        for where, feed in items:
            if self._preprocess is not None:
                feed = self._preprocess(feed)
            yield self._conformer(feed, where)
            count += 1
        if count == 0:
            raise OnnxcError(f"calibration data from {self.description} holds no feeds")

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError(f"the number of feeds in {self.description} is not known in advance")
        return self.length

    def __repr__(self) -> str:
        return f"CalibrationData({self.description}, feeds={self.length if self.length is not None else '?'})"


# Opening a spec ----------------------------------------------------------------------------------


def open_calibration_data(
    spec: Any,
    model: ir.Model,
    *,
    allow_random: bool = False,
    limit: int | None = None,
    seed: int = 0,
    preprocess: ImagePreprocess | Mapping[str, Any] | Callable[[Feeds], Feeds] | None = None,
    batch_size: int | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    warn_random: bool = True,
) -> CalibrationData:
    """Calibration feeds for ``model`` from ``spec``; see the module docstring.

    ``preprocess``: for an image folder, an :class:`ImagePreprocess` or its dict form; for any
    other source, a function applied to each feed before it is checked. ``batch_size``: samples
    per feed when a source holds many samples and the model's batch dim is symbolic (default 1).
    ``input_shapes`` (``--shape``) fill symbolic dims: the size images are resized to, the shapes
    of random feeds. ``warn_random``: log that random data is used (a caller opening the same data
    again passes False). A :class:`CalibrationData` given as ``spec`` is returned as it is.
    """
    if isinstance(spec, CalibrationData):
        return spec
    if batch_size is not None and batch_size < 1:
        raise OnnxcError(f"batch_size must be at least 1, got {batch_size}")
    conformer = _Conformer(model)
    image_preprocess = None
    feed_preprocess = None
    if isinstance(preprocess, (ImagePreprocess, Mapping)):
        image_preprocess = preprocess if isinstance(preprocess, ImagePreprocess) else ImagePreprocess.from_mapping(preprocess)
    elif preprocess is not None:
        if not callable(preprocess):
            raise OnnxcError(f"preprocess must be a dict of image settings or a function, got {type(preprocess).__name__}")
        feed_preprocess = preprocess

    common = dict(conformer=conformer, limit=limit, preprocess=feed_preprocess)
    if spec is None or (isinstance(spec, str) and spec == "random"):
        if image_preprocess is not None:
            raise OnnxcError("image preprocessing was given but there is no image folder to read")
        return _random_source(model, allow_random, limit, seed, batch_size or 1, conformer, input_shapes, warn_random)
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if path.exists():
            if image_preprocess is not None and not (path.is_dir() and _image_files(path)):
                raise OnnxcError(f"{path}: image preprocessing was given but this is not a folder of images")
            return _path_source(path, model, batch_size, image_preprocess, common, input_shapes or {})
        if isinstance(spec, str) and ":" in spec:
            return _callable_source(_load_callable(spec), spec, common)
        raise OnnxcError(f"calibration data not found: {path}")
    if image_preprocess is not None:
        raise OnnxcError("image preprocessing applies to a folder of images only")
    if _is_reader(spec):
        return _reader_source(spec, type(spec).__name__, common)
    if isinstance(spec, Mapping):
        return CalibrationData(lambda: iter([("calibration feed", spec)]), description="one feed given in Python",
                               fingerprint=lambda: "feed:" + _arrays_digest([spec]), length=1, **common)
    if callable(spec):
        name = f"{getattr(spec, '__module__', '?')}:{getattr(spec, '__qualname__', type(spec).__name__)}"
        return _callable_source(spec, name, common)
    if isinstance(spec, Iterable):
        return _iterable_source(spec, "feeds given in Python", common)
    raise OnnxcError(f"cannot read calibration data from a {type(spec).__name__}: give a folder, a .npz/.npy file, "
                     "'module:function', a CalibrationDataReader or an iterable of feeds")


def _is_reader(obj: Any) -> bool:
    return callable(getattr(obj, "get_next", None))


def _label(index: int, description: str) -> str:
    return f"feed {index} of {description}"


def _iterable_source(items: Iterable[Any], description: str, common: dict) -> CalibrationData:
    if isinstance(items, Sequence) and not isinstance(items, (str, bytes)):
        feeds = list(items)
        return CalibrationData(lambda: ((_label(i, description), f) for i, f in enumerate(feeds)),
                               description=description, fingerprint=lambda: "feeds:" + _arrays_digest(feeds),
                               length=len(feeds), **common)
    # An iterator or generator: one pass only, and its content cannot be fingerprinted up front.
    return CalibrationData(lambda: ((_label(i, description), f) for i, f in enumerate(items)),
                           description=description, fingerprint=f"stream:{description}", length=None,
                           reiterable=False, **common)


def _arrays_digest(feeds: Sequence[Any]) -> str:
    digest = hashlib.sha256()
    for feed in feeds:
        if not isinstance(feed, Mapping):
            digest.update(repr(type(feed)).encode())
            continue
        for name in sorted(map(str, feed)):
            a = np.ascontiguousarray(np.asarray(feed[name]))
            digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
            digest.update(a.tobytes())
    return digest.hexdigest()[:32]


def _reader_items(reader: Any, description: str) -> Iterator[tuple[str, Any]]:
    for index in itertools.count():
        feed = reader.get_next()
        if feed is None:
            return
        yield _label(index, description), feed


def _reader_source(reader: Any, name: str, common: dict) -> CalibrationData:
    description = f"calibration data reader {name}"
    rewind = getattr(reader, "rewind", None)

    def items() -> Iterator[tuple[str, Any]]:
        if callable(rewind):
            rewind()
        return _reader_items(reader, description)

    return CalibrationData(items, description=description, fingerprint=f"reader:{name}", length=_known_len(reader),
                           reiterable=callable(rewind), **common)


def _known_len(obj: Any) -> int | None:
    try:
        return int(len(obj))
    except (TypeError, NotImplementedError, ValueError):
        return None


def _callable_source(function: Callable[[], Any], name: str, common: dict) -> CalibrationData:
    description = f"{name}()"
    first: list[Any] = []

    def produce() -> Any:
        # The first call also told the length; reuse its result rather than calling twice.
        if first:
            return first.pop()
        try:
            return function()
        except OnnxcError:
            raise
        except Exception as error:  # noqa: BLE001 - the user's code may raise anything
            raise OnnxcError(f"calibration function {description} failed: {type(error).__name__}: {error}") from None

    def items() -> Iterator[tuple[str, Any]]:
        result = produce()
        if isinstance(result, Mapping):
            return iter([(_label(0, description), result)])
        if _is_reader(result):
            return _reader_items(result, description)
        if isinstance(result, Iterable) and not isinstance(result, (str, bytes)):
            return ((_label(i, description), f) for i, f in enumerate(result))
        raise OnnxcError(f"calibration function {description} returned a {type(result).__name__}; "
                         "expected a feed dict, an iterable of them or a CalibrationDataReader")

    length = None
    if not inspect.isgeneratorfunction(function):
        result = produce()
        first.append(result)
        length = 1 if isinstance(result, Mapping) else _known_len(result)
    return CalibrationData(items, description=description, fingerprint=f"callable:{name}", length=length, **common)


def _load_callable(spec: str) -> Callable[[], Any]:
    """``package.module:function`` or ``path/to/file.py:function``."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise OnnxcError(f"calibration data {spec!r}: expected 'module:function' or 'file.py:function'")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise OnnxcError(f"calibration data {spec!r}: no such file {path}")
        module_name = "onnxc_calibration_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise OnnxcError(f"calibration data {spec!r}: cannot import {path}")
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as error:  # noqa: BLE001
            raise OnnxcError(f"calibration data {spec!r}: importing {path} failed: {type(error).__name__}: {error}") from None
    else:
        module = _import_module(target, spec)
    function = getattr(module, attr, None)
    if function is None or not callable(function):
        raise OnnxcError(f"calibration data {spec!r}: {target} has no function {attr!r}")
    return function


def _import_module(name: str, spec: str) -> Any:
    # The console script does not put the working directory on sys.path; a user's module is often there.
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise OnnxcError(f"calibration data {spec!r}: cannot import module {name!r} ({error})") from None
    except Exception as error:  # noqa: BLE001
        raise OnnxcError(f"calibration data {spec!r}: importing {name!r} failed: {type(error).__name__}: {error}") from None
    finally:
        if added:
            sys.path.remove(cwd)


def _random_source(model: ir.Model, allow: bool, limit: int | None, seed: int, batch: int,
                   conformer: _Conformer, input_shapes: Mapping[str, Sequence[int]] | None, warn: bool) -> CalibrationData:
    if not allow:
        raise OnnxcError("no calibration data: give --calib-data PATH (a folder of .npz feeds, images, ...) "
                         "or allow random data with --calib-random")
    count = limit or DEFAULT_RANDOM_FEEDS
    shapes = resolve_input_shapes(model, {k: list(v) for k, v in (input_shapes or {}).items()}, batch=batch)
    if warn:
        # A log line, not a Python warning (which would also print its source line).
        logger.warning(f"calibrating on {count} random feeds (seed {seed}): thresholds from random data rarely suit "
                       "real inputs; give real calibration data")
    description = f"{count} random feeds"
    return CalibrationData(
        lambda: ((_label(i, description), random_feeds(model, shapes, seed=seed + i)) for i in range(count)),
        conformer=conformer, description=description,
        fingerprint=f"random:seed={seed}:count={count}:shapes={sorted(shapes.items())}", length=count)


# Files -------------------------------------------------------------------------------------------


def _file_stamp(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for p in paths:
        st = p.stat()
        digest.update(f"{p.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _path_source(path: Path, model: ir.Model, batch_size: int | None, image_preprocess: ImagePreprocess | None,
                 common: dict, input_shapes: Mapping[str, Sequence[int]]) -> CalibrationData:
    inputs = [spec for spec in model_inputs(model) if spec.required]
    if path.is_dir():
        npz = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".npz")
        npy = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".npy")
        images = _image_files(path)
        kinds = [name for name, found in (("npz", npz), ("npy", npy), ("image", images)) if found]
        if len(kinds) > 1:
            raise OnnxcError(f"{path}: holds both {kinds[0]} and {kinds[1]} files; keep one kind of calibration data per folder")
        if npz:
            return _npz_folder(path, npz, common)
        if npy:
            single = _single_input(inputs, path, "a folder of .npy files")
            return CalibrationData(
                lambda: ((p.name, {single.name: _load_npy(p)}) for p in npy),
                description=f"{path} ({len(npy)} .npy files)", fingerprint=f"npy-folder:{_file_stamp(npy)}",
                length=len(npy), **common)
        if images:
            return _image_folder(path, images, inputs, image_preprocess or ImagePreprocess(), batch_size, common,
                                 input_shapes)
        raise OnnxcError(f"{path}: no calibration files (.npz, .npy or {', '.join(IMAGE_SUFFIXES)}) in this folder")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays = _load_npz(path)
        return _sample_axis_source(path, arrays, inputs, batch_size, common)
    if suffix == ".npy":
        single = _single_input(inputs, path, "a .npy file")
        return _sample_axis_source(path, {single.name: _load_npy(path)}, inputs, batch_size, common)
    raise OnnxcError(f"{path}: not calibration data (expected a folder, a .npz or a .npy file)")


def _single_input(inputs: Sequence[InputSpec], path: Path, what: str) -> InputSpec:
    if len(inputs) != 1:
        raise OnnxcError(f"{path}: {what} serves single-input models; this one takes "
                         f"{', '.join(repr(s.name) for s in inputs)}: save .npz files with arrays named by input")
    return inputs[0]


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError) as error:
        raise OnnxcError(f"{path}: not a readable .npz file ({error})") from None


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise OnnxcError(f"{path}: not a readable .npy file ({error})") from None


def _npz_folder(folder: Path, files: list[Path], common: dict) -> CalibrationData:
    return CalibrationData(lambda: ((p.name, _load_npz(p)) for p in files),
                           description=f"{folder} ({len(files)} .npz files)",
                           fingerprint=f"npz-folder:{_file_stamp(files)}", length=len(files), **common)


def _batch_of(spec: InputSpec, batch_size: int | None, where: str) -> int:
    if spec.batch is None:
        return batch_size or 1
    if batch_size is not None and batch_size != spec.batch:
        raise OnnxcError(f"{where}: batch_size {batch_size} given but input {spec.name!r} has a fixed batch of {spec.batch}")
    return spec.batch


def _sample_axis_source(path: Path, arrays: dict[str, np.ndarray], inputs: Sequence[InputSpec],
                        batch_size: int | None, common: dict) -> CalibrationData:
    """Many samples in one file: cut along the leading axis (see the module docstring)."""
    names = {spec.name for spec in inputs}
    unknown = sorted(set(arrays) - names)
    missing = [spec.name for spec in inputs if spec.name not in arrays]
    if unknown or missing:
        raise OnnxcError(f"{path}: arrays {sorted(arrays)} do not match the model's inputs {sorted(names)}"
                         + (f" (missing {', '.join(map(repr, missing))})" if missing else "")
                         + (f" (unknown {', '.join(map(repr, unknown))})" if unknown else ""))
    stacked = {}
    for spec in inputs:
        a = arrays[spec.name]
        rank = None if spec.shape is None else len(spec.shape)
        if rank is not None and a.ndim == rank + 1:
            stacked[spec.name] = True
        elif rank is None or (a.ndim == rank and rank > 0):
            stacked[spec.name] = False
        else:
            raise OnnxcError(f"{path}: array {spec.name!r} has shape {list(a.shape)}; the model takes "
                             f"{_shape_text(spec.shape)}: expected rank {rank} (samples on the batch axis) or "
                             f"{rank + 1} (a leading sample axis)")
    if len(set(stacked.values())) > 1:
        raise OnnxcError(f"{path}: give every input either a leading sample axis or samples on the batch axis, not both")
    samples = {name: arrays[name].shape[0] for name in arrays}
    if len(set(samples.values())) != 1:
        raise OnnxcError(f"{path}: inputs hold different numbers of samples: "
                         + ", ".join(f"{k}={v}" for k, v in sorted(samples.items())))
    total = next(iter(samples.values()))
    if total == 0:
        raise OnnxcError(f"{path}: holds no samples")
    if all(stacked.values()):
        step = 1
        cut = lambda a, i: a[i]  # noqa: E731 - one feed per leading index
    else:
        batches = {_batch_of(spec, batch_size, str(path)) for spec in inputs}
        if len(batches) != 1:
            raise OnnxcError(f"{path}: the model's inputs have different fixed batch sizes {sorted(batches)}")
        step = batches.pop()
        if total % step and any(spec.batch is not None for spec in inputs):
            raise OnnxcError(f"{path}: {total} samples do not fill batches of {step} (the model's fixed batch); "
                             f"give a multiple of {step}")
        cut = lambda a, i: a[i * step:(i + 1) * step]  # noqa: E731
    count = math.ceil(total / step)
    return CalibrationData(
        lambda: ((f"{path.name}[batch {i}]", {name: cut(a, i) for name, a in arrays.items()}) for i in range(count)),
        description=f"{path} ({total} samples in {count} feeds)",
        fingerprint=f"samples:{_file_stamp([path])}", length=count, **common)


# Images ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePreprocess:
    """How an image folder becomes model input (the recipe's ``[calibration.preprocess]``).

    Each image is converted to ``color`` ("RGB", "BGR" or "GRAY"; a single-channel model input
    takes GRAY), resized (``resize``: None resizes straight to the model's H x W; an int resizes
    the shorter side to it keeping the aspect ratio; ``[h, w]`` resizes to that), center-cropped
    to the model's H x W when larger, then ``x * scale``, ``(x - mean) / std`` per channel, and
    laid out as ``layout`` ("NCHW" or "NHWC"; None: read from the model's input shape). A model
    with an integer input (uint8 images) takes the pixels as they are.
    """

    resize: int | tuple[int, int] | None = None
    layout: str | None = None
    color: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if self.layout is not None and self.layout.upper() not in ("NCHW", "NHWC"):
            raise OnnxcError(f"preprocess layout must be NCHW or NHWC, got {self.layout!r}")
        if self.color.upper() not in ("RGB", "BGR", "GRAY"):
            raise OnnxcError(f"preprocess color must be RGB, BGR or GRAY, got {self.color!r}")
        resize = self.resize
        if isinstance(resize, Sequence) and not isinstance(resize, str):
            if len(resize) != 2 or not all(isinstance(v, int) and v > 0 for v in resize):
                raise OnnxcError(f"preprocess resize must be an int or [height, width], got {list(resize)}")
            object.__setattr__(self, "resize", (int(resize[0]), int(resize[1])))
        elif resize is not None and not (isinstance(resize, int) and resize > 0):
            raise OnnxcError(f"preprocess resize must be a positive int or [height, width], got {resize!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            values = tuple(float(v) for v in (value if isinstance(value, Sequence) else (value,)))
            if not values or len(values) not in (1, 3):
                raise OnnxcError(f"preprocess {name} must be one number or one per channel, got {value!r}")
            object.__setattr__(self, name, values)
        if any(v == 0 for v in self.std):
            raise OnnxcError("preprocess std must not be zero")
        object.__setattr__(self, "scale", float(self.scale))

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> ImagePreprocess:
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise OnnxcError(f"unknown preprocess setting(s) {', '.join(unknown)} (known: {', '.join(known)})")
        return cls(**dict(settings))


def _require_pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise OnnxcError("reading calibration images needs Pillow: pip install Pillow "
                         "(or save the preprocessed inputs as .npz files)") from None
    return Image


def _image_folder(folder: Path, files: list[Path], inputs: Sequence[InputSpec], pre: ImagePreprocess,
                  batch_size: int | None, common: dict, input_shapes: Mapping[str, Sequence[int]]) -> CalibrationData:
    image_lib = _require_pillow()
    spec = _with_given_dims(_single_input(inputs, folder, "a folder of images"), input_shapes, folder)
    if spec.shape is None or len(spec.shape) != 4:
        raise OnnxcError(f"{folder}: images need a rank-4 image input; {spec.name!r} is "
                         f"{'of unknown shape' if spec.shape is None else _shape_text(spec.shape)}")
    layout = (pre.layout or _guess_layout(spec.shape, folder)).upper()
    channels, height, width = (spec.shape[1:] if layout == "NCHW" else (spec.shape[3], spec.shape[1], spec.shape[2]))
    if channels not in (1, 3):
        raise OnnxcError(f"{folder}: input {spec.name!r} has {channels} channels in {layout}; images give 1 or 3")
    if height is None or width is None:
        if not isinstance(pre.resize, tuple):
            raise OnnxcError(f"{folder}: input {spec.name!r} has a symbolic height or width; give preprocess "
                             f"resize = [height, width] or --shape {spec.name}=1x3xHxW")
        height, width = pre.resize
    color = "GRAY" if channels == 1 else pre.color.upper()
    if color == "GRAY" and channels != 1:
        raise OnnxcError(f"{folder}: GRAY images cannot fill {channels} channels")
    for name in ("mean", "std"):
        if len(getattr(pre, name)) not in (1, channels):
            raise OnnxcError(f"{folder}: preprocess {name} has {len(getattr(pre, name))} values for {channels} channels")
    step = _batch_of(spec, batch_size, str(folder))
    if spec.batch is not None and len(files) % step:
        raise OnnxcError(f"{folder}: {len(files)} images do not fill batches of {step} (the model's fixed batch)")
    count = math.ceil(len(files) / step)

    def load(path: Path) -> np.ndarray:
        try:
            with image_lib.open(path) as img:
                img = img.convert("L" if color == "GRAY" else "RGB")
                img = _resize_and_crop(img, pre.resize, height, width, image_lib, path)
                pixels = np.asarray(img)
        except OnnxcError:
            raise
        except Exception as error:  # noqa: BLE001 - Pillow raises several types for bad files
            raise OnnxcError(f"{path}: not a readable image ({error})") from None
        pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
        if color == "BGR":
            pixels = pixels[:, :, ::-1]
        if spec.dtype.kind == "f":
            x = pixels.astype(np.float32) * np.float32(pre.scale)
            x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
            pixels = x.astype(spec.dtype)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1) if layout == "NCHW" else pixels)

    def items() -> Iterator[tuple[str, Feeds]]:
        for i in range(count):
            group = files[i * step:(i + 1) * step]
            where = group[0].name if len(group) == 1 else f"{group[0].name}..{group[-1].name}"
            yield where, {spec.name: np.stack([load(p) for p in group])}

    return CalibrationData(items, description=f"{folder} ({len(files)} images)",
                           fingerprint=f"images:{_file_stamp(files)}:{pre!r}", length=count, **common)


def _with_given_dims(spec: InputSpec, input_shapes: Mapping[str, Sequence[int]], folder: Path) -> InputSpec:
    """``spec`` with its symbolic dims taken from the user's ``--shape`` for that input."""
    given = input_shapes.get(spec.name)
    if given is None:
        return spec
    if spec.shape is not None and len(given) != len(spec.shape):
        raise OnnxcError(f"{folder}: --shape {spec.name} has rank {len(given)} but the model takes "
                         f"{_shape_text(spec.shape)}")
    for axis, (have, fixed) in enumerate(zip(given, spec.shape or given)):
        if fixed is not None and have != fixed:
            raise OnnxcError(f"{folder}: --shape {spec.name} gives {have} on axis {axis} where the model fixes {fixed}")
    # The batch stays as the model declares it: it says how images are grouped into feeds.
    shape = tuple(int(d) for d in given)
    return dataclasses.replace(spec, shape=(spec.shape[0] if spec.shape else shape[0],) + shape[1:])


def _guess_layout(shape: tuple[int | None, ...], folder: Path) -> str:
    if shape[1] in (1, 3):
        return "NCHW"
    if shape[3] in (1, 3):
        return "NHWC"
    raise OnnxcError(f"{folder}: cannot tell the image layout from the input shape {_shape_text(shape)}; "
                     "give preprocess layout = NCHW or NHWC")


def _resize_and_crop(img: Any, resize: int | tuple[int, int] | None, height: int, width: int, image_lib: Any,
                     path: Path) -> Any:
    bilinear = image_lib.Resampling.BILINEAR
    if resize is None:
        return img.resize((width, height), bilinear)
    if isinstance(resize, int):
        w, h = img.size
        ratio = resize / min(w, h)
        img = img.resize((round(w * ratio), round(h * ratio)), bilinear)
    else:
        img = img.resize((resize[1], resize[0]), bilinear)
    w, h = img.size
    if w < width or h < height:
        raise OnnxcError(f"{path}: resized to {h}x{w}, smaller than the model's {height}x{width}")
    left, top = (w - width) // 2, (h - height) // 2
    return img.crop((left, top, left + width, top + height))
