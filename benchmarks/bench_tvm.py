"""TVM x86 against ONNX Runtime on a ResNet-18-style model: untuned and meta-schedule-tuned builds.

    python benchmarks/bench_tvm.py                               # ResNet-18, 112x112, 256 trials
    python benchmarks/bench_tvm.py --image 224 --trials 1000 --json tvm.json
    python benchmarks/bench_tvm.py --trials 0                    # untuned only

* Model: the zoo ResNet-18 (width 64, 1000 classes) at batch 1 and ``--image`` pixels, FP32,
  after onnxc's default (lossless) pipeline, as ``onnxc compile ... --build`` hands it to the
  lowerer: BatchNormalization folded into the convolutions (ORT folds it itself; TVM's importer
  would keep it as four element-wise ops after each convolution).
* TVM builds: ``tvm-x86`` untuned, and tuned with ``--trials`` meta-schedule trials in all
  (``LowerOptions.tune_trials``); the tuning records are cached under ``--cache`` and reused by
  the next run with the same model, target and trials, so a rerun only re-times.
* Both builds are checked against ORT's outputs (1e-3 relative) before timing.
* Latency: ORT CPU and the TVM builds with ``--threads`` threads each, interleaved round by round,
  minimum over rounds of the per-round median (:func:`onnxc.timing.compare_latency`).
* ``--kernels``: where each TVM build's time goes, per kernel (median over runs of the time between
  the VM's calls into it and back, summed over the calls in one run).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx_ir as ir

import onnxc
from onnxc import models_zoo
from onnxc.backends.base import LowerOptions
from onnxc.runtime import OrtRunner
from onnxc.timing import compare_latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=int, default=112)
    parser.add_argument("--trials", type=int, default=256, help="meta-schedule trials in all (0: untuned only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "onnxc")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--kernels", action="store_true", help="also print each TVM build's time per kernel")
    args = parser.parse_args()
    # TVM's thread pool reads this when it starts, i.e. at the first run below.
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    from onnxc.backends.tvm import TvmX86Backend, UntunedBuildWarning

    model = ir.serde.deserialize_model(models_zoo.build("resnet18", image=args.image))
    onnxc.compile(model, "default")
    feed = {"input": np.random.default_rng(0).standard_normal((1, 3, args.image, args.image)).astype(np.float32)}
    ort = OrtRunner(model, threads=args.threads)
    expected = ort.run(feed)["logits"]
    backend = TvmX86Backend()
    builds, runners = {}, {"onnxruntime": ort}
    with tempfile.TemporaryDirectory() as scratch:
        for label, trials in (("tvm untuned", 0), (f"tvm tuned ({args.trials} trials)", args.trials)):
            if label != "tvm untuned" and trials == 0:
                continue
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UntunedBuildWarning)
                artifact = backend.lower(model, Path(scratch) / str(trials),
                                         LowerOptions(tune_trials=trials, cache_dir=args.cache))
            builds[label] = {"build_s": round(time.perf_counter() - start, 1), "tuning": artifact.metadata["tuning"]}
            runners[label] = backend.load(artifact)
            got = runners[label].run(feed)["logits"]
            np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
        latencies = compare_latency({name: (lambda r=r: r.run(feed)) for name, r in runners.items()},
                                    rounds=args.rounds, calls_per_round=5)
    print(f"ResNet-18 {args.image}x{args.image}, batch 1, {args.threads} threads")
    print(f"{'runtime':<28} {'latency ms':>10} {'vs ORT':>8} {'build s':>8}")
    for name, seconds in latencies.items():
        ratio = seconds / latencies["onnxruntime"]
        print(f"{name:<28} {seconds * 1e3:>10.2f} {ratio:>7.2f}x {builds.get(name, {}).get('build_s', ''):>8}")
    if args.kernels:
        for name, runner in runners.items():
            if name != "onnxruntime":
                print(f"\n{name}: ms per run by kernel")
                for kernel, seconds in runner.kernel_times(feed).items():
                    print(f"{seconds * 1e3:>10.3f}  {kernel}")
    if args.json:
        args.json.write_text(json.dumps({"image": args.image, "threads": args.threads, "builds": builds,
                                         "latency_s": latencies}, indent=2) + "\n")


if __name__ == "__main__":
    main()
