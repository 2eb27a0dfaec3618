"""The Python API: compile, user passes, plugins, graphsurgeon adapter, verification."""
import numpy as np
import onnx_ir as ir
import pytest

import onnxc
from onnxc.errors import OnnxcError, PassFailedError
from onnxc.irutil import constant_array
from testutil import checked, parse_model

MODEL = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,4] x) => (float[N,4] y) <float[4] b = {1.0, 2.0, 3.0, 4.0}> {
    t = Add(x, b)
    u = Identity(t)
    y = Relu(u)
}"""


@onnxc.register_pass(name="test-scale-bias", lossless=False)
def scale_bias(model: ir.Model) -> bool:
    """Doubles the bias constant (a lossy test pass)."""
    value = model.graph.initializers["b"]
    value.const_value = ir.tensor(constant_array(value) * 2, name="b")
    return True


@onnxc.register_pass
class BreakBias(onnxc.Pass):
    """Claims to be lossless but changes the bias."""

    name = "test-break-bias"
    factor: float = onnxc.option(3.0, "multiplier")

    def call(self, model):
        value = model.graph.initializers["b"]
        value.const_value = ir.tensor(constant_array(value) * self.factor, name="b")
        return onnxc.PassResult(model, True)


def test_compile_default_pipeline_removes_identity_and_keeps_outputs():
    model = parse_model(MODEL)
    report = onnxc.compile(model, verify=True)
    checked(model)
    assert [n.op_type for n in model.graph] == ["Add", "Relu"]
    assert report.error_vs_original["max_abs"] == 0.0
    assert report.before["nodes"] == 3 and report.after["nodes"] == 2


def test_verification_names_a_lossless_pass_that_breaks_the_model():
    model = parse_model(MODEL)
    with pytest.raises(PassFailedError, match=r"test-break-bias\(factor=2.0\).*lossless but changed"):
        onnxc.compile(model, "toposort,test-break-bias(factor=2)", verify=True)


def test_lossy_pass_error_is_reported_not_fatal():
    model = parse_model(MODEL)
    report = onnxc.compile(model, "test-scale-bias", verify=True)
    record = report.passes[0]
    assert not record.lossless and record.changes == 1
    assert record.max_abs_error > 0.5
    assert report.error_vs_original["max_abs"] == pytest.approx(record.max_abs_error)


def test_pass_objects_and_options_are_accepted():
    model = parse_model(MODEL)
    onnxc.compile(model, [BreakBias(factor=0.5)])
    np.testing.assert_allclose(constant_array(model.graph.initializers["b"]), [0.5, 1, 1.5, 2])


def test_plugin_file_registers_passes_for_pipelines(tmp_path):
    plugin = tmp_path / "my_plugin_passes.py"
    plugin.write_text(
        "import onnxc\n"
        "@onnxc.register_pass(name='test-plugin-neg')\n"
        "def negate(model):\n"
        "    '''Append a Neg to the output.'''\n"
        "    import onnx_ir as ir\n"
        "    out = model.graph.outputs[0]\n"
        "    node = ir.node('Neg', [out])\n"
        "    model.graph.append(node)\n"
        "    node.outputs[0].name = 'neg'\n"
        "    node.outputs[0].dtype = out.dtype\n"
        "    node.outputs[0].shape = out.shape\n"
        "    model.graph.outputs[0] = node.outputs[0]\n"
    )
    onnxc.load_plugin(str(plugin))
    assert "test-plugin-neg" in onnxc.registered_passes()
    model = parse_model(MODEL)
    onnxc.compile(model, "test-plugin-neg")
    assert model.graph[len(model.graph) - 1].op_type == "Neg"


def test_graphsurgeon_function_becomes_a_pass():
    gs = pytest.importorskip("onnx_graphsurgeon", reason="onnx-graphsurgeon not installed")

    @onnxc.graphsurgeon_pass("test-gs-relu-to-sigmoid", lossless=False)
    def relu_to_sigmoid(graph: "gs.Graph") -> "gs.Graph":
        for node in graph.nodes:
            if node.op == "Relu":
                node.op = "Sigmoid"
        return graph

    model = parse_model(MODEL)
    report = onnxc.compile(model, "test-gs-relu-to-sigmoid", verify=True)
    assert [n.op_type for n in model.graph][-1] == "Sigmoid"
    assert report.passes[0].changes == 1
    checked(model)


def test_verify_runs_on_the_calibration_feeds_when_there_are_some():
    from onnxc.context import Context
    from onnxc.errors import InvalidModelError

    # The height and width are symbolic, but the Reshape only fits 4x4 images: generated inputs at
    # the default dims cannot run, the calibration feeds can.
    model = parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 2, h, w] x) => (float[1, 32] y) <int64[2] shape = {1, 32}> {
            y = Reshape(x, shape)
        }""")
    with pytest.raises(InvalidModelError, match="generated verification inputs"):
        onnxc.compile(model, "toposort", verify=True)
    feeds = [{"x": np.full((1, 2, 4, 4), float(i), np.float32)} for i in range(3)]
    report = onnxc.compile(model, "toposort", verify=True, context=Context(calibration_data=feeds))
    assert report.error_vs_original["max_abs"] == 0.0


@onnxc.register_pass
class NeedsData(onnxc.Pass):
    """Reads calibration data (a test pass)."""

    name = "test-needs-data"
    requirements = ("calibration",)

    def call(self, model: ir.Model) -> onnxc.PassResult:
        return onnxc.PassResult(model, modified=False)


def test_a_stated_requirement_stops_the_run_before_any_pass():
    model = parse_model(MODEL)
    with pytest.raises(OnnxcError, match=r"^test-needs-data needs calibration data: give --calib-data PATH .* or --calib-random$"):
        onnxc.compile(model, "default,test-needs-data")
    assert [node.op_type for node in model.graph] == ["Add", "Identity", "Relu"]  # default did not run first
    onnxc.compile(model, "default,test-needs-data", context=onnxc.Context(calibration_allow_random=True))

