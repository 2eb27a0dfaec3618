"""Calibration: data readers, statistics collection, thresholds (native extension + numpy reference)."""
