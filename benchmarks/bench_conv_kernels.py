"""ORT CPU: one convolution's integer kernel (QLinearConv) against its float kernel, by shape.

    python benchmarks/bench_conv_kernels.py                 # the stems and layers behind profiles.ONNXRUNTIME
    python benchmarks/bench_conv_kernels.py --threads 2

The onnxruntime profile keeps a dense Conv float when it reads few channels through a short
reduction (``narrow_conv``: an RGB stem). This prints the numbers that rule rests on. For each
shape, a one-Conv model (+ Relu) is quantized by onnxc (``quantize`` with the estimate off, so
the Conv always becomes a QLinearConv) and both models run under ORT's profiler; the figure is the
Conv node's own kernel time (10th percentile over the calls after warm-up), so the Q/DQ at the
model's borders, which a Conv inside an int8 region does not pay, are left out. Speed-up above 1:
int8 is faster.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import onnxc
from onnxc.context import Context
from onnxc.report import table
from onnxc.targets import get_profile

# (input channels, output channels, kernel, input side, stride): RGB stems of MobileNet/ResNet/YOLOv5,
# few-channel convs, and ordinary layers for contrast.
SHAPES = [(3, 16, 3, 224, 2), (3, 32, 3, 224, 2), (4, 16, 3, 224, 2), (6, 16, 3, 112, 1), (3, 32, 5, 224, 2),
          (5, 32, 5, 112, 1), (3, 32, 6, 320, 2), (3, 64, 7, 224, 2), (6, 32, 5, 112, 1), (7, 32, 3, 112, 1),
          (8, 16, 3, 112, 1), (16, 32, 1, 112, 1), (32, 96, 1, 56, 1)]


def conv_model(cin: int, cout: int, k: int, side: int, stride: int) -> ir.Model:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[k // 2] * 4, strides=[stride] * 2),
             helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, side, side])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(rng.normal(0, 0.2, (cout, cin, k, k)).astype(np.float32), "w"),
                               numpy_helper.from_array(rng.normal(0, 0.1, cout).astype(np.float32), "b")])
    return ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def conv_kernel_seconds(model: ir.Model, feed: dict, threads: int, calls: int, folder: Path) -> float:
    """The Conv / QLinearConv node's kernel time per call under ORT's profiler."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / "profile")
    options.log_severity_level = 3
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), options, providers=["CPUExecutionProvider"])
    for _ in range(calls):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    times = [e["dur"] for e in events if e.get("cat") == "Node" and e["args"].get("op_name") in ("Conv", "QLinearConv")]
    return float(np.percentile(times[calls // 4:], 10)) * 1e-6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (default 1)")
    parser.add_argument("--calls", type=int, default=200, help="profiled calls per model (default 200)")
    args = parser.parse_args()
    channels, reduction = get_profile("onnxruntime").narrow_conv
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for cin, cout, k, side, stride in SHAPES:
            feed = {"x": np.random.default_rng(1).normal(size=(1, cin, side, side)).astype(np.float32)}
            float_model = conv_model(cin, cout, k, side, stride)
            int8_model = conv_model(cin, cout, k, side, stride)
            onnxc.compile(int8_model, "quantize(never_slower=false,guard=false,float_head=false)",
                          context=Context(calibration_data=[feed], check_speed=False))
            seconds = {label: conv_kernel_seconds(m, feed, args.threads, args.calls, Path(folder))
                       for label, m in (("float", float_model), ("int8", int8_model))}
            narrow = cin < channels and cin * k * k < reduction
            rows.append([f"{cin}->{cout} k{k} s{stride} @{side}", str(cin * k * k), f"{seconds['float'] * 1e6:.0f} us",
                         f"{seconds['int8'] * 1e6:.0f} us", f"{seconds['float'] / seconds['int8']:.2f}x",
                         "float" if narrow else "int8"])
    print(f"ORT {ort.__version__} CPU, {args.threads} thread(s); narrow_conv = {channels} channels, reduction {reduction}")
    print(table(["conv", "C_in*k*k", "float kernel", "int8 kernel", "int8 speed-up", "profile keeps"], rows))


if __name__ == "__main__":
    main()
