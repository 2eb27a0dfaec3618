"""Runs the real ``onnxc`` CLI over a batch of fuzz cases, in one process bounded in memory.

``python fuzz_worker.py CASES.json RESULTS.json``: each case names a command line and the files
that must come out of it untouched. The process caps its address space (RLIMIT_AS) before
importing anything heavy and gives each case a wall-clock budget (SIGALRM), so a case that
would hang or eat memory fails alone: the memory as an internal error, the hang as a timeout.
stderr is captured at the file-descriptor level, so what C++ libraries print counts too.
"""
import hashlib
import json
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

MEMORY_LIMIT_BYTES = 3 << 30
CASE_SECONDS = 10


class CaseTimeout(BaseException):
    """Not an Exception: onnxc's own handlers must not turn it into an exit code."""


def _on_alarm(signum, frame):
    raise CaseTimeout


def _digests(paths):
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() if Path(p).is_file() else None for p in paths}


def _check_output(path: str, source: str) -> str | None:
    """None when the written model passes the ONNX checker's full check and ONNX Runtime loads it
    (unless ORT cannot load the input either: a valid opset-1 Add has no ORT kernel), else why not."""
    import onnx
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # its warnings about old opsets would only clutter the test log
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as error:  # noqa: BLE001 - any failure is the finding
        return f"{type(error).__name__}: {str(error).strip()[:300]}"
    try:
        ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - any failure is the finding, if the input did load
        try:
            ort.InferenceSession(source, providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001
            return None
        return f"{type(error).__name__}: {str(error).strip()[:300]}"
    return None


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def run_case(case: dict, main) -> dict:
    before = _digests(case["keep"])
    folder = Path(case["keep"][0]).parent
    files_before = _files(folder)
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(captured.fileno(), 2)
        started = time.perf_counter()
        signal.alarm(CASE_SECONDS)
        try:
            code = main(case["argv"])
        except CaseTimeout:
            code = "timeout"
        finally:
            signal.alarm(0)
            elapsed = time.perf_counter() - started
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        stderr = captured.read().decode("utf-8", "replace")
    output = case.get("output")
    out_dir = Path(output).parent if output else None
    left = sorted(p.name for p in out_dir.iterdir()) if out_dir and out_dir.is_dir() else []
    # Beside the input, nothing may appear (the output folder aside).
    left += sorted(f for f in _files(folder) - files_before if not f.startswith("out"))
    result = {"name": case["name"], "code": code, "stderr": stderr, "seconds": elapsed, "left": left,
              "changed": [p for p, d in _digests(case["keep"]).items() if d != before[p]]}
    if code == 0 and output:
        result["output_problem"] = _check_output(output, case["argv"][1])
    return result


def main() -> None:
    cases_path, results_path = sys.argv[1:3]
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    signal.signal(signal.SIGALRM, _on_alarm)
    from onnxc.cli import main as onnxc_main

    results = []
    for case in json.loads(Path(cases_path).read_text()):
        results.append(run_case(case, onnxc_main))
    Path(results_path).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
