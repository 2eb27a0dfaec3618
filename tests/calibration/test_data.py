"""Calibration data sources: every form a user can give, the feeds they yield, and one-line errors."""
from __future__ import annotations

import logging

import sys
import textwrap

import numpy as np
import pytest
from onnxruntime.quantization import CalibrationDataReader
from testutil import parse_model

from onnxc.calibration import CalibrationData, ImagePreprocess, open_calibration_data
from onnxc.errors import OnnxcError

DYNAMIC = parse_model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 4, 4] x) => (float[N, 3, 4, 4] y) { y = Relu(x) }
""")
FIXED2 = parse_model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 3, 4, 4] x) => (float[2, 3, 4, 4] y) { y = Relu(x) }
""")
TWO_INPUTS = parse_model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 5] x, int64[N, 5] ids) => (float[N, 5] y) {
    f = Cast <to = 1> (ids)
    y = Add(x, f)
}
""")
IMAGE_NCHW = parse_model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 3, 6, 8] x) => (float[1, 3, 6, 8] y) { y = Relu(x) }
""")
FIXED2_IMAGE = parse_model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 3, 6, 8] x) => (float[2, 3, 6, 8] y) { y = Relu(x) }
""")
IMAGE_NHWC = parse_model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 6, 8, 3] x) => (float[N, 6, 8, 3] y) { y = Relu(x) }
""")
IMAGE_GRAY_UINT8 = parse_model("""
<ir_version: 8, opset_import: ["" : 17]>
g (uint8[1, 1, 6, 8] x) => (uint8[1, 1, 6, 8] y) { y = Identity(x) }
""")


def samples(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 4, 4)).astype(np.float32)


def one_line_error(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and text
    return text


# Folders of .npz / .npy ------------------------------------------------------------------------


def test_npz_folder_yields_one_feed_per_file_in_sorted_order(tmp_path):
    x = samples(6)
    for name, lo in (("b.npz", 2), ("a.npz", 0), ("c.npz", 4)):
        np.savez(tmp_path / name, x=x[lo:lo + 2])
    (tmp_path / "notes.txt").write_text("ignored")
    data = open_calibration_data(tmp_path, DYNAMIC)
    assert isinstance(data, CalibrationData) and len(data) == 3 and data.reiterable
    feeds = list(data)
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in feeds]), x)
    assert [list(f) for f in feeds] == [["x"]] * 3
    assert [f["x"].dtype for f in list(data)] == [np.float32] * 3  # read again: same feeds


def test_npz_folder_casts_float64_to_float32(tmp_path):
    x = samples(2).astype(np.float64)
    np.savez(tmp_path / "0.npz", x=x)
    (feed,) = list(open_calibration_data(tmp_path, DYNAMIC))
    assert feed["x"].dtype == np.float32
    np.testing.assert_array_equal(feed["x"], x.astype(np.float32))


@pytest.mark.parametrize("arrays, message", [
    (dict(), "missing input(s) 'x'"),
    (dict(x=samples(1), z=samples(1)), "unknown input name(s) 'z'"),
    (dict(x=samples(1)[0]), "has rank 3"),
    (dict(x=np.zeros((1, 2, 4, 4), np.float32)), "(axis 1)"),
    (dict(x=np.zeros((1, 3, 4, 4), np.uint8)), "is uint8 but the model takes float32"),
])
def test_npz_folder_errors_name_the_file(tmp_path, arrays, message):
    np.savez(tmp_path / "sample_0.npz", **arrays)
    with pytest.raises(OnnxcError) as excinfo:
        list(open_calibration_data(tmp_path, DYNAMIC))
    text = one_line_error(excinfo)
    assert "sample_0.npz" in text and message in text


