"""Meta-schedule tuning for TVM builds, with the tuning log kept for the next build.

Untuned TVM kernels are plain loop nests (~100x slower than ONNX Runtime on convolutions); tuning
searches schedules for each kernel by building and timing candidates on this machine. The
records land in ``cache_dir/tvm-tuning/<key>/`` where the key hashes the Relax module, the target
and the trial count, so building the same model again reuses them instead of tuning again.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import psutil

from onnxc.progress import progress_bar

# Candidates that take longer to compile than this are dropped; big fused kernels on two busy
# cores need minutes (the 30 s default rejected most of ResNet's).
BUILD_TIMEOUT_S = 300
COMPLETE = "complete"
# Candidates measured per task and round, at most: small rounds spread a small budget over every
# kernel (with meta-schedule's 64, 256 trials would tune four of ResNet-18's kernels and leave the rest).
TRIALS_PER_ROUND = 16
# How the trials are spent: in the cache key, so records tuned another way are not reused.
SCHEME = f"every kernel first, up to {TRIALS_PER_ROUND} a round"


def tuned_build(module, target: dict[str, Any], trials: int, cache_dir: Path | None):
    """``module`` compiled for ``target`` with kernels tuned over ``trials`` measured candidates
    in all (tuning skipped when ``cache_dir`` already holds this exact tuning)."""
    import tvm
    import tvm_ffi

    # Meta-schedule sizes its search to the cores it may use.
    target = {**target, "num-cores": psutil.cpu_count(logical=False) or 1}
    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="onnxc-tvm-tuning-") as work_dir:
            return _tune_and_compile(module, tvm.target.Target(target), trials, Path(work_dir))
    key = hashlib.sha256(json.dumps([str(tvm_ffi.structural_hash(module)), target, trials, SCHEME],
                                    sort_keys=True).encode())
    work_dir = Path(cache_dir) / "tvm-tuning" / key.hexdigest()[:16]
    work_dir.mkdir(parents=True, exist_ok=True)
    return _tune_and_compile(module, tvm.target.Target(target), trials, work_dir)


def _tune_and_compile(module, target, trials: int, work_dir: Path):
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    # Tasks are the fused TIR kernels: legalize and fuse first, as relax's tuning pipeline does.
    with target:
        module = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                           relax.transform.CanonicalizeBindings(),
                                           relax.get_pipeline("zero")])(module)
    if not (work_dir / COMPLETE).exists():
        tasks, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            ms.relax_integration.extract_tasks(module, target), str(work_dir), seed=0)
        with progress_bar(total=trials, desc="tuning TVM kernels", unit="trial") as bar:
            ms.tune_tasks(tasks=tasks, task_weights=weights, work_dir=str(work_dir), max_trials_global=trials,
                          num_trials_per_iter=trials_per_round(trials, len(tasks)),
                          builder=ms.builder.LocalBuilder(timeout_sec=BUILD_TIMEOUT_S),
                          measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), _progress(bar)])
        (work_dir / COMPLETE).write_text(f"{trials} trials\n")
    # Applied as relax's own tuning pipeline does: meta_schedule's compile_relax found none of the
    # records here (every kernel fell back to its untuned schedule).
    with target:
        module = relax.transform.MetaScheduleApplyDatabase(work_dir=str(work_dir))(module)
    return tvm.compile(module, target=target)


def trials_per_round(trials: int, tasks: int) -> int:
    """Candidates per task and round such that the first round reaches every task: a kernel left
    without a record runs untuned, single-threaded and scalar (two such convolutions took 43 of
    ResNet-18's 60 ms when 16 a round left 3 of its 19 kernels out of 256 trials)."""
    return max(1, min(TRIALS_PER_ROUND, trials // max(tasks, 1)))


def _progress(bar):
    """A measure callback advancing ``bar`` by each batch of measured candidates."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class Progress(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
            bar.update(len(measure_candidates))

    return Progress()
