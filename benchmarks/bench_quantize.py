"""INT8 quantization: onnxc's ``quantize`` pass against ONNX Runtime's ``quantize_static``, in one run.

    python benchmarks/bench_quantize.py                                   # the default model set
    python benchmarks/bench_quantize.py --models resnet50 mobilenetv2 --calib 32 --test 200
    python benchmarks/bench_quantize.py --passes "quantize(method=entropy)" --ort-method Entropy

For each zoo model:

* FP32 baseline: the model after onnxc's default (lossless) pipeline; both quantizers start from
  this same file, so the comparison is about quantization alone.
* onnxc: ``--passes`` (default ``quantize``, the onnxruntime profile) with the calibration feeds.
* ORT: ``onnxruntime.quantization.quantize_static`` (QDQ format, per-channel, U8S8, ``--ort-method``
  calibration) on the same feeds.
* Latency: ORT CPU, 2 intra-op threads, batch 1; the three models interleaved round by round,
  minimum over rounds of the per-round median (``onnxc.timing.compare_latency``) with the order
  rotated every round; at least 20 ms of calls per model and round, so sub-millisecond models are
  not judged on a few noisy calls.
* Fidelity against FP32 on held-out inputs: top-1 agreement for classifiers, cosine of the
  compared output (pooled output for BERT), for YOLO the largest box error in pixels and class
  score error apart, and for the digits model the test-set accuracy itself.
* Calibration time: wall time of the onnxc pass (statistics + thresholds + graph rewrite) and of
  ``quantize_static``.

Inputs. The zoo weights are random (except digits), so "realistic" inputs are synthetic:
images are smooth natural-image-like fields (random low-frequency noise at 4, 16 and 56 cells
per side, box-blurred, scaled to [0, 1] and normalized with the ImageNet mean/std; YOLO takes
the [0, 1] image); token models get random ids of the vocabulary with [CLS]/[SEP] around them
and a full attention mask. Calibration and test inputs are disjoint draws (seeds 0 and 1) of the
same distribution. The random-weight classifiers predict few classes and many inputs are near
ties (ResNet-50: 2% with a top-2 logit gap < 0.0034), so top-1 agreement moves by a few inputs
for any change of the logit error; read it with the cosine.
"""
from __future__ import annotations

import argparse
import copy
import gc
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

import onnxc
from onnxc import models_zoo
from onnxc.context import Context
from onnxc.report import table
from onnxc.runtime import OrtRunner
from onnxc.timing import compare_latency

DEFAULT_MODELS = ("resnet50", "mobilenetv2", "resnet18", "vit-tiny", "yolo", "bert", "bert-base", "lstm", "gru",
                  "digits")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]


