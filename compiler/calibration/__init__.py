"""Calibration: data readers, the activation engine and its accumulators, thresholds (native
extension + numpy reference).

* :mod:`onnxc.calibration.data` — :func:`open_calibration_data`: feeds from .npz/.npy files and
  folders, images, Python callables, ORT readers, or (on request) seeded random data.
* :mod:`onnxc.calibration.collect` — the activation engine: :func:`collect_activations` (ORT with
  tensors exposed, streamed into any accumulators, in memory-bounded chunks); :func:`collect_statistics`
  (histograms through it), :func:`merge_statistics`, :func:`compute_thresholds`.
* :mod:`onnxc.calibration.accumulators` — the :class:`Accumulator` protocol the engine feeds:
  ``update``, ``merge`` (of an accumulator or a pickled ``state()``), ``state``, ``empty``.
* :mod:`onnxc.calibration.moments` — :class:`ChannelMoments`: per-channel count, mean, variance,
  min and max in float64.
* :mod:`onnxc.calibration.gram` — :class:`GramAccumulator`: ``XᵀX``, column sums and row count of
  a layer's input rows in float64, per group; :func:`collect_grams`: many of them in as few passes
  over the data as a memory budget allows.
* :mod:`onnxc.calibration.rows` — :func:`rows_for`: a MatMul/Gemm/Conv input as the rows its
  weight multiplies (im2col patches for convs), in bounded blocks.
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
from onnxc.calibration.accumulators import Accumulator
from onnxc.calibration.cache import cached_statistics, load_statistics, save_statistics, statistics_key
from onnxc.calibration.collect import collect_activations, collect_statistics, compute_thresholds, merge_statistics
from onnxc.calibration.data import CalibrationData, ImagePreprocess, open_calibration_data
from onnxc.calibration.gram import GramAccumulator, GramRequest, GramState, collect_grams
from onnxc.calibration.histogram import HistogramAccumulator, set_max_threads
from onnxc.calibration.moments import ChannelMoments, MomentsState
from onnxc.calibration.reference import ReferenceAccumulator
from onnxc.calibration.rows import ConvRows, MatMulRows, rows_for
from onnxc.calibration.state import HistogramState
from onnxc.calibration.thresholds import METHODS, threshold

__all__ = ["METHODS", "Accumulator", "CalibrationData", "ChannelMoments", "ConvRows", "GramAccumulator", "GramRequest", "GramState",
           "HistogramAccumulator", "HistogramState", "ImagePreprocess", "MatMulRows", "MomentsState",
           "ReferenceAccumulator", "cached_statistics", "collect_activations", "collect_grams", "collect_statistics", "compute_thresholds",
           "load_statistics", "merge_statistics", "open_calibration_data", "rows_for", "save_statistics",
           "set_max_threads", "statistics_key", "threshold"]
