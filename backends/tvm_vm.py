"""Running a TVM build: the ``.so`` on Relax's VirtualMachine, fed by input name.

This module imports only numpy and tvm (never onnxc): every build folder carries a copy as
``run_model.py``, which runs the aarch64 build on an ARM board or under qemu with a bare Python
that has the aarch64 tvm wheel:

    python3 BUILD_DIR/run_model.py BUILD_DIR inputs.npz outputs.npz
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

LIBRARY = "model.so"
SIGNATURE = "io.json"
RUN_SCRIPT = "run_model.py"


class TvmRunner:
    """A TVM build loaded from its folder: ``run`` takes and returns numpy arrays by name.

    Only TVM's runtime library is loaded (through tvm-ffi), not the compiler behind ``import tvm``:
    under qemu that halves the start-up, and a deployment needs no more.
    """

    def __init__(self, directory: str | Path):
        import tvm_ffi

        _load_tvm_runtime()
        directory = Path(directory)
        self.signature = json.loads((directory / SIGNATURE).read_text())
        self.input_names = [spec["name"] for spec in self.signature["inputs"]]
        self.output_names = [spec["name"] for spec in self.signature["outputs"]]
        self._from_dlpack = tvm_ffi.from_dlpack
        self._vm = tvm_ffi.load_module(str(directory / LIBRARY))["vm_load_executable"]()
        self._vm["vm_initialization"](*_CPU, _POOLED_ALLOCATOR, *_CPU, _POOLED_ALLOCATOR)
        self._main = self._vm["main"]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [self._from_dlpack(_aligned(np.asarray(feeds[spec["name"]], dtype=spec["dtype"])))
                for spec in self.signature["inputs"]]
        result = self._main(*args)
        values = [result] if len(self.output_names) == 1 else list(result)
        return {name: np.from_dlpack(value).copy() for name, value in zip(self.output_names, values)}

    def kernel_times(self, feeds: dict[str, np.ndarray], runs: int = 10) -> dict[str, float]:
        """Seconds per run spent in each function the VM calls (the build's kernels), largest first:
        which layers a tuning left slow."""
        import statistics
        import time

        spans: dict[str, list[float]] = {}
        started: dict[str, float] = {}

        def instrument(func, symbol, before_run, ret_value, *args):
            now = time.perf_counter()
            if before_run:
                started[symbol] = now
            else:
                spans.setdefault(symbol, []).append(now - started[symbol])

        self._vm["set_instrument"](instrument)
        try:
            for _ in range(runs):
                self.run(feeds)
        finally:
            self._vm["set_instrument"](None)
        per_run = {symbol: statistics.median(times) * len(times) / runs for symbol, times in spans.items()}
        return dict(sorted(per_run.items(), key=lambda item: -item[1]))

    def close(self) -> None:
        self._main = self._vm = None


# DLPack's CPU device (kDLCPU = 1, device 0) and the VM's pooled allocator, as relax.VirtualMachine passes them.
_CPU = (1, 0)
_POOLED_ALLOCATOR = 2
_ALIGNMENT = 64


def _aligned(array: np.ndarray) -> np.ndarray:
    """A copy of ``array`` starting on a 64-byte boundary: tuned kernels use aligned vector loads
    (TVM's own tensors are allocated so; numpy only promises 16 bytes)."""
    buffer = np.empty(array.nbytes + _ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % _ALIGNMENT
    aligned = buffer[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    aligned[...] = array
    return aligned


def _load_tvm_runtime() -> None:
    """Make TVM's runtime (the Relax VM and its builtins) available to tvm-ffi, from the tvm wheel."""
    import ctypes
    import importlib.util

    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("TVM is not installed: pip install apache-tvm")
    library = Path(next(iter(spec.submodule_search_locations))) / "lib" / "libtvm_runtime.so"
    ctypes.CDLL(str(library), ctypes.RTLD_GLOBAL)


def main(argv: list[str]) -> int:
    directory, inputs, outputs = argv
    with np.load(inputs) as data:
        feeds = {name: data[name] for name in data.files}
    np.savez(outputs, **TvmRunner(directory).run(feeds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
