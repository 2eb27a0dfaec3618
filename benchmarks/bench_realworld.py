"""onnxc's default pipeline vs onnxslim on real exported models shipped in PyPI packages.

For each installed model of ``onnxc.models_zoo.realworld``: nodes (main graph and subgraphs)
and file size before and after each tool, load + optimize + save time (each tool in its own
process via _optimize_once.py, interleaved round by round, minimum of per-round medians), and
ORT CPU latency of onnxc's output vs the original on the model's realistic sample inputs
(2 threads, interleaved, minimum of medians). Models whose package is missing are listed, not run.
benchmarks/corpus.py judges any pipeline over the same models (status, task fidelity, size,
latency, compile time); this script is the node-count and speed comparison with onnxslim.

    python benchmarks/bench_realworld.py
    python benchmarks/bench_realworld.py --models ppocrv4-det minilm-l6-int8 --rounds 5
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import onnx

from onnxc.models_zoo import realworld
from onnxc.report import table

from _latency import ort_latency
from _optimize_once import best_of_rounds

TOOLS = ("onnxc", "onnxslim")


def node_count(path: Path) -> int:
    def count(graph: onnx.GraphProto) -> int:
        total = 0
        for node in graph.node:
            total += 1
            for attr in node.attribute:
                total += count(attr.g) if attr.type == onnx.AttributeProto.GRAPH else 0
                total += sum(count(g) for g in attr.graphs)
        return total

    return count(onnx.load(str(path), load_external_data=False).graph)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", help="real-world model names (default: every installed one)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per tool (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per round, median taken (default 3)")
    parser.add_argument("--latency-rounds", type=int, default=9, help="interleaved ORT latency rounds (default 9)")
    args = parser.parse_args()
    names = args.models or list(realworld.REAL_MODELS)
    missing = [realworld.missing_reason(name) for name in names if realworld.locate(name) is None]
    names = [name for name in names if realworld.locate(name) is not None]
    node_rows, speed_rows, latency_rows = [], [], []
    with tempfile.TemporaryDirectory(prefix="onnxc-bench-real-") as tmp:
        for name in names:
            source = realworld.locate(name)
            outputs = {tool: Path(tmp) / f"{name}.{tool}.onnx" for tool in TOOLS}
            best = best_of_rounds(TOOLS, source, outputs, args.rounds, args.repeats)
            ok = {tool: "error" not in best[tool] for tool in TOOLS}
            counts = [node_count(source)] + [node_count(outputs[t]) if ok[t] else None for t in TOOLS]
            sizes = [source.stat().st_size] + [outputs[t].stat().st_size if ok[t] else None for t in TOOLS]
            node_rows.append([name, *("-" if c is None else str(c) for c in counts),
                              *("-" if s is None else f"{s / 1e6:.2f}" for s in sizes)])
            secs = {tool: best[tool].get("seconds") for tool in TOOLS}
            speed_rows.append([name, *("failed" if secs[t] is None else f"{secs[t]:.3f}" for t in TOOLS),
                               f"{secs['onnxslim'] / secs['onnxc']:.2f}x" if secs["onnxslim"] and secs["onnxc"] else "-"])
            if ok["onnxc"]:
                original, optimized = ort_latency(
                    source, outputs["onnxc"], realworld.sample_inputs(name), rounds=args.latency_rounds, calls_per_round=20
                )
                latency_rows.append([name, f"{original * 1e3:.2f}", f"{optimized * 1e3:.2f}", f"{original / optimized:.2f}x"])
            print(f"done {name}", file=sys.stderr)
    print("nodes (main graph + subgraphs) and file size (MB)")
    print(table(["model", "original", "onnxc", "onnxslim", "original MB", "onnxc MB", "onnxslim MB"], node_rows))
    print("\nload + optimize + save (s, min of medians; >1x = onnxc faster)")
    print(table(["model", "onnxc s", "onnxslim s", "vs onnxslim"], speed_rows))
    print("\nORT CPU latency on realistic inputs, 2 threads (ms, min of medians; >1x = onnxc output faster)")
    print(table(["model", "original ms", "onnxc ms", "speed-up"], latency_rows))
    for reason in missing:
        print(f"not run: {reason}")


if __name__ == "__main__":
    main()
