"""What a pipeline run shares between passes: target, data, settings, progress."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxc.targets import DEFAULT_TARGET, get_target

if TYPE_CHECKING:
    import onnx_ir as ir

    from onnxc.calibration.data import CalibrationData

Feeds = dict[str, np.ndarray]


@dataclasses.dataclass
class Context:
    """State shared by the passes of one pipeline run.

    Attributes:
        target: the name of the target passes compile for (``onnxruntime``, ``tensorrt``, ...), a
            key of the target registry (:mod:`onnxc.targets`); an unknown name is refused.
        input_shapes: concrete shapes for inputs with symbolic dims, by input name.
        calibration_data: where calibration feeds come from (a path, a callable spec, ...).
        calibration_cache: file where calibration statistics are stored and reused.
        calibration_allow_random: calibrate on generated random data when no data is given
            (explicit opt-in: statistics from random data rarely match real inputs).
        calibration_options: how to read the data: ``preprocess`` (images), ``batch_size``, ``limit``
            (the recipe's ``[calibration]`` table).
        verification_inputs: feeds used to check each pass numerically; generated when unset.
        progress: whether long work shows progress bars (None: only on a terminal).
        seed: seed for anything random (generated inputs), so runs are reproducible.
        check_speed: when a pass promises speed, time the result against the input and keep
            the input where it is faster (:mod:`onnxc.speed`).
    """

    target: str = DEFAULT_TARGET
    input_shapes: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    calibration_data: Any = None
    calibration_cache: Path | None = None
    calibration_allow_random: bool = False
    calibration_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    verification_inputs: list[Feeds] | None = None
    progress: bool | None = False
    seed: int = 0
    check_speed: bool = True
    _warned_random: bool = dataclasses.field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        get_target(self.target)  # an unknown name fails here, not in the first pass that reads it

    def calibration(self, model: ir.Model, limit: int | None = None) -> CalibrationData:
        """The calibration feeds for ``model``: the one way a pass opens them, so every pass reads
        the same data with the recipe's settings (preprocess, batch size, limit) and ``--shape``.

        ``limit`` caps the feeds further (the smaller of it and the recipe's wins). Raises an
        OnnxcError naming ``--calib-data`` / ``--calib-random`` when there is no data.
        """
        from onnxc.calibration import open_calibration_data

        options = self.calibration_options
        limits = [n for n in (limit, options.get("limit")) if n is not None]
        data = open_calibration_data(
            self.calibration_data, model, allow_random=self.calibration_allow_random,
            limit=min(limits) if limits else None, seed=self.seed, preprocess=options.get("preprocess"),
            batch_size=options.get("batch_size"), input_shapes=self.input_shapes,
            warn_random=not self._warned_random,
        )
        # Every calibrated pass and the verifier open the data: say once that it is random.
        self._warned_random |= self.calibration_data in (None, "random") and self.calibration_allow_random
        return data