def test_integer_inputs_are_cast_when_values_fit(tmp_path):
    x = np.ones((2, 5), np.float32)
    np.savez(tmp_path / "0.npz", x=x, ids=np.arange(10, dtype=np.int32).reshape(2, 5))
    (feed,) = list(open_calibration_data(tmp_path, TWO_INPUTS))
    assert feed["ids"].dtype == np.int64 and feed["ids"].tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    np.savez(tmp_path / "0.npz", x=x, ids=np.full((2, 5), 2**63, np.uint64))
    with pytest.raises(OnnxcError, match="values outside int64"):
        list(open_calibration_data(tmp_path, TWO_INPUTS))
    np.savez(tmp_path / "0.npz", x=x, ids=np.zeros((2, 5), np.float32))
    with pytest.raises(OnnxcError, match="is float32 but the model takes int64"):
        list(open_calibration_data(tmp_path, TWO_INPUTS))


def test_npy_folder_for_a_single_input_model(tmp_path):
    x = samples(4)
    for i in range(2):
        np.save(tmp_path / f"{i}.npy", x[2 * i:2 * i + 2])
    feeds = list(open_calibration_data(tmp_path, DYNAMIC))
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in feeds]), x)
    with pytest.raises(OnnxcError, match="single-input models"):
        open_calibration_data(tmp_path, TWO_INPUTS)


def test_folder_errors(tmp_path):
    with pytest.raises(OnnxcError, match="no calibration files"):
        open_calibration_data(tmp_path, DYNAMIC)
    np.savez(tmp_path / "a.npz", x=samples(1))
    np.save(tmp_path / "b.npy", samples(1))
    with pytest.raises(OnnxcError, match="holds both npz and npy"):
        open_calibration_data(tmp_path, DYNAMIC)
    with pytest.raises(OnnxcError, match="calibration data not found"):
        open_calibration_data(tmp_path / "absent", DYNAMIC)
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(OnnxcError, match="not calibration data"):
        open_calibration_data(tmp_path / "model.txt", DYNAMIC)
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    (tmp_path / "b.npy").unlink()
    with pytest.raises(OnnxcError, match="c.npz: not a readable .npz"):
        list(open_calibration_data(tmp_path, DYNAMIC))


# One file with many samples --------------------------------------------------------------------


def test_single_npz_is_cut_into_batches_of_batch_size(tmp_path):
    x = samples(10)
    np.savez(tmp_path / "all.npz", x=x)
    data = open_calibration_data(tmp_path / "all.npz", DYNAMIC, batch_size=4)
    feeds = list(data)
    assert len(data) == 3 and [f["x"].shape[0] for f in feeds] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in feeds]), x)
    assert len(open_calibration_data(tmp_path / "all.npz", DYNAMIC)) == 10  # batch 1 by default


def test_single_npz_follows_a_fixed_batch(tmp_path):
    np.savez(tmp_path / "all.npz", x=samples(10))
    feeds = list(open_calibration_data(tmp_path / "all.npz", FIXED2))
    assert len(feeds) == 5 and all(f["x"].shape == (2, 3, 4, 4) for f in feeds)
    np.savez(tmp_path / "odd.npz", x=samples(9))
    with pytest.raises(OnnxcError, match="9 samples do not fill batches of 2"):
        open_calibration_data(tmp_path / "odd.npz", FIXED2)
    with pytest.raises(OnnxcError, match="fixed batch of 2"):
        open_calibration_data(tmp_path / "all.npz", FIXED2, batch_size=4)


def test_single_npz_with_a_leading_sample_axis_stacks_whole_feeds(tmp_path):
    stacked = samples(10).reshape(5, 2, 3, 4, 4)
    np.savez(tmp_path / "stacked.npz", x=stacked)
    feeds = list(open_calibration_data(tmp_path / "stacked.npz", FIXED2))
    assert len(feeds) == 5
    np.testing.assert_array_equal(feeds[3]["x"], stacked[3])


