"""Calibration for the quantize pass: the data from the Context, histograms through the cache,
and activation parameters per scale group.

Histograms are of ``|x|`` (min and max are kept beside them), so one collection serves every
method and both signednesses; see :func:`onnxc.passes.quantize.params.calibrated_range`.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import onnx_ir as ir

from onnxc.context import Context
from onnxc.passes.quantize.params import QParams, calibrated_range, qparams_from_range
from onnxc.progress import progress_bar

logger = logging.getLogger(__name__)

BINS = 2048


def open_data(model: ir.Model, context: Context, limit: int | None):
    """The Context's calibration data for ``model``; an OnnxcError saying to pass ``--calib-data``
    (or ``--calib-random``) when there is none."""
    return context.calibration(model, limit)


def statistics(model: ir.Model, tensors: Sequence[str], data, context: Context) -> dict:
    """Histograms of ``tensors`` over ``data``, read from and written to the Context's cache."""
    from onnxc.calibration import collect_statistics, load_statistics, save_statistics, statistics_key

    names = list(dict.fromkeys(tensors))
    cache = context.calibration_cache
    key = None
    if cache is not None:
        key = statistics_key(model, names, data.fingerprint, bins=BINS, symmetric=True)
        cached = load_statistics(cache, key)
        if cached is not None and all(name in cached for name in names):
            logger.info("quantize: calibration statistics of %d tensors read from %s", len(names), cache)
            return cached
    stats = collect_statistics(model, names, data, bins=BINS, symmetric=True, progress=context.progress)
    if cache is not None:
        save_statistics(cache, stats, key=key)
    return stats


def activation_params(stats: Mapping, tensors: Sequence[str], method: str, *, percentile: float, dtype: str,
                      symmetric: bool, progress: bool | None = None
                      ) -> tuple[dict[str, QParams], dict[str, tuple[float, float]]]:
    """Parameters and calibrated ranges of each tensor, with a progress bar over the threshold searches."""
    params: dict[str, QParams] = {}
    ranges: dict[str, tuple[float, float]] = {}
    with progress_bar(total=len(tensors), desc=f"thresholds ({method})", enabled=progress, unit="tensor") as bar:
        for name in tensors:
            lo, hi = calibrated_range(stats[name].state(), method, percentile=percentile, dtype=dtype,
                                      symmetric=symmetric)
            ranges[name] = (lo, hi)
            params[name] = qparams_from_range(lo, hi, dtype, symmetric)
            bar.update()
    return params, ranges
