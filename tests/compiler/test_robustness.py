"""Bad input gets one clear line and exit code 2: no traceback, no partial output, input untouched."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxc
from onnxc.cli import main
from onnxc.errors import InvalidModelError, ModelLoadError


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _small_model() -> onnx.ModelProto:
    w = helper.make_tensor("w", TensorProto.FLOAT, [4], np.arange(4, dtype=np.float32))
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _external_model(tmp_path, location: str) -> "os.PathLike":
    model = _small_model()
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.fixture
def good_model(tmp_path):
    path = tmp_path / "good.onnx"
    path.write_bytes(_small_model().SerializeToString())
    return path


def test_truncated_file(tmp_path, good_model, capsys):
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(good_model.read_bytes()[:-7])
    before = _digest(bad)
    code, err = _run_cli(["compile", str(bad), "-o", str(tmp_path / "out.onnx")], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err and "truncated.onnx" in err
    assert not (tmp_path / "out.onnx").exists()
    assert _digest(bad) == before


@pytest.mark.parametrize("content", [b"", b"hello, this is not a model\n", os.urandom(64), b"\x08\x07"])
def test_garbage_and_empty_files(tmp_path, content, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    code, err = _run_cli(["inspect", str(bad)], capsys)
    assert code == 2 and err.startswith("onnxc: error:") and err.count("\n") == 1


def test_missing_file(tmp_path, capsys):
    code, err = _run_cli(["compile", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o.onnx")], capsys)
    assert code == 2 and "no such file" in err


def test_missing_external_data(tmp_path, capsys):
    path = _external_model(tmp_path, "weights.bin")
    code, err = _run_cli(["compile", str(path), "-o", str(tmp_path / "o.onnx")], capsys)
    assert code == 2 and "not found" in err and "weights.bin" in err
    assert not (tmp_path / "o.onnx").exists()


def test_short_external_data(tmp_path):
    path = _external_model(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    with pytest.raises(ModelLoadError, match="too short"):
        onnxc.load(path)


@pytest.mark.parametrize("location", ["../secret.bin", "sub/../../secret.bin", "/etc/passwd"])
def test_external_data_outside_the_folder_is_refused(tmp_path, location):
    folder = tmp_path / "m"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    path = _external_model(folder, location)
    with pytest.raises(ModelLoadError, match="absolute|escapes"):
        onnxc.load(path)


def test_external_data_through_a_symlink_out_of_the_folder_is_refused(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    (folder / "link.bin").symlink_to(tmp_path / "secret.bin")
    path = _external_model(folder, "link.bin")
    with pytest.raises(ModelLoadError, match="escapes"):
        onnxc.load(path)


def test_graph_failing_the_checker(tmp_path, capsys):
    model = _small_model()
    model.graph.node[0].input[1] = "undefined_value"
    path = tmp_path / "invalid.onnx"
    path.write_bytes(model.SerializeToString())
    code, err = _run_cli(["compile", str(path), "-o", str(tmp_path / "o.onnx")], capsys)
    assert code == 2 and "checker" in err and err.count("\n") == 1


def test_op_unknown_to_onnxruntime(tmp_path, capsys):
    model = _small_model()
    model.graph.node[0].op_type = "FancyAdd"
    model.graph.node[0].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    path = tmp_path / "custom.onnx"
    path.write_bytes(model.SerializeToString())
    before = _digest(path)
    code, err = _run_cli(["compile", str(path), "-o", str(tmp_path / "o.onnx"), "--verify"], capsys)
    assert code == 2 and "ONNX Runtime" in err and "FancyAdd" in err
    assert not (tmp_path / "o.onnx").exists() and _digest(path) == before
    code, err = _run_cli(["run", str(path)], capsys)
    assert code == 2 and err.count("\n") == 1
    with pytest.raises(InvalidModelError):
        onnxc.verify.run_feeds(onnxc.load(path), [{"x": np.zeros((1, 4), np.float32)}])


def test_unknown_pass_and_bad_option(good_model, tmp_path, capsys):
    code, err = _run_cli(["compile", str(good_model), "-o", str(tmp_path / "o.onnx"), "--passes", "default,nope"], capsys)
    assert code == 2 and "unknown pass 'nope'" in err
    code, err = _run_cli(["compile", str(good_model), "-o", str(tmp_path / "o.onnx"), "--passes", "fold-constants(size_limit=big)"], capsys)
    assert code == 2 and "expected an integer" in err
    assert not (tmp_path / "o.onnx").exists()


def test_output_over_the_input_is_refused(good_model, capsys):
    before = _digest(good_model)
    code, err = _run_cli(["compile", str(good_model), "-o", str(good_model)], capsys)
    assert code == 2 and "never overwrites its input" in err
    assert _digest(good_model) == before


def test_failed_save_leaves_no_partial_output(good_model, tmp_path, monkeypatch):
    model = onnxc.load(good_model)
    out = tmp_path / "out.onnx"

    def explode(model, path):
        path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(onnxc.io, "_write_single_file", explode)
    with pytest.raises(OSError):
        onnxc.save(model, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["good.onnx"]


def test_cli_subprocess_prints_no_traceback(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx at all")
    result = subprocess.run([sys.executable, "-m", "onnxc", "compile", str(bad), "-o", str(tmp_path / "o.onnx")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    debug = subprocess.run([sys.executable, "-m", "onnxc", "--debug", "compile", str(bad), "-o", str(tmp_path / "o.onnx")],
                           capture_output=True, text=True)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_same_input_and_options_give_byte_identical_output(good_model, tmp_path):
    for name in ("a.onnx", "b.onnx"):
        assert main(["compile", str(good_model), "-o", str(tmp_path / name), "--no-progress"]) == 0
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
