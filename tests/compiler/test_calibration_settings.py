"""The recipe's [calibration] settings and --shape reach every pass that opens calibration data.

Before, the CLI stored them in Context.calibration_options and nothing read them: an image folder
for a model with symbolic H x W failed asking for `resize` that the recipe gave, and mean/std
were silently ignored.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import onnxc
from onnxc.cli import main
from onnxc.context import Context

@pytest.fixture
def cnn(tmp_path):
    """A detector-like input (batch, H and W symbolic) and two convolutions worth quantizing (the
    7x7 stem's reduction is long enough for ORT's integer kernel to pay)."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)
               for name, shape in (("w1", (8, 3, 7, 7)), ("w2", (8, 8, 3, 3)))]
    nodes = [helper.make_node("Conv", ["images", "w1"], ["a"], pads=[3, 3, 3, 3]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["out"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 8, "H", "W"])], weights)
    path = tmp_path / "cnn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _recipe(tmp_path, images, preprocess: str, passes: str = "quantize") -> str:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'pipeline = "{passes}"\n[calibration]\ndata = "{images}"\nlimit = 3\n'
                      f"[calibration.preprocess]\n{preprocess}")
    return str(recipe)


def test_context_applies_preprocess_limit_and_shapes(cnn, images):
    model = onnxc.load(cnn)
    context = Context(calibration_data=str(images),
                      calibration_options={"preprocess": {"resize": [20, 24], "mean": [0.5], "std": [0.25]}, "limit": 3})
    feeds = list(context.calibration(model))
    assert len(feeds) == 3
    x = feeds[0]["images"]
    assert x.shape == (1, 3, 20, 24)
    plain = Context(calibration_data=str(images), calibration_options={"preprocess": {"resize": [20, 24]}})
    np.testing.assert_allclose(x, (next(iter(plain.calibration(model)))["images"] - 0.5) / 0.25, atol=1e-5)
    assert len(list(context.calibration(model, limit=2))) == 2

    shaped = Context(calibration_data=str(images), input_shapes={"images": [1, 3, 16, 16]})
    assert next(iter(shaped.calibration(model)))["images"].shape == (1, 3, 16, 16)


def test_recipe_image_calibration_for_a_model_with_symbolic_height_and_width(cnn, images, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    recipe = _recipe(tmp_path, images, 'resize = [64, 64]\nmean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]\n')
    report = tmp_path / "report.json"
    assert main(["compile", str(cnn), "-o", str(out), "--recipe", recipe, "--no-progress", "--no-speed-check", "--report", str(report)]) == 0
    written = onnx.load(str(out))
    onnx.checker.check_model(written)
    assert sum(n.op_type == "QuantizeLinear" for n in written.graph.node) >= 2
    assert json.loads(report.read_text())["passes"][0]["details"]["quantized_units"] == 2


def test_shape_option_sizes_images_for_symbolic_dims(cnn, images, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'pipeline = "quantize"\n[calibration]\ndata = "{images}"\n')
    code = main(["compile", str(cnn), "-o", str(out), "--recipe", str(recipe), "--no-progress"])
    assert code == 2 and "--shape images=" in capsys.readouterr().err
    assert main(["compile", str(cnn), "-o", str(out), "--recipe", str(recipe), "--no-progress",
                 "--shape", "images=1x3x64x64", "--no-speed-check"]) == 0
    assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node) >= 2


def test_calib_random_warns_once(cnn, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    assert main(["compile", str(cnn), "-o", str(out), "--passes", "quantize", "--calib-random", "--verify",
                 "--shape", "images=1x3x64x64", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("random feeds") == 1, err
    assert "UserWarning" not in err and "warnings.warn" not in err
