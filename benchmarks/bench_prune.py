"""Structured pruning: ``prune(macs=...)`` on zoo CNNs, alone and followed by ``quantize``, timed on ORT CPU.

    python benchmarks/bench_prune.py                                   # resnet50 and mobilenetv2 at 224
    python benchmarks/bench_prune.py --models mobilenetv2 --image 128 --macs 0.5 --calib 16 --test 32
    python benchmarks/bench_prune.py --models mobilenetv2 --openvino       # also timed on OpenVINO

For each model, from the same FP32 file (the model after onnxc's default lossless pipeline, so BN is
already folded and the comparison is about pruning alone):

* pruned global: ``prune(macs=M,search=false)`` (one global ranking of channel scores) with
  reconstruction on the calibration feeds; pruned searched: ``prune(macs=M)``, whose per-group
  ratios are searched on held-apart calibration feeds (the default with data);
* +int8: the same followed by ``quantize`` (static, accuracy guard on, same feeds); int8: the FP32
  file quantized alone, what pruning multiplies;
* with ``--also-round-to N``: the searched plan again with ``round_to=N`` (the pass's default is 16,
  ORT's AVX-512 channel block), to see what channel rounding does at the same MACs;
* with ``--openvino``: the FP32 file, the searched plan, and both quantized for the ``openvino``
  target, timed on OpenVINO's CPU plugin at the f32 precision hint (``onnxc.backends.openvino``,
  same threads, interleaved), as ratios to OpenVINO running the FP32 file. ORT's int8 depthwise
  convolutions are no faster than its float ones, so a depthwise network's prune+int8 gain is
  much larger on OpenVINO.

Columns: MACs and parameters kept (``onnxc.costs`` / initializer elements), ORT CPU latency ratio
to the FP32 file (2 intra-op threads, batch 1, all the models interleaved, min over rounds of
the per-round median: ``onnxc.timing.ort_latencies``; ``--cpu-time`` adds the same by CPU time at one thread,
which other jobs on the machine barely move), and fidelity on held-out inputs: top-1
agreement and logit cosine / RMS error over the logits' spread against FP32. The zoo weights are
random, so fidelity says how much of the function survives, not accuracy; calibration and test
inputs are disjoint draws of smooth image-like noise.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import onnx_ir as ir

import onnxc
from onnxc.analysis import parameter_count
from onnxc.context import Context
from onnxc.costs import compute_costs
from onnxc.models_zoo import build
from onnxc.report import table
from onnxc.runtime import OrtRunner
from onnxc.search.errors import output_errors
from onnxc.targets import DEFAULT_TARGET
from onnxc.timing import ort_latencies


def image_feeds(count: int, seed: int, size: int) -> list[dict[str, np.ndarray]]:
    """Smooth image-like inputs: random low-resolution fields upsampled, then normalized."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        cells = rng.normal(size=(1, 3, 8, 8))
        image = np.kron(cells, np.ones((1, 1, -(-size // 8), -(-size // 8))))[:, :, :size, :size]
        image += 0.1 * rng.normal(size=image.shape)
        feeds.append({"input": ((image - image.mean()) / image.std()).astype(np.float32)})
    return feeds


def compiled(proto, pipeline: str, calib: list[dict], target: str = DEFAULT_TARGET) -> tuple[ir.Model, float]:
    """``proto`` compiled through ``pipeline`` for ``target`` with ``calib`` as calibration data, and
    the seconds it took."""
    model = ir.serde.deserialize_model(proto)
    start = time.perf_counter()
    onnxc.compile(model, pipeline, context=Context(calibration_data=calib, seed=0, target=target))
    return model, time.perf_counter() - start


def fidelity(reference: ir.Model, candidate: ir.Model, feeds: list[dict]) -> str:
    a, b = OrtRunner(reference, label="fp32"), OrtRunner(candidate, label="candidate")
    try:
        ref = [a.run(f) for f in feeds]
        out = [b.run(f) for f in feeds]
    finally:
        a.close()
        b.close()
    top1 = np.mean([np.argmax(next(iter(r.values()))) == np.argmax(next(iter(c.values()))) for r, c in zip(ref, out)])
    errors = output_errors(ref, out)
    return f"top1 {top1:.0%} cos {errors.min_cosine:.4f} rel {errors.max_rel_error:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet50", "mobilenetv2"])
    parser.add_argument("--image", type=int, default=224, help="input side (default 224)")
    parser.add_argument("--macs", type=float, default=0.5, help="fraction of MACs to keep (default 0.5)")
    parser.add_argument("--calib", type=int, default=16, help="calibration feeds (default 16)")
    parser.add_argument("--test", type=int, default=32, help="held-out feeds for fidelity (default 32)")
    parser.add_argument("--rounds", type=int, default=7, help="latency rounds (default 7)")
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (default 2)")
    parser.add_argument("--also-round-to", type=int, help="add the searched plan with this round_to")
    parser.add_argument("--openvino", action="store_true",
                        help="also time FP32, searched, int8 and searched+int8 (quantized for openvino) on OpenVINO")
    parser.add_argument("--cpu-time", action="store_true",
                        help="also time by CPU time at 1 thread (steady when other jobs share the machine; "
                             "on OpenVINO the process's CPU time)")
    args = parser.parse_args()

    header = ["model", "variant", "MACs kept", "params kept", "latency", *(["cpu 1t"] if args.cpu_time else []),
              "compile s", "fidelity"]
    rows, ov_rows = [], []
    for name in args.models:
        proto = build(name, image=args.image)
        calib, test = image_feeds(args.calib, 0, args.image), image_feeds(args.test, 1, args.image)
        fp32, _ = compiled(proto, "default", calib)
        fp32_proto = ir.to_proto(fp32)
        base_macs, base_params = compute_costs(fp32).total_macs, parameter_count(fp32)
        # The ratio search is on by default with calibration data; the global ranking is its baseline.
        variants = {"int8": "quantize",
                    "pruned global": f"prune(macs={args.macs},search=false)",
                    "pruned global+int8": f"prune(macs={args.macs},search=false),quantize",
                    "pruned searched": f"prune(macs={args.macs})",
                    "pruned searched+int8": f"prune(macs={args.macs}),quantize"}
        if args.also_round_to:
            variants[f"pruned searched round_to={args.also_round_to}"] = \
                f"prune(macs={args.macs},round_to={args.also_round_to})"
        models, seconds = {"fp32": fp32}, {}
        for label, pipeline in variants.items():
            models[label], seconds[label] = compiled(fp32_proto, pipeline, calib)
        latency = ort_latencies(models, test[0], rounds=args.rounds, calls_per_round=10, threads=args.threads)
        # The calling thread's CPU time, with no worker threads whose time it would miss.
        cpu = ort_latencies(models, test[0], rounds=args.rounds, calls_per_round=10, threads=1,
                            clock=time.thread_time) if args.cpu_time else None
        rows.append([name, f"fp32 {args.image}px", f"{base_macs / 1e9:.2f} G", f"{base_params / 1e6:.2f} M",
                     f"{latency['fp32'] * 1e3:.1f} ms", *([f"{cpu['fp32'] * 1e3:.1f} ms"] if cpu else []), "", ""])
        for label in variants:
            model = models[label]
            rows.append([name, label, f"{compute_costs(model).total_macs / base_macs:.3f}",
                         f"{parameter_count(model) / base_params:.3f}", f"{latency[label] / latency['fp32']:.3f}x",
                         *([f"{cpu[label] / cpu['fp32']:.3f}x"] if cpu else []),
                         f"{seconds[label]:.1f}", fidelity(fp32, model, test)])
        if args.openvino:
            ov_rows.extend(openvino_rows(name, fp32_proto, models, base_macs, calib, test, args))
    print(table(header, rows))
    if ov_rows:
        print(f"\nOn OpenVINO's CPU plugin (f32 hint, {args.threads} threads, batch 1; int8 quantized for target openvino)")
        print(table(["model", "variant", "MACs kept", "latency on OpenVINO",
                     *(["cpu 1t on OpenVINO"] if args.cpu_time else []), "fidelity"], ov_rows))


def openvino_rows(name: str, fp32_proto, models: dict[str, ir.Model], base_macs: int, calib: list[dict],
                  test: list[dict], args: argparse.Namespace) -> list[list[str]]:
    """FP32, the searched plan, and both quantized for OpenVINO, timed on OpenVINO against the FP32 file."""
    from onnxc.backends.openvino import openvino_latencies

    fp32 = models["fp32"]
    ov_models = {"fp32": fp32, "pruned searched": models["pruned searched"]}
    for label, pipeline in (("int8", "quantize"), ("pruned searched+int8", f"prune(macs={args.macs}),quantize")):
        ov_models[label], _ = compiled(fp32_proto, pipeline, calib, target="openvino")
    latency = openvino_latencies(ov_models, test[0], rounds=args.rounds, calls_per_round=10, threads=args.threads,
                                 precision="f32")
    cpu = openvino_latencies(ov_models, test[0], rounds=args.rounds, calls_per_round=10, threads=1,
                             precision="f32", clock=time.process_time) if args.cpu_time else None
    return [[name, "fp32", "1.000", f"{latency['fp32'] * 1e3:.2f} ms", *([f"{cpu['fp32'] * 1e3:.2f} ms"] if cpu else []),
             ""]] + [
        [name, label, f"{compute_costs(model).total_macs / base_macs:.3f}",
         f"{latency[label] / latency['fp32']:.3f}x ({latency['fp32'] / latency[label]:.2f}x faster)",
         *([f"{cpu[label] / cpu['fp32']:.3f}x ({cpu['fp32'] / cpu[label]:.2f}x faster)"] if cpu else []),
         fidelity(fp32, model, test)]
        for label, model in ov_models.items() if label != "fp32"]


if __name__ == "__main__":
    main()
