"""Whole calibration against plain inference and against ONNX Runtime's quantize_static, in one run.

    python benchmarks/bench_calibration.py [--models resnet18,mobilenetv2,resnet50] [--inputs 32] [--rounds 3]

On each zoo CNN at batch 1 over N seeded inputs, times:

* plain FP32 inference on ORT over the N inputs (session creation included, as a user running
  the model pays it too; the steady-state runs alone are printed beside it), with ORT's default
  spinning intra-op threads and without spinning; ratios are taken against the faster of the two;
* onnxc calibration: statistics of every Conv/Gemm input activation over the same inputs
  (:func:`collect_statistics`, session creation included) plus entropy thresholds for all of them
  (:func:`compute_thresholds`); target <= 1.5x plain inference;
* the same onnxc calibration of the tensors ORT calibrates (inputs and outputs of Conv/Gemm);
* ``onnxruntime.quantization.quantize_static`` with ``CalibrationMethod.Entropy`` (its defaults:
  128 bins, where onnxc uses 2048) quantizing Conv/Gemm on the same inputs; target: onnxc >= 5x
  faster on the same tensors (ORT's set, whose Conv outputs sit before BatchNormalization, so
  exposing them keeps ORT from fusing the two in either tool). The ratio against onnxc's own
  calibration of what it quantizes (the Conv/Gemm inputs) is printed beside it. ORT's
  calibration stage alone (``create_calibrator`` + ``collect_data`` + ``compute_data``) is timed
  too, and with ``--ort-2048`` at onnxc's 2048 bins.

Contenders run interleaved within each round, in an order rotated every round; each reports the
median of its repeats in a round and the minimum of those medians over the rounds.

The bound: both calibrations run the model over every input, so neither can take less than the
inference, and ORT quantize_static / onnxc can never exceed quantize_static / inference; the run
prints that ceiling beside the ratio.

``--against REV`` also times onnxc's calibration job (load, statistics of every Conv/Gemm/MatMul
input over 32 seeded inputs, entropy thresholds) with the current code and with git commit REV's
(benchmarks/_baseline.py), each in a fresh process, interleaved over the rounds, best round kept.

Memory: in a fresh process per count, collection over 10 and over 1000 inputs of a smaller model
(``--memory-model``, default resnet18 at 64x64) streamed from a generator, reporting the peak RSS
growth during collection (sampled) and the Python-side tracemalloc peak: both stay flat as inputs grow.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
import tracemalloc
from collections.abc import Callable, Iterator

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import psutil

import _baseline
from _memory import RssPeak
from _optimize_once import best_of_rounds

from onnxc import models_zoo
from onnxc.calibration import collect_statistics, compute_thresholds
from onnxc.timing import min_of_medians


def conv_gemm_tensors(model: ir.Model, outputs: bool) -> list[str]:
    """Float activations read (and, with ``outputs``, written) by Conv/Gemm nodes, in graph order."""
    names: dict[str, None] = {}
    for node in model.graph:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        values = [node.inputs[0]] + (list(node.outputs) if outputs else [])
        for value in values:
            if value is not None and not (value.is_initializer() and not value.is_graph_input()):
                names[value.name] = None
    return list(names)


def inputs_for(model: ir.Model, count: int, seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
    value = model.graph.inputs[0]
    shape = [d if isinstance(d, int) else 1 for d in value.shape]
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield {value.name: rng.standard_normal(shape).astype(np.float32)}


def plain_inference(model_bytes: bytes, feeds: list[dict[str, np.ndarray]], spinning: bool = True) -> Callable[[], object]:
    options = ort.SessionOptions()
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")

    def run() -> None:
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        for feed in feeds:
            session.run(None, feed)
    return run


def steady_inference(model_bytes: bytes, feeds: list[dict[str, np.ndarray]], spinning: bool = True) -> Callable[[], object]:
    options = ort.SessionOptions()
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    session.run(None, feeds[0])

    def run() -> None:
        for feed in feeds:
            session.run(None, feed)
    return run


def onnxc_calibration(model: ir.Model, tensors: list[str], feeds: list[dict[str, np.ndarray]]) -> Callable[[], object]:
    def run() -> dict:
        stats = collect_statistics(model, tensors, feeds, progress=False)
        return compute_thresholds(stats, "entropy", progress=False)
    return run


class ListReader:
    """An ORT CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def ort_quantize_static(path: str, folder: str, feeds: list[dict[str, np.ndarray]]) -> Callable[[], object]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    def run() -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints progress on every call
            quantize_static(path, os.path.join(folder, "quantized.onnx"), ListReader(feeds),
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv", "Gemm"],
                            calibrate_method=CalibrationMethod.Entropy)
    return run


