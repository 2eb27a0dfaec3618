"""A model over 2 GB (external data) loads, compiles and saves within 2x its size in memory."""
import resource
import subprocess
import sys

import numpy as np
import onnx
import pytest

from onnxc.models_zoo.synthetic import large_external_model

MODEL_BYTES = 2_200_000_000


@pytest.mark.slow
def test_over_2gb_model_compiles_with_external_data_and_bounded_memory(tmp_path):
    (tmp_path / "in").mkdir()
    source = large_external_model(tmp_path / "in" / "big.onnx", MODEL_BYTES)
    out = tmp_path / "out" / "big.opt.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "onnxc", "compile", str(source), "-o", str(out), "--no-progress"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    peak_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    assert peak_rss < 2 * MODEL_BYTES, f"peak RSS {peak_rss / 1e9:.2f} GB for a {MODEL_BYTES / 1e9:.1f} GB model"

    data = out.with_name(out.name + ".data")
    assert data.stat().st_size >= MODEL_BYTES - 16
    assert out.stat().st_size < 1_000_000
    proto = onnx.load(str(out), load_external_data=False)
    assert [n.op_type for n in proto.graph.node] == ["Add"] * 9, "the Identity is removed, every Add kept"
    onnx.checker.check_model(str(out))
    # The weights survived: each tensor still holds its own value at both ends.
    raw = np.memmap(data, dtype=np.float32, mode="r")
    for tensor in proto.graph.initializer:
        info = {e.key: int(e.value) for e in tensor.external_data if e.key in ("offset", "length")}
        start, count = info["offset"] // 4, info["length"] // 4
        index = int(tensor.name[1:])
        assert raw[start] == raw[start + count - 1] == index + 1
