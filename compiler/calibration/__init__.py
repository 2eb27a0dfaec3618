"""Calibration: data readers, statistics collection, thresholds (native extension + numpy reference).

* :mod:`onnxc.calibration.histogram` — :class:`HistogramAccumulator`, streaming min/max and
  histograms whose results do not depend on batch order, batch size or thread count.
* :mod:`onnxc.calibration.state` — :class:`HistogramState`, the snapshot both accumulators share,
  with its array-dict and bytes forms for calibration caches and cross-process merges.
* :mod:`onnxc.calibration.thresholds` — :func:`threshold`: entropy, percentile, MSE, minmax.
* :mod:`onnxc.calibration.reference` — the pure-numpy reference of all of the above.
"""
from onnxc.calibration.histogram import HistogramAccumulator, set_max_threads
from onnxc.calibration.reference import ReferenceAccumulator
from onnxc.calibration.state import HistogramState
from onnxc.calibration.thresholds import METHODS, threshold

__all__ = ["METHODS", "HistogramAccumulator", "HistogramState", "ReferenceAccumulator", "set_max_threads",
           "threshold"]
