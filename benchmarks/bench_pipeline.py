"""onnxc's default pipeline vs onnxslim and onnxsim on the zoo models, in one run.

For each model: load + optimize + save time and peak memory (each tool in its own process,
interleaved round by round, minimum of per-round medians), node counts after each tool, and ORT
CPU latency of onnxc's output vs the original (fusion must never make a model slower).

    python benchmarks/bench_pipeline.py                       # all zoo models
    python benchmarks/bench_pipeline.py --models resnet50 bert --rounds 3
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import onnx

from onnxc.inputs import random_feeds, resolve_input_shapes
from onnxc.io import load
from onnxc.models_zoo import export, list_models
from onnxc.report import table

from _latency import ort_latency
from _optimize_once import best_of_rounds

TOOLS = ("onnxc", "onnxslim", "onnxsim")


def node_count(path: Path) -> int:
    return len(onnx.load(str(path), load_external_data=False).graph.node)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", help="zoo model names (default: all)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per tool (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per round, median taken (default 3)")
    args = parser.parse_args()
    names = args.models or [m.name for m in list_models()]
    speed_rows, node_rows, latency_rows = [], [], []
    with tempfile.TemporaryDirectory(prefix="onnxc-bench-") as tmp:
        for name in names:
            source = Path(tmp) / f"{name}.onnx"
            export(name, source)
            best = best_of_rounds(TOOLS, source, {tool: Path(tmp) / f"{name}.{tool}.onnx" for tool in TOOLS}, args.rounds, args.repeats)
            def secs(tool):
                return best[tool].get("seconds")
            def work_mb(tool):
                f = best[tool]
                return None if "error" in f else (f["peak_rss"] - f["rss_after_import"]) / 1e6
            row = [name]
            for tool in TOOLS:
                row.append("failed" if secs(tool) is None else f"{secs(tool):.3f}")
            for peer in ("onnxslim", "onnxsim"):
                row.append(f"{secs(peer) / secs('onnxc'):.2f}x" if secs(peer) and secs("onnxc") else "-")
            for tool in TOOLS:
                row.append("-" if work_mb(tool) is None else f"{work_mb(tool):.0f}")
            speed_rows.append(row)
            counts = [node_count(source)] + [
                node_count(Path(tmp) / f"{name}.{tool}.onnx") if "error" not in best[tool] else None for tool in TOOLS
            ]
            node_rows.append([name, *("-" if c is None else str(c) for c in counts)])
            model = load(source)
            feeds = random_feeds(model, resolve_input_shapes(model), seed=0)
            original, optimized = ort_latency(source, Path(tmp) / f"{name}.onnxc.onnx", feeds)
            latency_rows.append([name, f"{original * 1e3:.2f}", f"{optimized * 1e3:.2f}", f"{original / optimized:.2f}x"])
            print(f"done {name}", file=sys.stderr)
    print("load + optimize + save (s, min of medians), speed-up of onnxc over each peer, work memory (MB over imports)")
    print(table(["model", "onnxc s", "onnxslim s", "onnxsim s", "vs onnxslim", "vs onnxsim", "onnxc MB", "onnxslim MB", "onnxsim MB"], speed_rows))
    print("\nnode count after optimization")
    print(table(["model", "original", "onnxc", "onnxslim", "onnxsim"], node_rows))
    print("\nORT CPU latency, 2 threads (ms, min of medians; >1x = onnxc output faster)")
    print(table(["model", "original ms", "onnxc ms", "speed-up"], latency_rows))


if __name__ == "__main__":
    main()
