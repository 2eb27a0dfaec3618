"""Running an in-memory model on ONNX Runtime (CPU).

Small models are handed to ORT as serialized bytes. Large ones are written to a temporary
folder with external data and ORT reads the files, so the whole model is never serialized into
one protobuf in memory.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from onnxc.context import Feeds
from onnxc.errors import InvalidModelError, first_line
from onnxc.io import weight_bytes

IN_MEMORY_LIMIT_BYTES = 512 * 1024 * 1024


class OrtRunner:
    """An ORT CPU session over an ir.Model, with its inputs and outputs described."""

    def __init__(
        self,
        model: ir.Model | str | os.PathLike,
        *,
        optimization: str = "all",
        threads: int | None = None,
        label: str = "model",
        config: Mapping[str, str] | None = None,
    ):
        """``config``: ORT session config entries (``SessionOptions.add_session_config_entry``)."""
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        for key, value in (config or {}).items():
            options.add_session_config_entry(key, value)
        self._tmp: str | None = None
        try:
            if isinstance(model, (str, os.PathLike)):
                self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
            elif weight_bytes(model) <= IN_MEMORY_LIMIT_BYTES:
                data = ir.to_proto(model).SerializeToString()
                self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
            else:
                self._tmp = tempfile.mkdtemp(prefix="onnxc-ort-")
                path = Path(self._tmp) / "model.onnx"
                ir.save(model, path, external_data="model.onnx.data")
                self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - ORT raises several unrelated types
            self.close()
            raise InvalidModelError(f"ONNX Runtime cannot load the {label}: {_ort_message(error)}") from None
        self.label = label
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Feeds, output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(output_names) if output_names is not None else self.output_names
        try:
            values = self.session.run(names, {k: v for k, v in feeds.items() if k in self.input_names})
        except Exception as error:  # noqa: BLE001
            raise InvalidModelError(f"ONNX Runtime failed to run the {self.label}: {_ort_message(error)}") from None
        return dict(zip(names, values))

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> "OrtRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _ort_message(error: BaseException) -> str:
    text = first_line(error)
    # ORT prefixes messages with "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : "; keep the part a user reads.
    parts = text.split(" : ")
    return parts[-1] if len(parts) >= 4 else text