def test_single_npz_multi_input_and_errors(tmp_path):
    x = np.zeros((6, 5), np.float32)
    ids = np.arange(30).reshape(6, 5)
    np.savez(tmp_path / "both.npz", x=x, ids=ids)
    feeds = list(open_calibration_data(tmp_path / "both.npz", TWO_INPUTS, batch_size=3))
    assert [f["ids"][:, 0].tolist() for f in feeds] == [[0, 5, 10], [15, 20, 25]]
    np.savez(tmp_path / "uneven.npz", x=x, ids=ids[:5])
    with pytest.raises(OnnxcError, match="different numbers of samples"):
        open_calibration_data(tmp_path / "uneven.npz", TWO_INPUTS)
    np.savez(tmp_path / "missing.npz", x=x)
    with pytest.raises(OnnxcError, match="missing 'ids'"):
        open_calibration_data(tmp_path / "missing.npz", TWO_INPUTS)
    np.savez(tmp_path / "rank.npz", x=x[0], ids=ids[0])
    with pytest.raises(OnnxcError, match="expected rank 2"):
        open_calibration_data(tmp_path / "rank.npz", TWO_INPUTS)


def test_single_npy_for_a_single_input_model(tmp_path):
    x = samples(3)
    np.save(tmp_path / "x.npy", x)
    feeds = list(open_calibration_data(tmp_path / "x.npy", DYNAMIC))
    assert len(feeds) == 3
    np.testing.assert_array_equal(feeds[2]["x"], x[2:3])
    with pytest.raises(OnnxcError, match="single-input models"):
        open_calibration_data(tmp_path / "x.npy", TWO_INPUTS)


# Images ----------------------------------------------------------------------------------------


def write_images(folder, sizes, seed: int = 0):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(seed)
    pixels = []
    for i, (h, w) in enumerate(sizes):
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(a).save(folder / f"img{i}.png")
        pixels.append(a)
    return Image, pixels


def expected_image(Image, a, size, box=None):
    img = Image.fromarray(a).resize(size[::-1], Image.Resampling.BILINEAR)
    if box is not None:
        img = img.crop(box)
    return np.asarray(img).astype(np.float32)


def test_image_folder_resizes_scales_and_normalizes_to_nchw(tmp_path):
    Image, pixels = write_images(tmp_path, [(12, 16), (6, 8), (30, 20)])
    pre = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.5]}
    data = open_calibration_data(tmp_path, IMAGE_NCHW, preprocess=pre)
    feeds = list(data)
    assert len(data) == 3 and all(f["x"].shape == (1, 3, 6, 8) and f["x"].dtype == np.float32 for f in feeds)
    for feed, a in zip(feeds, pixels):
        want = (expected_image(Image, a, (6, 8)) / 255 - np.array([0.5, 0.4, 0.3], np.float32)) / np.array(
            [0.2, 0.25, 0.5], np.float32)
        np.testing.assert_allclose(feed["x"][0], want.transpose(2, 0, 1), rtol=1e-6, atol=1e-6)


def test_image_folder_nhwc_bgr_and_shorter_side_resize_with_center_crop(tmp_path):
    Image, pixels = write_images(tmp_path, [(12, 20), (16, 16)])
    pre = ImagePreprocess(resize=8, color="BGR", scale=1.0)
    feeds = list(open_calibration_data(tmp_path, IMAGE_NHWC, preprocess=pre, batch_size=2))
    assert len(feeds) == 1 and feeds[0]["x"].shape == (2, 6, 8, 3)
    # 12x20 -> shorter side 8: 8x13, center 6x8 crop starts at row 1, column 2.
    want = expected_image(Image, pixels[0], (8, 13), box=(2, 1, 10, 7))[:, :, ::-1]
    np.testing.assert_array_equal(feeds[0]["x"][0], want)
    want = expected_image(Image, pixels[1], (8, 8), box=(0, 1, 8, 7))[:, :, ::-1]
    np.testing.assert_array_equal(feeds[0]["x"][1], want)


def test_image_folder_gray_uint8_input_takes_raw_pixels(tmp_path):
    Image, pixels = write_images(tmp_path, [(6, 8)])
    (feed,) = list(open_calibration_data(tmp_path, IMAGE_GRAY_UINT8))
    gray = np.asarray(Image.fromarray(pixels[0]).convert("L"))
    assert feed["x"].dtype == np.uint8
    np.testing.assert_array_equal(feed["x"][0, 0], gray)


