"""benchmarks/corpus.py end to end on CI's small real subset (the models the dev extra installs)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from onnxc.models_zoo import realworld

COMMAND = Path(__file__).resolve().parents[2] / "benchmarks" / "corpus.py"
SUBSET = ["silero-vad-16k", "tashkeel-rawi-v3-int8"]


def _installed(names: list[str]) -> list[str]:
    present = [name for name in names if realworld.locate(name) is not None]
    if not present:
        pytest.skip("; ".join(realworld.missing_reason(name) for name in names))
    return present


def _run(tmp_path: Path, *args: str) -> tuple[list[dict], str]:
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(COMMAND), *args, "--feeds", "2", "--latency-rounds", "0", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text()), done.stdout


@pytest.mark.slow
def test_default_pipeline_over_the_real_subset(tmp_path):
    names = _installed(SUBSET)
    rows, printed = _run(tmp_path, "--passes", "default", "--models", *names)
    assert [row["model"] for row in rows] == names
    for row in rows:
        assert row["status"] in ("ok", "unchanged"), row
        assert row["fidelity"] >= 0.999, row  # a lossless pipeline keeps every decision and map
        assert 0 < row["size_ratio"] <= 1.05 and row["compile_s"] > 0
    assert f"onnxc: {len(names)} models, " in printed and "worst fidelity" in printed
    assert all(name in printed for name in names)


def test_failures_are_rows_not_crashes(tmp_path):
    names = _installed(SUBSET[:1])
    rows, printed = _run(tmp_path, "--passes", "no-such-pass", "--models", *names)
    assert rows[0]["status"] == "error" and "no-such-pass" in rows[0]["reason"]
    assert "1 failed (1 error, 0 bug, 0 timeout)" in printed
    rows, _ = _run(tmp_path, "--passes", "default", "--models", *names, "--timeout", "0.01")
    assert rows[0]["status"] == "timeout"
