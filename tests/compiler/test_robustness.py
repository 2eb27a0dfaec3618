"""Bad input gets one clear line and exit code 2: no traceback, no partial output, input untouched."""
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

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


def _bad_tensor_model(tensor: onnx.TensorProto) -> onnx.ModelProto:
    model = _small_model()
    model.graph.initializer[0].CopyFrom(tensor)
    return model


def _raw_tensor(data_type: int, dims: list, nbytes: int) -> onnx.TensorProto:
    tensor = TensorProto(name="w", data_type=data_type, dims=dims)
    tensor.raw_data = b"\0" * nbytes
    return tensor


def _in_constant(tensor: onnx.TensorProto) -> onnx.ModelProto:
    model = _small_model()
    del model.graph.initializer[:]
    model.graph.node.insert(0, helper.make_node("Constant", [], ["w"], value=tensor))
    return model


def _in_subgraph(tensor: onnx.TensorProto) -> onnx.ModelProto:
    model = _small_model()
    tensor.name = "w"
    branch = helper.make_graph([helper.make_node("Identity", ["w"], ["b"])], "branch", [],
                               [helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])], [tensor])
    model.graph.node[0].input[1] = "c"
    model.graph.node.insert(0, helper.make_node("If", ["cond"], ["c"], then_branch=branch, else_branch=branch))
    model.graph.input.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
    return model


def _typed(data_type, dims, field, values):
    tensor = TensorProto(name="w", data_type=data_type, dims=dims)
    getattr(tensor, field).extend(values)
    return tensor


# Each of these passed `inspect` (exit 0) or ended in an internal error, a hang or an invalid output
# before tensors were validated at load: the large ones (> 1 KiB) are kept out of the ONNX checker.
BAD_TENSORS = {
    "negative dim, large": (_bad_tensor_model, _raw_tensor(TensorProto.FLOAT, [-1, 4], 2048), "negative dimension"),
    "dtype 0, large": (_bad_tensor_model, _raw_tensor(0, [512], 2048), "data type 0"),
    "dtype 999, large": (_bad_tensor_model, _raw_tensor(999, [512], 2048), "data type 999"),
    "huge dims": (_bad_tensor_model, _raw_tensor(TensorProto.FLOAT, [2**40, 2**20], 2048), "more elements"),
    "raw_data too long": (_bad_tensor_model, _raw_tensor(TensorProto.FLOAT, [4], 2048), "2048 bytes of data"),
    "raw_data too short": (_bad_tensor_model, _raw_tensor(TensorProto.FLOAT, [1024], 2048), "need 4096"),
    "float_data too long": (_bad_tensor_model, _typed(TensorProto.FLOAT, [4], "float_data", [0.0] * 600), "600 values"),
    "wrong typed field": (_bad_tensor_model, _typed(TensorProto.FLOAT, [4], "int64_data", [0] * 4), "int64_data"),
    "int4 packed length": (_bad_tensor_model, _raw_tensor(TensorProto.INT4, [5], 2), "need 3"),
    "string in raw_data": (_bad_tensor_model, _raw_tensor(TensorProto.STRING, [4], 2400), "strings belong in string_data"),
    "constant, negative dim": (_in_constant, _raw_tensor(TensorProto.FLOAT, [4, -1], 2048), "negative dimension"),
    "constant, bad length": (_in_constant, _raw_tensor(TensorProto.FLOAT, [4], 2000), "2000 bytes"),
    "subgraph initializer": (_in_subgraph, _raw_tensor(TensorProto.FLOAT, [4], 4000), "4000 bytes"),
}


@pytest.mark.parametrize("case", BAD_TENSORS)
def test_tensors_whose_type_shape_and_data_disagree_are_refused_at_load(tmp_path, case, capsys):
    build, tensor, message = BAD_TENSORS[case]
    path = tmp_path / "bad.onnx"
    path.write_bytes(build(tensor).SerializeToString())
    for command in (["inspect", str(path)], ["compile", str(path), "-o", str(tmp_path / "o.onnx"), "--no-progress"]):
        code, err = _run_cli(command, capsys)
        assert code == 2 and err.count("\n") == 1 and message in err, (command[0], err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_a_valid_int4_constant_and_an_empty_tensor_still_load(tmp_path):
    model = _in_constant(_raw_tensor(TensorProto.INT4, [5], 3))
    model.opset_import[0].version = 21  # the first opset whose Constant and Identity take int4
    model.graph.node[1].op_type = "Identity"
    del model.graph.node[1].input[1:]
    model.graph.node[1].input[0] = "w"
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.INT4, [5]))
    model.graph.ClearField("input")
    empty = TensorProto(name="e", data_type=TensorProto.FLOAT, dims=[0, 3])
    model.graph.initializer.append(empty)
    path = tmp_path / "ok.onnx"
    path.write_bytes(model.SerializeToString())
    loaded = onnxc.load(path)
    assert loaded.graph.initializers["e"].const_value.shape.dims == (0, 3)


