"""TVM aarch64 NEON builds, run under qemu-user with an arm64 sysroot and compared with ORT on x86.

.ci/arm_sysroot.sh prepares the cross compiler, qemu-user-static and the sysroot (Debian's arm64
python3.11 with the aarch64 tvm, tvm-ffi and numpy wheels); without them these tests skip.
Float within 1e-3 relative of ORT; INT8 within one quantization step of the head's input.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_tvm import conv_model, head_step, images, quantized

from onnxc.backends.base import Artifact
from onnxc.errors import OnnxcError
from onnxc.runtime import OrtRunner

pytest.importorskip("tvm", reason="TVM is not installed (pip install 'onnxc[tvm]')")

from onnxc.backends.tvm import TvmArmNeonBackend, UntunedBuildWarning, host_arch  # noqa: E402

SYSROOT = Path(os.environ.get("ONNXC_ARM_SYSROOT", Path.home() / ".cache/onnxc/arm64-sysroot"))
QEMU = "qemu-aarch64-static"

pytestmark = [
    pytest.mark.arm_emulation,
    pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None,
                       reason="no aarch64 cross compiler: run .ci/arm_sysroot.sh"),
]
needs_sysroot = pytest.mark.skipif(not (SYSROOT / ".complete").exists() or shutil.which(QEMU) is None,
                                   reason=f"no arm64 sysroot at {SYSROOT} or no {QEMU}: run .ci/arm_sysroot.sh")

# One emulated Python runs every build: starting it (loading TVM's runtime) is most of the cost.
DRIVER = """
import sys
sys.path.insert(0, sys.argv[1])
from run_model import main
for build in sys.argv[1:]:
    main([build, build + "/inputs.npz", build + "/outputs.npz"])
"""


def build(model, directory: Path) -> Artifact:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedBuildWarning)
        return TvmArmNeonBackend().lower(model, directory)


def run_under_qemu(builds: dict[Path, dict[str, np.ndarray]]) -> dict[Path, dict[str, np.ndarray]]:
    for directory, feed in builds.items():
        np.savez(directory / "inputs.npz", **feed)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(SYSROOT / "site-packages")}
    completed = subprocess.run([QEMU, "-L", str(SYSROOT), str(SYSROOT / "usr/bin/python3.11"), "-c", DRIVER,
                                *map(str, builds)], env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    outputs = {}
    for directory in builds:
        with np.load(directory / "outputs.npz") as data:
            outputs[directory] = {name: data[name] for name in data.files}
    return outputs


@needs_sysroot
@pytest.mark.slow
def test_neon_builds_match_ort_under_qemu(tmp_path):
    model = conv_model()
    int8 = quantized(model, images(8, 16))
    feed = images(9, 16)[8]
    fp32_build, int8_build = build(model, tmp_path / "fp32"), build(int8, tmp_path / "int8")
    assert fp32_build.metadata["target"] == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
    assert int8_build.metadata["target"]["mattr"] == ["+neon", "+dotprod"]
    assert int8_build.metadata["lowered_ops"] == {"conv2d uint8 x int8 -> int32": 2, "matmul uint8 x int8 -> int32": 1}
    header = (tmp_path / "fp32" / "model.so").read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64

    outputs = run_under_qemu({tmp_path / "fp32": feed, tmp_path / "int8": feed})
    expected = OrtRunner(model).run(feed)["logits"]
    np.testing.assert_allclose(outputs[tmp_path / "fp32"]["logits"], expected, rtol=1e-3,
                               atol=1e-3 * np.abs(expected).max())
    expected = OrtRunner(int8).run(feed)["logits"]
    assert np.abs(outputs[tmp_path / "int8"]["logits"] - expected).max() <= head_step(int8, "logits")


@pytest.mark.skipif(host_arch() != "x86_64", reason="checks the refusal on an x86 machine")
def test_an_aarch64_build_is_refused_on_x86_with_how_to_run_it(tmp_path):
    artifact = build(conv_model(), tmp_path)
    assert artifact.metadata["arch"] == "aarch64"
    with pytest.raises(OnnxcError, match=r"is a TVM build for aarch64; this machine is x86_64: run it there: "
                                         r"python3 run_model.py BUILD_DIR inputs.npz outputs.npz$"):
        TvmArmNeonBackend().load(Artifact.read(tmp_path))


@pytest.mark.skipif(host_arch() != "x86_64", reason="checks the refusal on an x86 machine")
def test_onnxc_build_writes_an_aarch64_build_and_says_it_is_not_verified_here(tmp_path, capsys):
    import onnx
    import onnx_ir as ir

    from onnxc.cli import main

    source = tmp_path / "model.onnx"
    onnx.save(ir.to_proto(conv_model()), source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedBuildWarning)
        assert main(["build", str(source), "--target", "tvm-arm-neon", "-o", str(tmp_path / "arm")]) == 0
    assert "not verified (this artifact is a TVM build for aarch64; this machine is x86_64" in capsys.readouterr().out
    assert (tmp_path / "arm" / "model.so").stat().st_size > 0
