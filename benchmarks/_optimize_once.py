"""Optimize one model with one tool in a child process, and report its figures.

The benchmarks call ``run_in_child`` (or ``best_of_rounds``, which interleaves tools over rounds); the child runs this file as
``python _optimize_once.py TOOL IN OUT REPEATS`` and prints JSON. Times cover load + optimize + save
(imports excluded); peak RSS is the process's, and ``rss_after_import`` is what the imports
alone cost, so the difference is the work's own memory.
"""
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

import _baseline


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def optimize_onnxc(source: str, target: str) -> None:
    import onnxc

    model = onnxc.load(source)
    onnxc.compile(model)
    onnxc.save(model, target)


def optimize_onnxslim(source: str, target: str) -> None:
    import onnx
    import onnxslim

    onnx.save(onnxslim.slim(source), target)


def optimize_onnxsim(source: str, target: str) -> None:
    import onnx
    import onnxsim

    model, _ = onnxsim.simplify(onnx.load(source), check_n=0)
    onnx.save(model, target)


def calibrate_onnxc(source: str, target: str) -> None:
    """Not an optimization: the calibration a quantizing user pays (statistics of every Conv/Gemm/MatMul
    input over CALIBRATION_INPUTS seeded inputs, then entropy thresholds); ``target`` is unused."""
    import onnx_ir as ir

    import onnxc
    from onnxc.calibration import collect_statistics, compute_thresholds
    from onnxc.inputs import random_feeds, resolve_input_shapes

    model = onnxc.load(source)
    tensors = sorted({node.inputs[0].name for node in ir.traversal.RecursiveGraphIterator(model.graph)
                      if node.op_type in ("Conv", "Gemm", "MatMul") and node.inputs and node.inputs[0] is not None})
    shapes = resolve_input_shapes(model, {})
    feeds = [random_feeds(model, shapes, seed=seed) for seed in range(CALIBRATION_INPUTS)]
    compute_thresholds(collect_statistics(model, tensors, feeds), method="entropy")


CALIBRATION_INPUTS = 32
TOOLS = {"onnxc": optimize_onnxc, "onnxslim": optimize_onnxslim, "onnxsim": optimize_onnxsim,
         "onnxc-calibrate": calibrate_onnxc}


def run_in_child(tool: str, source: Path, target: Path, repeats: int) -> dict:
    """Figures of one tool on one model, measured in a fresh process: {"seconds", "peak_rss", ...} or {"error"}.

    ``tool`` may be ``onnxc@REV`` from ``_baseline.install``: onnxc as that commit had it.
    """
    child_tool, environment = _baseline.child_environment(tool)
    result = subprocess.run([sys.executable, __file__, child_tool, str(source), str(target), str(repeats)],
                            capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1][:120]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def best_of_rounds(tools: tuple[str, ...], source: Path, outputs: dict[str, Path], rounds: int, repeats: int) -> dict[str, dict]:
    """Each tool's figures from its fastest round, the tools interleaved round by round.

    A tool that fails in any round keeps its error: a tool that fails sometimes is not fast.
    """
    best: dict[str, dict] = {}
    for _ in range(rounds):
        for tool in tools:
            figures = run_in_child(tool, source, outputs[tool], repeats)
            if "error" in figures:
                best[tool] = figures
            elif "error" not in best.get(tool, {}) and figures["seconds"] < best.get(tool, {}).get("seconds", float("inf")):
                best[tool] = figures
    return best


def main() -> None:
    tool, source, target, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    __import__({"onnxc": "onnxc.passes", "onnxc-calibrate": "onnxc.calibration", "onnxslim": "onnxslim",
                "onnxsim": "onnxsim"}[tool])
    import onnx  # noqa: F401 - every tool imports it; keep it out of the timing

    rss_after_import = psutil.Process().memory_info().rss
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        TOOLS[tool](source, target)
        times.append(time.perf_counter() - start)
    print(json.dumps({
        "seconds": statistics.median(times),
        "peak_rss": peak_rss_bytes(),
        "rss_after_import": rss_after_import,
    }))


if __name__ == "__main__":
    main()
