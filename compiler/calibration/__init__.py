"""Calibration: data readers, statistics collection, thresholds (native extension + numpy reference).

* :mod:`onnxc.calibration.data` — :func:`open_calibration_data`: feeds from .npz/.npy files and
  folders, images, Python callables, ORT readers, or (on request) seeded random data.
* :mod:`onnxc.calibration.collect` — :func:`collect_statistics` (ORT with tensors exposed,
  streamed into accumulators, in memory-bounded chunks), :func:`merge_statistics`,
  :func:`compute_thresholds`.
* :mod:`onnxc.calibration.cache` — :func:`cached_statistics` (load or collect and save), and
  :func:`save_statistics` / :func:`load_statistics` under a :func:`statistics_key`, so stale
  caches are detected.
* :mod:`onnxc.calibration.histogram` — :class:`HistogramAccumulator`, streaming min/max and
  histograms whose results do not depend on batch order, batch size or thread count.
* :mod:`onnxc.calibration.state` — :class:`HistogramState`, the snapshot both accumulators share,
  with its array-dict and bytes forms for calibration caches and cross-process merges.
* :mod:`onnxc.calibration.thresholds` — :func:`threshold`: entropy, percentile, MSE, minmax.
* :mod:`onnxc.calibration.reference` — the pure-numpy reference of all of the above.
"""
from onnxc.calibration.cache import cached_statistics, load_statistics, save_statistics, statistics_key
from onnxc.calibration.collect import collect_statistics, compute_thresholds, merge_statistics
from onnxc.calibration.data import CalibrationData, ImagePreprocess, open_calibration_data
from onnxc.calibration.histogram import HistogramAccumulator, set_max_threads
from onnxc.calibration.reference import ReferenceAccumulator
from onnxc.calibration.state import HistogramState
from onnxc.calibration.thresholds import METHODS, threshold

__all__ = ["METHODS", "CalibrationData", "HistogramAccumulator", "HistogramState", "ImagePreprocess",
           "ReferenceAccumulator", "cached_statistics", "collect_statistics", "compute_thresholds", "load_statistics", "merge_statistics",
           "open_calibration_data", "save_statistics", "set_max_threads", "statistics_key", "threshold"]
