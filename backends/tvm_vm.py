"""Running a TVM build: the ``.so`` on Relax's VirtualMachine, fed by input name.

This module imports only numpy and tvm (never onnxc), so the same file runs the aarch64 build
on an ARM board or under qemu with a bare Python that has the aarch64 tvm wheel:

    python3 tvm_vm.py BUILD_DIR inputs.npz outputs.npz
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

LIBRARY = "model.so"
SIGNATURE = "io.json"


class TvmRunner:
    """A TVM build loaded from its folder: ``run`` takes and returns numpy arrays by name."""

    def __init__(self, directory: str | Path):
        import tvm
        from tvm import relax

        directory = Path(directory)
        self.signature = json.loads((directory / SIGNATURE).read_text())
        self.input_names = [spec["name"] for spec in self.signature["inputs"]]
        self.output_names = [spec["name"] for spec in self.signature["outputs"]]
        self._tvm = tvm
        self._vm = relax.VirtualMachine(tvm.runtime.load_module(str(directory / LIBRARY)), tvm.cpu())
        self._main = self._vm["main"]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [self._tvm.runtime.tensor(np.ascontiguousarray(feeds[spec["name"]], dtype=spec["dtype"]))
                for spec in self.signature["inputs"]]
        result = self._main(*args)
        values = [result] if len(self.output_names) == 1 else list(result)
        return {name: value.numpy() for name, value in zip(self.output_names, values)}

    def close(self) -> None:
        self._main = self._vm = None


def main(argv: list[str]) -> int:
    directory, inputs, outputs = argv
    with np.load(inputs) as data:
        feeds = {name: data[name] for name in data.files}
    np.savez(outputs, **TvmRunner(directory).run(feeds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
