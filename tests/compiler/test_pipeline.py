import pytest

from onnxc.driver import build_steps
from onnxc.errors import PipelineError
from onnxc.manager import Group
from onnxc.pipeline import PassSpec, load_recipe, parse_pipeline
from onnxc.registry import create_pass


def test_parse_names_options_and_values():
    specs = parse_pipeline("default, fold-constants(size_limit=64), x(a=1.5,b=true,c='s,t',d=[1,2],e=word)")
    assert specs == [
        PassSpec("default"),
        PassSpec("fold-constants", {"size_limit": 64}),
        PassSpec("x", {"a": 1.5, "b": True, "c": "s,t", "d": [1, 2], "e": "word"}),
    ]


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("a(b=1", "ends early"),
    ("a,,b", "expected a pass name"),
    ("a(b=1,b=2)", "given twice"),
    ("a(=1)", "option name"),
])
def test_parse_errors_are_clear(text, message):
    with pytest.raises(PipelineError, match=message):
        parse_pipeline(text)


def test_default_expands_to_fixed_point_group_then_final_passes():
    steps = build_steps("default,toposort")
    assert isinstance(steps[0], Group) and steps[0].fixed_point
    assert [s.name for s in steps[1:]] == ["infer-shapes", "toposort", "initializer-inputs", "toposort"]
    assert len(steps[0].passes) > 5


def test_unknown_pass_and_option_errors_name_them():
    with pytest.raises(PipelineError, match="unknown pass 'remove-unusd'.*remove-unused"):
        build_steps("remove-unusd")
    with pytest.raises(PipelineError, match="has no option 'bogus'"):
        create_pass("fold-constants", {"bogus": 1})
    with pytest.raises(PipelineError, match="default.*no option"):
        build_steps("default(x=1)")


def test_recipe_reads_passes_target_and_calibration(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'target = "tensorrt"\n[calibration]\ndata = "calib"\n'
        '[[passes]]\nname = "default"\n[[passes]]\nname = "fold-constants"\nsize_limit = 8\n'
    )
    loaded = load_recipe(recipe)
    assert loaded.target == "tensorrt"
    assert loaded.calibration["data"] == str((tmp_path / "calib").resolve())
    assert loaded.passes == [PassSpec("default"), PassSpec("fold-constants", {"size_limit": 8})]


def test_recipe_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[passes]\n")
    with pytest.raises(PipelineError, match="not valid TOML"):
        load_recipe(bad)
    bad.write_text('colour = "red"\n[[passes]]\nname = "x"\n')
    with pytest.raises(PipelineError, match="unknown key"):
        load_recipe(bad)
    with pytest.raises(PipelineError, match="not found"):
        load_recipe(tmp_path / "missing.toml")


def test_recipe_calibration_paths_are_relative_to_the_recipe(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[calibration]\ndata = "feeds.py:make"\ncache = "stats.npz"\nbatch_size = 2\n'
        '[calibration.preprocess]\nresize = [32, 32]\n[[passes]]\nname = "default"\n'
    )
    loaded = load_recipe(recipe)
    assert loaded.calibration["data"] == f"{(tmp_path / 'feeds.py').resolve()}:make"
    assert loaded.calibration["cache"] == str((tmp_path / "stats.npz").resolve())
    assert loaded.calibration["preprocess"] == {"resize": [32, 32]}
    recipe.write_text('[calibration]\ndata = "my_module:feeds"\n[[passes]]\nname = "default"\n')
    assert load_recipe(recipe).calibration["data"] == "my_module:feeds"
    recipe.write_text('[calibration]\ncolour = 1\n[[passes]]\nname = "default"\n')
    with pytest.raises(PipelineError, match="unknown \\[calibration\\] key"):
        load_recipe(recipe)


def test_report_counts_agree_with_model_stats():
    # The manager counts with its own per-run cache; it must say what analysis.model_stats says.
    import onnx_ir as ir

    import onnxc
    from onnxc.analysis import model_stats
    from onnxc.models_zoo import build

    model = ir.serde.deserialize_model(build("mobilenetv2", image=32))
    before = model_stats(model)
    report = onnxc.compile(model)
    assert report.before == before and report.after == model_stats(model)
    assert report.after["nodes"] < before["nodes"] and report.after["params"] < before["params"]
    assert sum(record.nodes_removed for record in report.passes) == before["nodes"] - report.after["nodes"]
    assert sum(record.bytes_removed for record in report.passes) == before["weight_bytes"] - report.after["weight_bytes"]
