"""`onnxc build` and `onnxc compile --build`: exit codes, the summary, and a folder that is
complete or absent."""
from __future__ import annotations

import json

import onnx
import onnx_ir as ir
import pytest
from test_openvino import needs_bf16, offset_model, unconvertible_model

from onnxc import models_zoo
from onnxc.cli import main

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'onnxc[openvino]')")


@pytest.fixture(scope="module")
def resnet_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "resnet.onnx"
    onnx.save(models_zoo.build("resnet50", image=32, width=8), path)
    return path


def entries(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    out = capsys.readouterr().out
    assert "onnxc build model.onnx --target openvino -o model_ov/" in out and "exit codes:" in out


def test_build_writes_ir_and_a_verified_manifest(resnet_path, tmp_path, capsys):
    out = tmp_path / "ov"
    assert main(["build", str(resnet_path), "--target", "openvino", "-o", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"built openvino artifact in {out}" in printed and "precision: f32" in printed
    assert "verification against ORT on 2 generated input sets: matches ORT" in printed
    assert entries(out) == ["artifact.json", "model.bin", "model.xml"]
    assert entries(tmp_path) == ["ov"]  # nothing staged left beside it
    manifest = json.loads((out / "artifact.json").read_text())
    assert manifest["backend"] == "openvino" and manifest["metadata"]["threads"] == 1
    assert manifest["metadata"]["verification"]["passed"] is True
    # A second build replaces the first.
    assert main(["build", str(resnet_path), "--target", "openvino", "-o", str(out), "--no-verify"]) == 0
    assert "not verified (--no-verify)" in capsys.readouterr().out
    assert "verification" not in json.loads((out / "artifact.json").read_text())["metadata"]
    assert entries(tmp_path) == ["ov"]


@pytest.mark.parametrize("argv, message", [
    (["--target", "cuda"], "onnxc: error: unknown target 'cuda'; known targets: "),
    (["--target", "openvino", "--shape", "input=2x3x32x32"], "onnxc: error: shape 2x3x32x32 for input 'input' does not fit"),
    (["--target", "openvino", "--precision", "int4"], "onnxc: error: OpenVINO has no precision 'int4'"),
])
def test_bad_usage_is_exit_2_with_one_line_and_no_folder(resnet_path, tmp_path, capsys, argv, message):
    out = tmp_path / "ov"
    assert main(["build", str(resnet_path), "-o", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert entries(tmp_path) == []


def test_missing_file_and_unconvertible_op_are_exit_2_and_leave_nothing(tmp_path, capsys):
    assert main(["build", str(tmp_path / "nope.onnx"), "--target", "openvino", "-o", str(tmp_path / "ov")]) == 2
    assert capsys.readouterr().err == f"onnxc: error: {tmp_path / 'nope.onnx'}: no such file\n"
    model = tmp_path / "custom.onnx"
    onnx.save(ir.to_proto(unconvertible_model()), model)
    assert main(["build", str(model), "--target", "openvino", "-o", str(tmp_path / "ov")]) == 2
    assert capsys.readouterr().err == ("onnxc: error: OpenVINO cannot convert the model: "
                                      "No conversion rule found for operations: my.ops.Foo\n")
    assert entries(tmp_path) == ["custom.onnx"]


def test_a_folder_that_is_not_a_build_is_left_alone(resnet_path, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    assert main(["build", str(resnet_path), "--target", "openvino", "-o", str(out)]) == 2
    assert "exists and is not an onnxc build folder" in capsys.readouterr().err
    assert entries(out) == ["notes.txt"]


def test_compile_then_build_in_one_go(resnet_path, tmp_path, capsys):
    out, folder = tmp_path / "opt.onnx", tmp_path / "ov"
    assert main(["compile", str(resnet_path), "-o", str(out), "--target", "openvino", "--build", str(folder),
                 "--no-progress", "--no-speed-check"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "matches ORT" in printed
    assert entries(folder) == ["artifact.json", "model.bin", "model.xml"]
    # A target without a lowerer is refused before compiling: no output at all.
    assert main(["compile", str(resnet_path), "-o", str(tmp_path / "t.onnx"), "--target", "tvm",
                 "--build", str(tmp_path / "t")]) == 2
    assert not (tmp_path / "t.onnx").exists() and not (tmp_path / "t").exists()


def test_an_artifact_that_cannot_run_here_is_built_and_said_to_be_unverified(resnet_path, tmp_path, capsys):
    """A TensorRT engine is built without a GPU (tensorrt_rtx), but running it needs one."""
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx (the tensorrt-rtx extra) is not installed")
    from onnxc.backends.tensorrt import TensorRtBackend

    if TensorRtBackend().can_run()[0]:
        pytest.skip("this machine can run TensorRT engines, so the build is verified")
    out = tmp_path / "trt"
    assert main(["build", str(resnet_path), "--target", "tensorrt", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "not verified (running a TensorRT engine needs an NVIDIA GPU" in printed
    assert (out / "model.engine").stat().st_size > 0
    assert "needs an NVIDIA GPU" in json.loads((out / "artifact.json").read_text())["metadata"]["verification"]["skipped"]


@needs_bf16
def test_a_mismatching_build_names_the_diverging_op_in_the_summary_and_manifest(tmp_path, capsys):
    path = tmp_path / "offset.onnx"
    ir.save(offset_model(), path)
    out = tmp_path / "ov"
    assert main(["build", str(path), "--target", "openvino", "-o", str(out), "--precision", "bf16", "--threads", "1"]) == 1
    printed = capsys.readouterr().out
    assert "DOES NOT match ORT" in printed and "\n  first diverging op: Sub 'remove_offset' -> 'd' (" in printed, printed
    divergence = json.loads((out / "artifact.json").read_text())["metadata"]["verification"]["divergence"]
    assert (divergence["cause"], divergence["node"], divergence["value"]) == ("op", "remove_offset", "d")
