"""An immutable snapshot of a histogram accumulator, and its two serial forms.

Both accumulators (native :class:`~onnxc.calibration.histogram.HistogramAccumulator` and the
numpy :class:`~onnxc.calibration.reference.ReferenceAccumulator`) describe their data with the
same :class:`HistogramState`, so snapshots compare bit for bit and thresholds read either.

Fields
------
``bins``, ``symmetric`` (histogram of ``|x|`` over ``[0, amax]`` when true, of ``x`` otherwise),
``range`` (``None`` in power-of-two mode, ``(lo, hi)`` in fixed mode), ``exponent`` / ``offset``
(power-of-two placement: bin ``k`` holds values with ``floor(x * 2**-exponent) == offset + k``),
tallies ``count`` (finite values), ``nan_count``, ``posinf_count``, ``neginf_count``,
``below`` / ``above`` (fixed mode: finite values outside the range, clamped into the edge bins),
``min`` / ``max`` of the finite values (``inf`` / ``-inf`` while empty) and ``counts`` (int64).

Serial forms
------------
* :meth:`HistogramState.to_arrays` / :meth:`from_arrays`: a ``dict[str, numpy.ndarray]`` (0-d
  arrays for scalars), ready for ``numpy.savez`` or any calibration cache.
* :meth:`HistogramState.to_bytes` / :meth:`from_bytes`: a compact deterministic byte string
  (magic, a sorted-key JSON header, then the counts as little-endian int64), so the same data
  always gives the same bytes and the bytes can be compared, hashed or shipped between processes.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

import numpy as np

FORMAT_VERSION = 1
MIN_EXPONENT = -127
MAX_EXPONENT = 128
# Signed histograms keep |x * 2**-exponent| < 2**31 (see compiler/native/calibration.hpp).
SIGNED_INDEX_BITS = 30
MAX_BINS = 1 << 24

_MAGIC = b"ONNXCHST"
_SCALARS = ("bins", "symmetric", "fixed", "lo", "hi", "exponent", "offset", "count", "nan", "posinf",
            "neginf", "below", "above", "min", "max")


@dataclass(frozen=True, eq=False)
class HistogramState:
    """What an accumulator knows; see the module docstring for the fields."""

    bins: int
    symmetric: bool
    range: tuple[float, float] | None
    exponent: int
    offset: int
    count: int
    nan_count: int
    posinf_count: int
    neginf_count: int
    below: int
    above: int
    min: float
    max: float
    counts: np.ndarray = field(repr=False)

    @property
    def fixed(self) -> bool:
        return self.range is not None

    @property
    def empty(self) -> bool:
        return self.count == 0

    @property
    def minmax(self) -> tuple[float, float] | None:
        """``(min, max)`` of the finite values seen, or ``None`` before any."""
        return None if self.empty else (self.min, self.max)

    @property
    def amax(self) -> float:
        """Largest finite ``|x|`` seen (0.0 before any)."""
        return 0.0 if self.empty else max(abs(self.min), abs(self.max))

    @property
    def bin_width(self) -> float:
        if self.range is not None:
            lo, hi = self.range
            return (hi - lo) / self.bins
        return math.ldexp(1.0, self.exponent)

    @property
    def bin_edges(self) -> np.ndarray:
        """``bins + 1`` edges (float64). Binning itself happens in float32; see the module docs."""
        if self.range is not None:
            lo, hi = self.range
            return lo + np.arange(self.bins + 1, dtype=np.float64) * self.bin_width
        return (self.offset + np.arange(self.bins + 1, dtype=np.float64)) * self.bin_width

    def to_arrays(self) -> dict[str, np.ndarray]:
        lo, hi = self.range if self.range is not None else (0.0, 0.0)
        return {
            "format": np.asarray(FORMAT_VERSION, dtype=np.int64),
            "bins": np.asarray(self.bins, dtype=np.int64),
            "symmetric": np.asarray(self.symmetric, dtype=np.bool_),
            "fixed": np.asarray(self.fixed, dtype=np.bool_),
            "lo": np.asarray(lo, dtype=np.float64),
            "hi": np.asarray(hi, dtype=np.float64),
            "exponent": np.asarray(self.exponent, dtype=np.int64),
            "offset": np.asarray(self.offset, dtype=np.int64),
            "count": np.asarray(self.count, dtype=np.int64),
            "nan": np.asarray(self.nan_count, dtype=np.int64),
            "posinf": np.asarray(self.posinf_count, dtype=np.int64),
            "neginf": np.asarray(self.neginf_count, dtype=np.int64),
            "below": np.asarray(self.below, dtype=np.int64),
            "above": np.asarray(self.above, dtype=np.int64),
            "min": np.asarray(self.min, dtype=np.float32),
            "max": np.asarray(self.max, dtype=np.float32),
            "counts": np.array(self.counts, dtype=np.int64, copy=True),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> HistogramState:
        """Rebuild from :meth:`to_arrays` output; fields are type-checked, not trusted for consistency
        (accumulators' ``from_state`` validate that)."""
        missing = [k for k in ("format", *_SCALARS, "counts") if k not in arrays]
        if missing:
            raise ValueError(f"histogram state lacks {', '.join(missing)}")
        version = int(arrays["format"])
        if version != FORMAT_VERSION:
            raise ValueError(f"histogram state format {version} is not supported (expected {FORMAT_VERSION})")
        counts = np.asarray(arrays["counts"])
        if counts.ndim != 1 or counts.dtype.kind not in "iu":
            raise ValueError("histogram counts must be a 1-D integer array")
        fixed = bool(arrays["fixed"])
        return cls(
            bins=int(arrays["bins"]),
            symmetric=bool(arrays["symmetric"]),
            range=(float(arrays["lo"]), float(arrays["hi"])) if fixed else None,
            exponent=int(arrays["exponent"]),
            offset=int(arrays["offset"]),
            count=int(arrays["count"]),
            nan_count=int(arrays["nan"]),
            posinf_count=int(arrays["posinf"]),
            neginf_count=int(arrays["neginf"]),
            below=int(arrays["below"]),
            above=int(arrays["above"]),
            min=float(np.float32(arrays["min"])),
            max=float(np.float32(arrays["max"])),
            counts=counts.astype(np.int64, copy=True),
        )

    def to_bytes(self) -> bytes:
        arrays = self.to_arrays()
        header = {k: arrays[k].item() for k in ("format", *_SCALARS)}
        # float.hex keeps every float exact and spells inf without JSON extensions.
        for k in ("lo", "hi", "min", "max"):
            header[k] = float(header[k]).hex()
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii")
        return _MAGIC + struct.pack("<I", len(text)) + text + arrays["counts"].astype("<i8").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> HistogramState:
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4:
            raise ValueError("not a serialized onnxc histogram")
        (size,) = struct.unpack_from("<I", data, len(_MAGIC))
        start = len(_MAGIC) + 4
        try:
            header = json.loads(data[start:start + size].decode("ascii"))
            for k in ("lo", "hi", "min", "max"):
                header[k] = float.fromhex(header[k])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"corrupt histogram header: {exc}") from exc
        body = data[start + size:]
        if len(body) % 8:
            raise ValueError("corrupt histogram counts")
        arrays = {k: np.asarray(v) for k, v in header.items()}
        arrays["counts"] = np.frombuffer(body, dtype="<i8").astype(np.int64)
        return cls.from_arrays(arrays)

    def same_as(self, other: HistogramState) -> bool:
        """Bit-identical data and configuration."""
        return self.to_bytes() == other.to_bytes()