def ort_calibration_only(path: str, folder: str, feeds: list[dict[str, np.ndarray]], bins: int) -> Callable[[], object]:
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    def run() -> object:
        calibrator = create_calibrator(path, ["Conv", "Gemm"], augmented_model_path=os.path.join(folder, "aug.onnx"),
                                       calibrate_method=CalibrationMethod.Entropy, extra_options={"num_bins": bins})
        with contextlib.redirect_stdout(io.StringIO()):
            calibrator.collect_data(ListReader(feeds))
            return calibrator.compute_data()
    return run


def memory_child(model_name: str, image: int, count: int) -> dict[str, float]:
    """Runs in its own process: peak RSS growth and tracemalloc peak while collecting ``count`` inputs."""
    model = ir.serde.deserialize_model(models_zoo.build(model_name, **({"image": image} if image else {})))
    tensors = conv_gemm_tensors(model, outputs=False)
    collect_statistics(model, tensors, inputs_for(model, 2), progress=False)  # warm ORT and the extension
    before = psutil.Process().memory_info().rss
    tracemalloc.start()
    start = time.perf_counter()
    with RssPeak() as rss:
        collect_statistics(model, tensors, inputs_for(model, count, seed=1), progress=False)
    seconds = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"rss_growth_mb": (rss.peak - before) / 2**20, "peak_rss_mb": rss.peak / 2**20,
            "traced_peak_mb": traced / 2**20, "seconds": seconds, "tensors": len(tensors)}


def bench_model(name: str, args: argparse.Namespace) -> None:
    proto = models_zoo.build(name, image=args.image)
    model = ir.serde.deserialize_model(proto)
    model_bytes = proto.SerializeToString()
    feeds = list(inputs_for(model, args.inputs))
    inputs_only = conv_gemm_tensors(model, outputs=False)
    ort_set = conv_gemm_tensors(model, outputs=True)
    print(f"{name} at batch 1, {args.image}x{args.image}, {args.inputs} inputs, ORT {ort.__version__}, "
          f"{os.cpu_count()} CPUs")

    with tempfile.TemporaryDirectory(prefix="onnxc-bench-calib-") as folder:
        path = os.path.join(folder, "model.onnx")
        onnx.save(proto, path)
        plain, plain_quiet, steady, steady_quiet = ("ORT FP32 inference (session + runs)",
                                                    "ORT FP32 inference, threads not spinning (session + runs)",
                                                    "ORT FP32 inference (runs only)",
                                                    "ORT FP32 inference, threads not spinning (runs only)")
        ours, ours_ort_set = (f"onnxc calibration, Conv/Gemm inputs ({len(inputs_only)} tensors)",
                              f"onnxc calibration, ORT's tensor set ({len(ort_set)} tensors)")
        quantize, ort_calib, ort_2048 = ("ORT quantize_static, Entropy", "ORT calibration stage only (Entropy, 128 bins)",
                                         "ORT calibration stage only (Entropy, 2048 bins)")
        contenders: dict[str, tuple[Callable[[], object], int]] = {
            plain: (plain_inference(model_bytes, feeds), args.repeats),
            plain_quiet: (plain_inference(model_bytes, feeds, spinning=False), args.repeats),
            steady: (steady_inference(model_bytes, feeds), args.repeats),
            steady_quiet: (steady_inference(model_bytes, feeds, spinning=False), args.repeats),
            ours: (onnxc_calibration(model, inputs_only, feeds), args.repeats),
            ours_ort_set: (onnxc_calibration(model, ort_set, feeds), args.repeats),
        }
        if not args.skip_ort_quantize:
            contenders[quantize] = (ort_quantize_static(path, folder, feeds), 1)
            contenders[ort_calib] = (ort_calibration_only(path, folder, feeds, 128), 1)
            if args.ort_2048:
                contenders[ort_2048] = (ort_calibration_only(path, folder, feeds, 2048), 1)
        times = min_of_medians(contenders, args.rounds)

    width = max(map(len, times))
    for label, seconds in times.items():
        print(f"  {label:<{width}}  {seconds * 1000:9.1f} ms")
    # onnxc's session does not spin, so the fair inference reference is the faster of the two.
    inference = min(times[plain], times[plain_quiet])
    runs_only = min(times[steady], times[steady_quiet])
    print(f"calibration / inference (Conv/Gemm inputs, entropy): {times[ours] / inference:.2f}x end to end "
          f"(target <= 1.5x; against the faster of the two inference settings); "
          f"{times[ours] / runs_only:.2f}x of the runs alone")
    if not args.skip_ort_quantize:
        ratio = times[quantize] / times[ours_ort_set]
        print(f"ORT quantize_static (Entropy) / onnxc calibration (same tensors): {ratio:.1f}x "
              f"(target >= 5x); ORT's calibration stage alone: {times[ort_calib] / times[ours_ort_set]:.1f}x; "
              f"against onnxc calibrating the Conv/Gemm inputs it quantizes: {times[quantize] / times[ours]:.1f}x")
        if args.ort_2048:
            print(f"at onnxc's resolution (2048 bins), ORT's calibration stage / onnxc: "
                  f"{times[ort_2048] / times[ours_ort_set]:.1f}x")
        ceiling = times[quantize] / inference
        print(f"bound: any calibration runs the model over every input, so it takes at least the inference "
              f"({inference * 1000:.1f} ms); ORT quantize_static / inference = {ceiling:.1f}x is the highest "
              f"this ratio can be (onnxc reaches {ratio / ceiling:.0%} of it); a 5x target needs "
              f"quantize_static >= 5x the inference")
    print()