def smooth_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A [3, size, size] image in [0, 1] made of smooth noise at three scales."""
    image = np.zeros((3, size, size), dtype=np.float32)
    for cells, amplitude in ((4, 1.0), (16, 0.5), (56, 0.25)):
        low = rng.standard_normal((3, cells, cells)).astype(np.float32) * amplitude
        step = -(-size // cells)
        image += np.kron(low, np.ones((step, step), dtype=np.float32))[:, :size, :size]
    kernel = np.ones(5, dtype=np.float32) / 5
    for axis in (1, 2):
        image = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, image)
    return ((image - image.min()) / (image.max() - image.min() + 1e-6)).astype(np.float32)


def image_feeds(name: str, size: int, normalize: bool) -> Callable[[int, int], list[dict]]:
    def make(count: int, seed: int) -> list[dict]:
        rng = np.random.default_rng(seed)
        feeds = []
        for _ in range(count):
            image = smooth_image(rng, size)
            if normalize:
                image = (image - IMAGENET_MEAN) / IMAGENET_STD
            feeds.append({name: image[None].astype(np.float32)})
        return feeds
    return make


def token_feeds(seq_len: int, vocab: int, bert: bool) -> Callable[[int, int], list[dict]]:
    def make(count: int, seed: int) -> list[dict]:
        rng = np.random.default_rng(seed)
        feeds = []
        for _ in range(count):
            ids = rng.integers(1000 if bert else 0, vocab, size=(1, seq_len)).astype(np.int64)
            if not bert:
                feeds.append({"input_ids": ids})
                continue
            ids[0, 0], ids[0, -1] = 101, 102
            feeds.append({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
        return feeds
    return make


def digits_feeds(count: int, seed: int) -> list[dict]:
    split = "calib" if seed == 0 else "test"
    x, _ = models_zoo.digits.load_split(split)
    return [{"input": x[i:i + 1]} for i in range(min(count, len(x)))]


# name -> (builder options, feed maker, compared output, fidelity kind)
MODELS: dict[str, tuple[dict, Callable[[int, int], list[dict]], str, str]] = {
    "resnet50": ({}, image_feeds("input", 224, True), "logits", "top1"),
    "resnet18": ({}, image_feeds("input", 224, True), "logits", "top1"),
    "mobilenetv2": ({}, image_feeds("input", 224, True), "logits", "top1"),
    "vit-tiny": ({}, image_feeds("input", 224, True), "logits", "top1"),
    "yolo": ({}, image_feeds("images", 640, False), "output0", "yolo"),
    "bert": ({"batch": 1, "seq_len": 128}, token_feeds(128, 30522, True), "pooler_output", "cosine"),
    "bert-base": ({"batch": 1, "seq_len": 128}, token_feeds(128, 30522, True), "pooler_output", "cosine"),
    "lstm": ({}, token_feeds(32, 1000, False), "logits", "top1"),
    "gru": ({}, token_feeds(32, 1000, False), "logits", "top1"),
    "digits": ({"batch": 1}, digits_feeds, "logits", "accuracy"),
}


def rotated_latency(contenders: dict[str, Callable[[], object]], rounds: int, calls: int) -> dict[str, float]:
    """``compare_latency`` with the contenders' order rotated every round: an ORT session's threads
    keep spinning for a while after a run and slow whichever session runs next, so a fixed order
    would always handicap the same contender (an identical model measured up to 30% apart)."""
    names = list(contenders)
    best = {name: float("inf") for name in names}
    for round_index in range(rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        times = compare_latency({name: contenders[name] for name in order}, rounds=1, calls_per_round=calls,
                                warmup=2)
        best = {name: min(best[name], times[name]) for name in names}
    return best


class _Reader:
    """An ORT CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[dict]):
        self._feeds = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def ort_quantize(source: Path, target: Path, feeds: list[dict], method: str) -> float:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    logging.getLogger().setLevel(logging.ERROR)
    start = time.perf_counter()
    quantize_static(str(source), str(target), _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method),
                    use_external_data_format=source.stat().st_size > 1_500_000_000)
    return time.perf_counter() - start


def fidelity(reference: OrtRunner, candidate: OrtRunner, feeds: list[dict], output: str, kind: str) -> str:
    ref = [reference.run(f)[output] for f in feeds]
    got = [candidate.run(f)[output] for f in feeds]
    cosines = [float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))
               for a, b in zip(ref, got)]
    text = f"cos {np.mean(cosines):.4f} (min {min(cosines):.3f})"
    if kind == "yolo":
        # Rows 0-3 are box coordinates in pixels, the rest class scores: judged apart, since one
        # shared scale over both is what erases the scores.
        box_error = max(float(np.abs(a[:, :4] - b[:, :4]).max()) for a, b in zip(ref, got))
        score_error = max(float(np.abs(a[:, 4:] - b[:, 4:]).max()) for a, b in zip(ref, got))
        score_scale = max(float(np.abs(a[:, 4:]).max()) for a in ref)
        return f"box err {box_error:.1f}px, score err {score_error:.2g} (scores up to {score_scale:.2g})"
    if kind == "top1":
        agree = np.mean([int(np.argmax(a) == np.argmax(b)) for a, b in zip(ref, got)])
        text = f"top1 {100 * agree:.1f}%, " + text
    return text


def digits_accuracy(path: Path) -> float:
    return models_zoo.digits.evaluate(str(path))


