"""Saving streams weights into the file; the result must read back as the same model."""
import numpy as np
import onnx
import onnx_ir as ir

import onnxc
from onnxc.models_zoo import build


def test_streamed_save_reads_back_as_the_same_model(tmp_path):
    model = ir.serde.deserialize_model(build("mobilenetv2", image=64))
    onnxc.compile(model)
    path = tmp_path / "m.onnx"
    onnxc.save(model, path)
    written = onnx.load(str(path))
    onnx.checker.check_model(written, full_check=True)
    expected = ir.to_proto(model)
    ours = {t.name: onnx.numpy_helper.to_array(t) for t in written.graph.initializer}
    theirs = {t.name: onnx.numpy_helper.to_array(t) for t in expected.graph.initializer}
    assert ours.keys() == theirs.keys() and len(ours) > 50
    for name, array in theirs.items():
        assert ours[name].dtype == array.dtype and np.array_equal(ours[name], array), name
    assert [n.SerializeToString() for n in written.graph.node] == [n.SerializeToString() for n in expected.graph.node]
    assert written.graph.input == expected.graph.input and written.graph.output == expected.graph.output
    assert written.opset_import == expected.opset_import and written.producer_name == "onnxc"


def test_saving_twice_is_byte_identical(tmp_path):
    model = ir.serde.deserialize_model(build("digits"))
    onnxc.save(model, tmp_path / "a.onnx")
    onnxc.save(model, tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
