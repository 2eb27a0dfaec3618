"""OpenVINO INT8 against OpenVINO FP32 on the zoo's ResNet-50-style model, with ORT alongside.

    python benchmarks/bench_openvino.py                      # ResNet-50, 224 px, batch 1
    python benchmarks/bench_openvino.py --image 112 --calib 4 --rounds 5

* FP32: the zoo model after onnxc's default (lossless) pipeline.
* INT8: that file through ``quantize`` for the ``openvino`` target (QDQ, which OpenVINO's ONNX
  frontend turns into FakeQuantize) on ``--calib`` smooth natural-image-like inputs.
* Both lowered by ``onnxc.backends.openvino`` (IR, the f32 precision hint: without it the CPU
  plugin would run the FP32 model in bf16 on CPUs with AVX-512 BF16), 2 threads, batch 1.
* ORT FP32 and ORT INT8 (the same QDQ file on ORT's CPU provider, 2 threads) in the same run.
* Latency: the four interleaved round by round, min over rounds of the per-round median
  (``onnxc.timing.compare_latency``). The INT8 convolution count is read from the compiled
  model's runtime graph (``runtimePrecision`` of each ``Convolution``).
* Verification: each OpenVINO artifact against ORT on the same ONNX file
  (``onnxc.backends.verify``).

Acceptance (issue 10): OpenVINO INT8 at least 2x faster than OpenVINO FP32 (f32 hint).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnx_ir as ir

import onnxc
from onnxc import models_zoo
from onnxc.backends.base import LowerOptions
from onnxc.backends.openvino import OpenVinoBackend
from onnxc.backends.verify import verify_runner
from onnxc.inputs import seeded_feeds
from onnxc.report import table
from onnxc.runtime import OrtRunner
from onnxc.timing import compare_latency

from bench_quantize import image_feeds

THREADS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50", help="zoo image model (default resnet50)")
    parser.add_argument("--image", type=int, default=224, help="input size in pixels (default 224)")
    parser.add_argument("--calib", type=int, default=8, help="calibration images (default 8)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved latency rounds (default 7)")
    args = parser.parse_args()

    fp32 = ir.serde.deserialize_model(models_zoo.build(args.model, image=args.image, batch=1))
    onnxc.compile(fp32, "default")
    int8 = ir.serde.deserialize_model(ir.serde.serialize_model(fp32))
    calibration = image_feeds("input", args.image, normalize=True)(args.calib, 0)
    onnxc.compile(int8, "quantize", context=onnxc.Context(target="openvino", calibration_data=calibration,
                                                          check_speed=False))
    feed = image_feeds("input", args.image, normalize=True)(1, 1)[0]

    backend = OpenVinoBackend()
    options = LowerOptions(precision="f32", threads=THREADS)
    with tempfile.TemporaryDirectory(prefix="onnxc-bench-openvino-") as tmp:
        artifacts = {name: backend.lower(model, Path(tmp) / name, options)
                     for name, model in (("fp32", fp32), ("int8", int8))}
        runners = {"OpenVINO FP32 (f32)": backend.load(artifacts["fp32"]),
                   "OpenVINO INT8": backend.load(artifacts["int8"]),
                   "ORT FP32": OrtRunner(fp32, threads=THREADS, label="FP32 model"),
                   "ORT INT8": OrtRunner(int8, threads=THREADS, label="INT8 model")}
        checks = {"OpenVINO FP32 (f32)": (runners["OpenVINO FP32 (f32)"], fp32, artifacts["fp32"]),
                  "OpenVINO INT8": (runners["OpenVINO INT8"], int8, artifacts["int8"])}
        for name, (runner, model, artifact) in checks.items():
            verification = verify_runner(runner, model, seeded_feeds(model, samples=2),
                                         precision=artifact.metadata["precision_ran"])
            print(f"{name}: ran {artifact.metadata['precision_ran']}, verification "
                  f"{'matches ORT' if verification.passed else 'MISMATCH'}: {'; '.join(verification.lines())}")
        seconds = compare_latency({name: (lambda r=r: r.run(feed)) for name, r in runners.items()},
                                  rounds=args.rounds, calls_per_round=5)
        for runner in runners.values():
            runner.close()

    convolutions = {name: artifact.metadata["runtime_precision"].get("Convolution", {}) for name, artifact in artifacts.items()}
    int8_convs = {name: sum(n for p, n in c.items() if p in ("i8", "u8")) for name, c in convolutions.items()}
    base = seconds["OpenVINO FP32 (f32)"]
    rows = [[name, f"{1000 * s:.2f}", f"{base / s:.2f}x",
             (f"{int8_convs['int8' if 'INT8' in name else 'fp32']}/{sum(convolutions['int8' if 'INT8' in name else 'fp32'].values())}"
              if name.startswith("OpenVINO") else "-")]
            for name, s in seconds.items()]
    print(f"\n{args.model}, {args.image} px, batch 1, {THREADS} threads, min of {args.rounds} interleaved round medians")
    print(table(["contender", "ms", "speed-up vs OpenVINO FP32", "int8 convolutions at run time"], rows))
    ratio = seconds["OpenVINO FP32 (f32)"] / seconds["OpenVINO INT8"]
    verdict = "meets" if ratio >= 2 else "MISSES"
    print(f"\nOpenVINO INT8 is {ratio:.2f}x faster than OpenVINO FP32 (f32 hint): {verdict} the 2x acceptance; "
          f"{int8_convs['int8']} convolutions run in INT8")


if __name__ == "__main__":
    main()