def run_model(name: str, folder: Path, args: argparse.Namespace) -> list[str]:
    options, make_feeds, output, kind = MODELS[name]
    model = ir.serde.deserialize_model(models_zoo.build(name, **options))
    onnxc.compile(model, "default")
    fp32 = folder / f"{name}.fp32.onnx"
    onnxc.save(model, fp32)
    calib = make_feeds(args.calib, 0)
    test = make_feeds(args.test, 1)

    quantized = ir.serde.deserialize_model(copy.deepcopy(ir.to_proto(model))) if name != "bert-base" else onnxc.load(fp32)
    del model
    gc.collect()
    start = time.perf_counter()
    report = onnxc.compile(quantized, args.passes, context=Context(calibration_data=calib, seed=0))
    onnxc_seconds = time.perf_counter() - start
    details = report.passes[-1].details
    ours = folder / f"{name}.onnxc.onnx"
    onnxc.save(quantized, ours)
    onnx.checker.check_model(str(ours), full_check=True)
    del quantized
    gc.collect()

    theirs = folder / f"{name}.ort.onnx"
    try:
        ort_seconds = ort_quantize(fp32, theirs, calib, args.ort_method)
    except Exception as error:  # noqa: BLE001 - report a peer's failure in the table, keep going
        ort_seconds, theirs = None, None
        print(f"{name}: ORT quantize_static failed: {type(error).__name__}: {str(error).splitlines()[0][:100]}")

    runners = {"fp32": OrtRunner(fp32, threads=2), "onnxc": OrtRunner(ours, threads=2)}
    if theirs is not None:
        runners["ort"] = OrtRunner(theirs, threads=2)
    feed = test[0]
    start = time.perf_counter()
    for _ in range(5):
        runners["fp32"].run(feed)
    single = (time.perf_counter() - start) / 5
    # Sub-millisecond models get more calls per round (each block lasts >= 20 ms), so that a burst
    # of load on the shared machine cannot decide a round.
    calls = max(args.calls, int(0.02 / max(single, 1e-6)))
    times = rotated_latency({k: (lambda r=r: r.run(feed)) for k, r in runners.items()}, args.rounds, calls)
    if kind == "accuracy":
        accuracy = {k: digits_accuracy(p) for k, p in (("fp32", fp32), ("onnxc", ours), ("ort", theirs)) if p}
        quality = {k: f"acc {100 * v:.2f}% ({100 * (v - accuracy['fp32']):+.2f})" for k, v in accuracy.items()}
    else:
        quality = {k: fidelity(runners["fp32"], r, test, output, kind) for k, r in runners.items() if k != "fp32"}
    for runner in runners.values():
        runner.close()

    def latency(key: str) -> str:
        if key not in times:
            return "failed"
        return f"{times[key] * 1e3:.2f} ms (x{times['fp32'] / times[key]:.2f})"

    units = details.get("quantized_units", 0)
    return [name, f"{times['fp32'] * 1e3:.2f} ms", latency("onnxc"), latency("ort"), quality.get("onnxc", "-"),
            quality.get("ort", "failed"), f"{onnxc_seconds:.2f} s",
            "failed" if ort_seconds is None else f"{ort_seconds:.2f} s", str(units)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS), choices=list(MODELS))
    parser.add_argument("--passes", default="quantize", help="onnxc pipeline applied to the FP32 model")
    parser.add_argument("--ort-method", default="MinMax", choices=["MinMax", "Entropy", "Percentile"])
    parser.add_argument("--calib", type=int, default=32, help="calibration feeds (default 32)")
    parser.add_argument("--test", type=int, default=200, help="held-out feeds for fidelity (default 200)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnxc-bench-quantize-") as tmp:
        for name in args.models:
            rows.append(run_model(name, Path(tmp), args))
            print(" | ".join(rows[-1]), flush=True)
    headers = ["model", "FP32", "onnxc INT8", f"ORT {args.ort_method}", "onnxc fidelity", "ORT fidelity",
               "onnxc calib", "ORT calib", "units"]
    print()
    print(table(headers, rows))


if __name__ == "__main__":
    main()
