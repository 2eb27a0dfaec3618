"""The onnxc command line, end to end on small zoo models."""
import json

import numpy as np
import onnx
import pytest

from onnxc.cli import main


@pytest.fixture(scope="module")
def digits_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "digits.onnx"
    assert main(["zoo", "export", "digits", "-o", str(path)]) == 0
    return path


def test_version_and_help_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and "onnxc 0.1.0" in capsys.readouterr().out
    for command in (["compile"], ["inspect"], ["passes"], ["zoo"], ["run"], ["compare"], ["demo"], []):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        out = capsys.readouterr().out
        assert "examples:" in out and "exit codes:" in out, command


def test_zoo_list_and_export_with_options(tmp_path, capsys):
    assert main(["zoo", "list", "--json"]) == 0
    names = {m["name"] for m in json.loads(capsys.readouterr().out)}
    assert {"resnet18", "resnet50", "mobilenetv2", "bert", "vit-tiny", "yolo", "lstm", "gru", "digits"} <= names
    out = tmp_path / "bert.onnx"
    assert main(["zoo", "export", "bert", "-o", str(out), "--batch", "N", "--opt", "layers=1", "--opt", "hidden=64", "--opt", "heads=2"]) == 0
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert main(["zoo", "export", "nope", "-o", str(out)]) == 2


def test_inspect_text_and_json(digits_path, capsys):
    assert main(["inspect", str(digits_path)]) == 0
    text = capsys.readouterr().out
    assert "Conv" in text and "MACs" in text
    assert main(["inspect", str(digits_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["op_histogram"]["Conv"] == 2 and info["parameters"] > 9000
    assert info["costs"]["total_macs"] > 0


def test_compile_default_with_verify_and_report(digits_path, tmp_path, capsys):
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    assert main(["compile", str(digits_path), "-o", str(out), "--verify", "--report", str(report), "--no-progress"]) == 0
    data = json.loads(report.read_text())
    assert data["after"]["nodes"] < data["before"]["nodes"]
    assert data["error_vs_original"]["max_abs"] < 1e-4
    assert {p["name"] for p in data["passes"]} >= {"fold-batchnorm", "remove-unused"}
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(str(out)).graph.node}


def test_compile_with_recipe_and_plugin(digits_path, tmp_path, capsys):
    plugin = tmp_path / "cli_plugin_passes.py"
    plugin.write_text(
        "import onnxc\n"
        "@onnxc.register_pass(name='test-cli-strip-names')\n"
        "def strip(model):\n"
        "    '''Clear node names.'''\n"
        "    for node in model.graph:\n"
        "        node.name = None\n"
    )
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[[passes]]\nname = "default"\n[[passes]]\nname = "test-cli-strip-names"\n')
    out = tmp_path / "o.onnx"
    assert main(["compile", str(digits_path), "-o", str(out), "--recipe", str(recipe), "--plugin", str(plugin), "--no-progress"]) == 0
    assert all(not n.name for n in onnx.load(str(out)).graph.node)
    assert main(["passes", "--plugin", str(plugin)]) == 0
    assert "test-cli-strip-names" in capsys.readouterr().out


def test_passes_lists_options_and_defaults(capsys):
    assert main(["passes", "--json"]) == 0
    passes = json.loads(capsys.readouterr().out)
    assert {"fold-constants", "fold-batchnorm", "cse", "fuse-layernorm"} <= set(passes)
    assert passes["fuse-gelu"]["options"] and all(p["summary"] for p in passes.values())


def test_run_saves_outputs_and_compare_detects_differences(digits_path, tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    input_name = onnx.load(str(digits_path)).graph.input[0].name
    assert main(["run", str(digits_path), "--input", f"{input_name}=" + str(tmp_path / "x.npy"), "--output-dir", str(tmp_path / "out")]) == 0
    saved = list((tmp_path / "out").glob("*.npy"))
    assert len(saved) == 1 and np.load(saved[0]).shape == (1, 10)

    optimized = tmp_path / "opt.onnx"
    assert main(["compile", str(digits_path), "-o", str(optimized), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["compare", str(digits_path), str(optimized), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["max_abs"] < 1e-4

    broken = onnx.load(str(optimized))
    weight = next(t for t in broken.graph.initializer if len(t.dims) == 4)
    weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * 1.5, weight.name))
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    assert main(["compare", str(digits_path), str(tmp_path / "broken.onnx")]) == 1


def test_an_unknown_target_is_one_error_line_naming_the_known_ones(digits_path, tmp_path, capsys):
    assert main(["compile", str(digits_path), "-o", str(tmp_path / "o.onnx"), "--target", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err == "onnxc: error: unknown target 'cuda'; known targets: onnxruntime, tensorrt, openvino, tvm-x86, tvm-arm-neon\n"
    assert not (tmp_path / "o.onnx").exists()


def test_flags_win_over_the_recipe_in_the_one_context(tmp_path):
    from onnxc.cli import _parser
    from onnxc.cli.settings import compile_settings

    recipe = tmp_path / "recipe.toml"
    recipe.write_text('target = "tensorrt"\nverify = true\n[calibration]\ndata = "calib"\ncache = "c.npz"\nlimit = 4\n'
                      '[input_shapes]\nx = [1, 3]\ny = [2]\n[[passes]]\nname = "default"\n')
    args = _parser().parse_args(["compile", "m.onnx", "-o", "o.onnx", "--recipe", str(recipe), "--target", "openvino",
                                 "--shape", "x=4x3", "--seed", "7", "--no-speed-check"])
    settings = compile_settings(args)
    context = settings.context
    assert context.target == "openvino" and context.input_shapes == {"x": [4, 3], "y": [2]}
    assert context.calibration_data == str(tmp_path / "calib") and context.calibration_cache == tmp_path / "c.npz"
    assert context.calibration_options == {"limit": 4} and context.seed == 7 and not context.check_speed
    assert settings.verify and [spec.name for spec in settings.pipeline] == ["default"]
    args = _parser().parse_args(["compile", "m.onnx", "-o", "o.onnx", "--recipe", str(recipe)])
    assert compile_settings(args).context.target == "tensorrt"


def test_demo_compiles_through_the_compile_driver(tmp_path, capsys, monkeypatch):
    from onnxc import driver

    calls = []
    real = driver.compile_file

    def spy(source, output, pipeline=None, **options):
        calls.append((pipeline, options["verify"]))
        return real(source, output, pipeline, **options)

    monkeypatch.setattr(driver, "compile_file", spy)
    assert main(["demo", "--model", "digits", "--keep", str(tmp_path)]) == 0
    assert calls == [(None, True)]
    assert (tmp_path / "digits.opt.onnx").exists() and "fresh inputs vs original" in capsys.readouterr().out