def against_figures(name: str, args: argparse.Namespace, short: str) -> None:
    """The calibration job with the current onnxc against commit ``short``'s, in fresh processes."""
    tools = ("onnxc-calibrate", f"onnxc-calibrate@{short}")
    with tempfile.TemporaryDirectory(prefix="onnxc-bench-against-") as folder:
        path = Path(folder) / "model.onnx"
        onnx.save(models_zoo.build(name, image=args.image), str(path))
        best = best_of_rounds(tools, path, {tool: path for tool in tools}, args.rounds, args.repeats)
    now, before = (best[tool].get("seconds") for tool in tools)
    versus = f"now/before {now / before:.2f}" if now and before else f"failed: {best}"
    print(f"{name}: calibration job (load, 32 inputs, entropy) now {now or 0:.2f} s, onnxc@{short} {before or 0:.2f} s, "
          f"{versus} (< 1: faster than before)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet18,mobilenetv2,resnet50",
                        help="comma-separated zoo CNNs (resnet18, mobilenetv2, resnet50)")
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--inputs", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="repeats per round of the fast contenders")
    parser.add_argument("--memory-model", default="resnet18")
    parser.add_argument("--memory-image", type=int, default=64)
    parser.add_argument("--memory-counts", default="10,1000", help="empty: skip the memory check")
    parser.add_argument("--skip-ort-quantize", action="store_true")
    parser.add_argument("--ort-2048", action="store_true",
                        help="also time ORT's entropy calibration at 2048 bins (slow: its search is Python)")
    parser.add_argument("--against", metavar="REV", help="also time the calibration job with git commit REV's onnxc")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_child is not None:
        print(json.dumps(memory_child(args.memory_model, args.memory_image, args.memory_child)))
        return
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static logs advice on every call

    short = _baseline.install(args.against) if args.against else None
    for name in args.models.split(","):
        bench_model(name.strip(), args)
        if short:
            against_figures(name.strip(), args, short)

    counts = [int(c) for c in args.memory_counts.split(",") if c]
    if not counts:
        return
    print(f"memory: {args.memory_model} at {args.memory_image}x{args.memory_image}, inputs streamed from a generator")
    for count in counts:
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(count), "--memory-model", args.memory_model,
                              "--memory-image", str(args.memory_image)], check=True, capture_output=True, text=True)
        m = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {count:5d} inputs: peak RSS growth {m['rss_growth_mb']:6.1f} MB (peak RSS {m['peak_rss_mb']:.0f} MB), "
              f"Python allocations peak {m['traced_peak_mb']:.2f} MB, {m['seconds']:.2f} s, {m['tensors']} tensors")


if __name__ == "__main__":
    main()