def test_image_preprocess_errors(tmp_path):
    write_images(tmp_path, [(6, 8), (6, 8)])
    with pytest.raises(OnnxcError, match="unknown preprocess setting"):
        open_calibration_data(tmp_path, IMAGE_NCHW, preprocess={"size": 3})
    with pytest.raises(OnnxcError, match="layout must be NCHW or NHWC"):
        ImagePreprocess(layout="CHW")
    with pytest.raises(OnnxcError, match="mean must be one number or one per channel"):
        open_calibration_data(tmp_path, IMAGE_NCHW, preprocess={"mean": [0.1, 0.2]})
    with pytest.raises(OnnxcError, match="smaller than the model's 6x8"):
        list(open_calibration_data(tmp_path, IMAGE_NCHW, preprocess={"resize": 4}))
    with pytest.raises(OnnxcError, match="not a folder of images"):
        open_calibration_data(tmp_path / "img0.png", IMAGE_NCHW, preprocess={"scale": 1})
    (tmp_path / "three").mkdir()
    write_images(tmp_path / "three", [(6, 8)] * 3)
    with pytest.raises(OnnxcError, match="3 images do not fill batches of 2"):
        open_calibration_data(tmp_path / "three", FIXED2_IMAGE)
    (tmp_path / "img1.png").write_bytes(b"broken")
    with pytest.raises(OnnxcError, match="img1.png: not a readable image"):
        list(open_calibration_data(tmp_path, IMAGE_NCHW))


