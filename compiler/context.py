"""What a pipeline run shares between passes: target, data, statistics, progress."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

Feeds = dict[str, np.ndarray]


@dataclasses.dataclass
class Context:
    """State shared by the passes of one pipeline run.

    Attributes:
        target: the backend profile later passes lower for (``onnxruntime``, ``tensorrt``, ...).
        input_shapes: concrete shapes for inputs with symbolic dims, by input name.
        calibration_data: where calibration feeds come from (a path, a callable spec, ...).
        calibration_cache: file where calibration statistics are stored and reused.
        calibration_allow_random: calibrate on generated random data when no data is given
            (explicit opt-in: statistics from random data rarely match real inputs).
        calibration_options: how to read the data: ``preprocess`` (images), ``batch_size``, ``limit``.
        verification_inputs: feeds used to check each pass numerically; generated when unset.
        statistics: calibration statistics computed so far, keyed by tensor name.
        progress: whether long work shows progress bars (None: only on a terminal).
        seed: seed for anything random (generated inputs), so runs are reproducible.
    """

    target: str = "onnxruntime"
    input_shapes: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    calibration_data: Any = None
    calibration_cache: Path | None = None
    calibration_allow_random: bool = False
    calibration_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    verification_inputs: list[Feeds] | None = None
    statistics: dict[str, Any] = dataclasses.field(default_factory=dict)
    progress: bool | None = False
    seed: int = 0