def _external_data_file(tmp_path, entries: dict, data: bytes = b"\0" * 16) -> "os.PathLike":
    model = _small_model()
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in entries.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    (tmp_path / "w.bin").write_bytes(data)
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("entries, data, message", [
    ({"location": "w\0.bin"}, b"\0" * 16, "NUL"),
    ({"location": "w.bin", "offset": "abc"}, b"\0" * 16, "offset 'abc'"),
    ({"location": "w.bin", "offset": "-4"}, b"\0" * 16, "offset '-4'"),
    ({"location": "w.bin", "length": "1e3"}, b"\0" * 16, "length '1e3'"),
    ({"location": "w.bin", "length": "32"}, b"\0" * 64, "does not match the 16 bytes"),
    ({"location": "w.bin"}, b"\0" * 8, "too short (8 bytes, needs 16)"),
    ({"location": "w.bin", "offset": "4"}, b"\0" * 16, "too short (16 bytes, needs 20)"),
    ({"location": "x" * 5000}, b"", "cannot open external data"),
])
def test_bad_external_data_entries_are_one_line_errors(tmp_path, entries, data, message, capsys):
    path = _external_data_file(tmp_path, entries, data)
    code, err = _run_cli(["compile", str(path), "-o", str(tmp_path / "o.onnx"), "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("marker", [b"NODENAME", b"STRATTR", b"DOCSTRING"])
def test_text_that_is_not_utf8_is_refused_at_load(tmp_path, marker, capsys):
    model = _small_model()
    model.graph.node[0].name = "NODENAME"
    model.graph.doc_string = "DOCSTRING"
    model.graph.node.append(helper.make_node("Constant", [], ["s"], value_string="STRATTR"))
    model.graph.output.append(helper.make_tensor_value_info("s", TensorProto.STRING, []))
    data = model.SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(data.replace(marker, marker[:3] + b"\xac" + marker[4:]))
    for command in (["inspect", str(path)], ["compile", str(path), "-o", str(tmp_path / "o.onnx")]):
        code, err = _run_cli(command, capsys)
        assert code == 2 and err.count("\n") == 1 and "not valid UTF-8" in err, err
    assert not (tmp_path / "o.onnx").exists()


def test_a_model_without_outputs_is_refused(tmp_path, capsys):
    model = _small_model()
    model.graph.ClearField("output")
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    code, err = _run_cli(["compile", str(path), "-o", str(tmp_path / "o.onnx")], capsys)
    assert code == 2 and err.count("\n") == 1 and "no outputs" in err
    assert not (tmp_path / "o.onnx").exists()


def test_an_undefined_input_gives_exactly_one_stderr_line(tmp_path):
    # A subprocess: in-process, pytest's log capture would hide onnx_ir's logged complaint.
    model = _small_model()
    model.graph.node[0].input[1] = "ghost"
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    result = subprocess.run([sys.executable, "-m", "onnxc", "compile", str(path), "-o", str(tmp_path / "o.onnx")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("onnxc: error:") and "ghost" in result.stderr


def test_varint_refuses_negative_lengths():
    # In a subprocess with a timeout: the old encoder looped forever on a negative number.
    code = "import onnxc.io as io; print(io._varint(300).hex()); io._varint(-1)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout == "ac02\n" and "ValueError" in result.stderr and "negative" in result.stderr


def _plugin(tmp_path, name: str, body: str) -> str:
    """A plugin file registering pass ``name`` whose body runs on the model (names are unique per test)."""
    plugin = tmp_path / f"robustness_{name.replace('-', '_')}.py"
    plugin.write_text(
        "import onnxc\n"
        f"@onnxc.register_pass(name={name!r})\n"
        "def run(model):\n"
        "    '''A test pass.'''\n"
        + textwrap.indent(textwrap.dedent(body), "    ")
    )
    return str(plugin)


def test_a_bug_inside_a_pass_is_an_internal_error_naming_the_pass(good_model, tmp_path, capsys):
    plugin = _plugin(tmp_path, "test-robust-typeerror", "return len(3)\n")
    code, err = _run_cli(["compile", str(good_model), "-o", str(tmp_path / "o.onnx"), "--plugin", plugin,
                          "--passes", "test-robust-typeerror", "--no-progress"], capsys)
    assert code == 3 and err.count("\n") == 1
    assert err.startswith("onnxc: internal error in pass 'test-robust-typeerror': TypeError: ")
    assert "(rerun with --debug" in err and not (tmp_path / "o.onnx").exists()
    code, err = _run_cli(["--debug", "compile", str(good_model), "-o", str(tmp_path / "o.onnx"), "--plugin", plugin,
                          "--passes", "test-robust-typeerror", "--no-progress"], capsys)
    assert code == 3 and "Traceback" in err and "len(3)" in err


def test_a_user_error_raised_inside_a_pass_stays_exit_2(good_model, tmp_path, capsys):
    plugin = _plugin(tmp_path, "test-robust-usererror",
                     "raise onnxc.errors.PipelineError('this model needs option k')\n")
    code, err = _run_cli(["compile", str(good_model), "-o", str(tmp_path / "o.onnx"), "--plugin", plugin,
                          "--passes", "test-robust-usererror", "--no-progress"], capsys)
    assert code == 2 and err == "onnxc: error: this model needs option k\n"


def test_library_warnings_and_logs_stay_off_stderr(good_model, tmp_path):
    # A subprocess: in-process, pytest captures logging and warnings itself.
    plugin = _plugin(tmp_path, "test-robust-noisy", """\
        import logging, warnings
        logging.getLogger("onnx_ir").warning("library noise")
        warnings.warn("deprecated thing")
        logging.getLogger("onnxc.passes.noisy").warning("a warning onnxc means to give")
        return False
    """)
    command = [sys.executable, "-m", "onnxc", "compile", str(good_model), "-o", str(tmp_path / "o.onnx"),
               "--plugin", plugin, "--passes", "test-robust-noisy", "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "onnxc: warning: a warning onnxc means to give\n", result.stderr
    debug = subprocess.run(command[:3] + ["--debug"] + command[3:], capture_output=True, text=True, timeout=120)
    assert "library noise" in debug.stderr and "deprecated thing" in debug.stderr


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
@pytest.mark.parametrize("external", ["never", "always"])
def test_outputs_get_the_usual_permissions(good_model, tmp_path, umask, external):
    previous = os.umask(umask)
    try:
        out, report = tmp_path / "out" / "o.onnx", tmp_path / "out" / "report.json"
        assert main(["compile", str(good_model), "-o", str(out), "--report", str(report), "--no-progress",
                     "--external-data", external]) == 0
    finally:
        os.umask(previous)
    written = sorted(p.name for p in out.parent.iterdir())
    assert written == (["o.onnx", "o.onnx.data", "report.json"] if external == "always" else ["o.onnx", "report.json"])
    for name in written:
        assert (out.parent / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


@pytest.mark.parametrize("external", ["never", "always"])
def test_sigterm_while_saving_leaves_no_staged_file(good_model, tmp_path, external):
    # The plugin slows the save down and says when the staged output exists; SIGTERM then arrives mid-save.
    ready = tmp_path / "ready"
    plugin = tmp_path / "robustness_slow_save.py"
    plugin.write_text(textwrap.dedent(f"""\
        import time, onnxc.io
        def _slow(write):
            def slow(*args, **kwargs):
                result = write(*args, **kwargs)
                open({str(ready)!r}, "w").close()
                time.sleep(60)
                return result
            return slow
        onnxc.io._write_single_file = _slow(onnxc.io._write_single_file)
        onnxc.io.ir.save = _slow(onnxc.io.ir.save)
    """))
    out_dir = tmp_path / "out"
    command = [sys.executable, "-m", "onnxc", "compile", str(good_model), "-o", str(out_dir / "o.onnx"),
               "--plugin", str(plugin), "--no-progress", "--external-data", external]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert ready.exists(), process.communicate()[1] if process.poll() is not None else "never got to the save"
        assert any(p.name.endswith(".tmp") for p in out_dir.iterdir()), "the staged output exists mid-save"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 143 and err == "onnxc: terminated\n"
    assert list(out_dir.iterdir()) == []


def _mistyped_add() -> onnx.ModelProto:
    model = _small_model()
    model.graph.initializer[0].CopyFrom(helper.make_tensor("w", TensorProto.INT32, [4], [1, 2, 3, 4]))
    return model


def _valueless_constant() -> onnx.ModelProto:
    model = _small_model()
    del model.graph.initializer[:]
    model.graph.node.insert(0, helper.make_node("Constant", [], ["w"]))
    return model


def _future_opset() -> onnx.ModelProto:
    model = _small_model()
    model.opset_import[0].version = 99
    return model


@pytest.mark.parametrize("build, message", [
    (_mistyped_add, "inconsistent type tensor(int32)"),
    (_valueless_constant, "Constant"),
    (_future_opset, "opset 99 does not exist"),
])
def test_graphs_onnx_runtime_cannot_load_are_refused_at_load(tmp_path, build, message, capsys):
    # Each passed the plain checker, compiled with exit 0, and gave an output ORT refuses to load.
    path = tmp_path / "m.onnx"
    path.write_bytes(build().SerializeToString())
    code, err = _run_cli(["compile", str(path), "-o", str(tmp_path / "o.onnx"), "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o.onnx").exists()