def test_images_without_pillow_say_how_to_get_it(tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(OnnxcError, match="needs Pillow: pip install Pillow"):
        open_calibration_data(tmp_path, IMAGE_NCHW)


# Python callables, readers, iterables ----------------------------------------------------------


CALIB_MODULE = textwrap.dedent("""
    import numpy as np

    CALLS = []

    def feeds():
        CALLS.append(1)
        rng = np.random.default_rng(3)
        return [{"x": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)} for _ in range(4)]

    def stream():
        for i in range(3):
            yield {"x": np.full((1, 3, 4, 4), i, np.float32)}

    def one():
        return {"x": np.zeros((2, 3, 4, 4), np.float32)}

    def broken():
        raise RuntimeError("disk on fire")

    NOT_CALLABLE = 3
""")


def test_module_function_spec(tmp_path, monkeypatch):
    (tmp_path / "my_calib_mod.py").write_text(CALIB_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_calib_mod", raising=False)
    data = open_calibration_data("my_calib_mod:feeds", DYNAMIC)
    assert len(data) == 4 and data.reiterable
    first, second = list(data), list(data)
    np.testing.assert_array_equal(np.stack([f["x"] for f in first]), np.stack([f["x"] for f in second]))
    assert len(sys.modules["my_calib_mod"].CALLS) == 2  # the length probe's result is reused
    gen = open_calibration_data("my_calib_mod:stream", DYNAMIC)
    assert gen.length is None and [f["x"][0, 0, 0, 0] for f in gen] == [0, 1, 2]
    with pytest.raises(TypeError):
        len(gen)
    assert len(list(open_calibration_data("my_calib_mod:one", DYNAMIC))) == 1


def test_file_function_spec_and_errors(tmp_path):
    path = tmp_path / "calib_file.py"
    path.write_text(CALIB_MODULE)
    assert len(list(open_calibration_data(f"{path}:stream", DYNAMIC))) == 3
    with pytest.raises(OnnxcError, match="failed: RuntimeError: disk on fire"):
        open_calibration_data(f"{path}:broken", DYNAMIC)
    with pytest.raises(OnnxcError, match="has no function 'NOT_CALLABLE'"):
        open_calibration_data(f"{path}:NOT_CALLABLE", DYNAMIC)
    with pytest.raises(OnnxcError, match="cannot import module 'no_such_module_xyz'"):
        open_calibration_data("no_such_module_xyz:feeds", DYNAMIC)
    with pytest.raises(OnnxcError, match="no such file"):
        open_calibration_data(f"{tmp_path / 'absent.py'}:feeds", DYNAMIC)


class Reader(CalibrationDataReader):
    def __init__(self, n: int):
        self.items = [{"x": np.full((1, 3, 4, 4), i, np.float32)} for i in range(n)]
        self.position = 0

    def get_next(self):
        if self.position == len(self.items):
            return None
        self.position += 1
        return self.items[self.position - 1]


class RewindingReader(Reader):
    def rewind(self):
        self.position = 0


def test_ort_calibration_data_reader():
    data = open_calibration_data(Reader(3), DYNAMIC)
    assert not data.reiterable and data.length is None
    assert [f["x"][0, 0, 0, 0] for f in data] == [0, 1, 2]
    with pytest.raises(OnnxcError, match="can be read only once"):
        list(data)
    again = open_calibration_data(RewindingReader(2), DYNAMIC)
    assert again.reiterable and len(list(again)) == 2 and len(list(again)) == 2


def test_python_objects_callables_and_feed_preprocessing():
    feeds = [{"x": samples(1, seed=i)} for i in range(3)]
    data = open_calibration_data(feeds, DYNAMIC)
    assert len(data) == 3 and data.reiterable
    assert open_calibration_data(feeds[:2], DYNAMIC).fingerprint != data.fingerprint
    assert len(list(open_calibration_data(feeds[0], DYNAMIC))) == 1
    one_shot = open_calibration_data(iter(feeds), DYNAMIC)
    assert not one_shot.reiterable and len(list(one_shot)) == 3
    assert len(open_calibration_data(lambda: feeds, DYNAMIC)) == 3
    doubled = list(open_calibration_data(feeds, DYNAMIC, preprocess=lambda f: {"x": f["x"] * 2}))
    np.testing.assert_array_equal(doubled[1]["x"], feeds[1]["x"] * 2)
    with pytest.raises(OnnxcError, match="expected a dict of input name -> array, got list"):
        list(open_calibration_data([[1, 2]], DYNAMIC))
    with pytest.raises(OnnxcError, match="holds no feeds"):
        list(open_calibration_data([], DYNAMIC))
    with pytest.raises(OnnxcError, match="cannot read calibration data from a int"):
        open_calibration_data(3, DYNAMIC)


def test_limit_caps_feeds(tmp_path):
    for i in range(5):
        np.savez(tmp_path / f"{i}.npz", x=samples(1, seed=i))
    data = open_calibration_data(tmp_path, DYNAMIC, limit=2)
    assert len(data) == 2 and len(list(data)) == 2
    assert data.fingerprint != open_calibration_data(tmp_path, DYNAMIC).fingerprint
    with pytest.raises(OnnxcError, match="limit must be at least 1"):
        open_calibration_data(tmp_path, DYNAMIC, limit=0)


# Random data -----------------------------------------------------------------------------------


def test_random_data_needs_the_flag_and_warns(caplog):
    with pytest.raises(OnnxcError, match="--calib-random") as excinfo:
        open_calibration_data(None, TWO_INPUTS)
    one_line_error(excinfo)
    with caplog.at_level(logging.WARNING, logger="onnxc.calibration.data"):
        data = open_calibration_data(None, TWO_INPUTS, allow_random=True, limit=3, seed=5)
    assert caplog.text.count("calibrating on 3 random feeds (seed 5)") == 1
    first, second = list(data), list(data)
    assert len(first) == 3 and first[0]["x"].shape == (1, 5) and first[0]["ids"].dtype == np.int64
    np.testing.assert_array_equal(first[2]["x"], second[2]["x"])
    assert not np.array_equal(first[0]["x"], first[1]["x"])
    other_seed = list(open_calibration_data("random", TWO_INPUTS, allow_random=True, limit=3, seed=6))
    assert not np.array_equal(first[0]["x"], other_seed[0]["x"])
