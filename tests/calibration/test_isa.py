"""The baseline (non-AVX2) kernels give bit-identical results to the AVX2 ones.

The kernel variant is picked once, when the module loads, so the baseline run happens in a
subprocess with ONNXC_NATIVE_ISA=baseline; on a CPU without AVX2 both runs take the baseline path
and the test still checks determinism across processes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from onnxc import _native

PROBE = r"""
import hashlib, json
import numpy as np
from onnxc import _native
from onnxc.calibration import HistogramAccumulator, threshold

rng = np.random.default_rng(21)
x = np.concatenate([rng.standard_normal(70_001), rng.laplace(size=30_000) * 9 - 2,
                    [np.nan, np.inf, -np.inf, 0.0, -0.0]]).astype(np.float32)
digests, thresholds = {}, {}
for name, config in {"abs": dict(), "signed": dict(symmetric=False), "abs-fixed": dict(range=(0.0, 7.5)),
                     "signed-fixed": dict(symmetric=False, range=(-6.0, 4.0))}.items():
    acc = HistogramAccumulator(2048, **config)
    for part in np.array_split(x, 3):
        acc.update(part, threads=2)
    digests[name] = hashlib.sha256(acc.to_bytes()).hexdigest()
    if config.get("symmetric", True):
        thresholds[name] = [threshold(acc, m, bits=b) for m in ("entropy", "mse", "percentile") for b in (4, 8)]
print(json.dumps({"isa": _native.isa(), "digests": digests, "thresholds": thresholds}))
"""


def run_probe(isa: str | None) -> dict:
    env = dict(os.environ)
    env.pop("ONNXC_NATIVE_ISA", None)
    if isa:
        env["ONNXC_NATIVE_ISA"] = isa
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def test_baseline_kernels_match_the_default_ones():
    baseline = run_probe("baseline")
    default = run_probe(None)
    assert baseline["isa"] == "baseline"
    assert default["isa"] == _native.isa()
    assert baseline["digests"] == default["digests"]
    assert baseline["thresholds"] == default["thresholds"]
    assert len(set(baseline["digests"].values())) == 4
    assert all(np.isfinite(t) and t > 0 for ts in baseline["thresholds"].values() for t in ts)
