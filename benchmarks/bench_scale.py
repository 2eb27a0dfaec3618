"""Scale: default pipeline on a 30k-node graph (vs onnxslim), and peak memory on a >2 GB model.

    python benchmarks/bench_scale.py               # both
    python benchmarks/bench_scale.py --skip-large  # only the deep graph
    python benchmarks/bench_scale.py --skip-large --against HEAD~3 --rounds 3  # and vs an earlier commit
    python benchmarks/bench_scale.py --skip-large --skip-onnxslim --against HEAD~3 --rounds 7

``--against REV`` installs that commit's onnxc beside the current one (benchmarks/_baseline.py) and
times both on the deep graph in the same run, interleaved; the best round of each is compared.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

from onnxc.models_zoo.synthetic import deep_graph, large_external_model

import _baseline
from _optimize_once import best_of_rounds


def deep_graph_figures(tmp: Path, blocks: int, rounds: int, baseline: str | None, peer: bool) -> None:
    source = tmp / "deep.onnx"
    onnx.save(deep_graph(blocks), str(source))
    nodes = len(onnx.load(str(source)).graph.node)
    tools = ("onnxc", *(["onnxslim"] if peer else []), *([baseline] if baseline else []))
    best = best_of_rounds(tools, source, {tool: tmp / f"deep.{tool}.onnx" for tool in tools}, rounds, 1)
    results = {"onnxslim": None, **{tool: best[tool].get("seconds") for tool in tools}}
    after = len(onnx.load(str(tmp / "deep.onnxc.onnx")).graph.node)
    slim = f"{results['onnxslim']:.2f} s" if results["onnxslim"] else ("failed" if peer else "not run")
    ratio = f"{results['onnxslim'] / results['onnxc']:.2f}x" if results["onnxslim"] else "-"
    print(f"deep graph: {nodes} nodes -> {after}; onnxc load+default+save {results['onnxc']:.2f} s, onnxslim {slim} (onnxc speed-up {ratio})")
    if baseline:
        before = results[baseline]
        versus = f"{before:.2f} s, now/before {results['onnxc'] / before:.2f}" if before else f"failed: {best[baseline]['error']}"
        print(f"deep graph: {baseline} load+default+save {versus} (< 1: faster than before)")


def large_model_figures(tmp: Path, size: int) -> None:
    started = time.perf_counter()
    (tmp / "in").mkdir()
    source = large_external_model(tmp / "in" / "big.onnx", size)
    print(f"large model: wrote {size / 1e9:.2f} GB of external data in {time.perf_counter() - started:.1f} s")
    out = tmp / "out" / "big.onnx"
    started = time.perf_counter()
    child = subprocess.run([sys.executable, "-m", "onnxc", "compile", str(source), "-o", str(out), "--no-progress"],
                           capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        print(f"large model: onnxc failed: {child.stderr.strip()}")
        return
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(f"large model: onnxc compile {seconds:.1f} s, peak RSS {peak / 1e9:.2f} GB = {peak / size:.2f}x the model size (limit 2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=2500, help="12-node blocks in the deep graph (default 2500 = 30k nodes)")
    parser.add_argument("--large-bytes", type=int, default=2_200_000_000, help="weight bytes of the large model")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--against", metavar="REV", help="also time the deep graph with onnxc as git commit REV had it")
    parser.add_argument("--skip-onnxslim", action="store_true", help="do not time onnxslim (minutes on 30k nodes)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds on the deep graph, best kept (default 1)")
    args = parser.parse_args()
    baseline = f"onnxc@{_baseline.install(args.against)}" if args.against else None
    with tempfile.TemporaryDirectory(prefix="onnxc-scale-") as tmp:
        deep_graph_figures(Path(tmp), args.blocks, args.rounds, baseline, not args.skip_onnxslim)
        if not args.skip_large:
            large_model_figures(Path(tmp), args.large_bytes)


if __name__ == "__main__":
    main()
