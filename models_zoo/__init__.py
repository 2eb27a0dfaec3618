"""Model builders with deterministic weights, and small trained models with their evaluation data.

    from onnxc import models_zoo
    models_zoo.list_models()                      # names, descriptions, inputs, default options
    proto = models_zoo.build("resnet18", batch="N")
    models_zoo.export("bert-base", "bert.onnx")   # large models are written through onnx_ir

Models are built in code as exporters (torch.onnx, tf2onnx) emit them, unfused, so the
compiler's cleanup and fusion passes have real work to do. Every model takes ``batch`` (an int,
or a name such as "N" for a symbolic dim) and ``opset`` (13..21, default 17); models with
random weights take ``seed``. The same name and options always give byte-identical models.
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir

from onnxc.errors import OnnxcError
from onnxc.io import save
from onnxc.models_zoo import digits
from onnxc.models_zoo.bert import BERT_BASE, bert_parameter_count, build_bert
from onnxc.models_zoo.digits import build_digits
from onnxc.models_zoo.mobilenet import build_mobilenetv2
from onnxc.models_zoo.resnet import build_resnet
from onnxc.models_zoo.rnn import build_rnn
from onnxc.models_zoo.vit import build_vit
from onnxc.models_zoo.yolo import build_yolo


@dataclass(frozen=True)
class InputInfo:
    """A graph input; shape entries are ints or the option names that set them."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    inputs: tuple[InputInfo, ...]
    options: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for JSON listings)."""
        return asdict(self)


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., onnx.ModelProto]
    description: str
    inputs: tuple[InputInfo, ...]
    presets: dict[str, Any] = field(default_factory=dict)

    def defaults(self) -> dict[str, Any]:
        """The builder's keyword defaults, less those a ``partial`` fixes, with this entry's presets applied."""
        fixed = self.builder.keywords if isinstance(self.builder, partial) else {}
        parameters = inspect.signature(self.builder).parameters.values()
        options = {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in fixed}
        options.update(self.presets)
        return options


_IMAGE = (InputInfo("input", "float32", ("batch", 3, "image", "image")),)
_TOKENS = tuple(InputInfo(n, "int64", ("batch", "seq_len")) for n in ("input_ids", "attention_mask", "token_type_ids"))
_IDS = (InputInfo("input_ids", "int64", ("batch", "seq_len")),)

_MODELS: dict[str, _Entry] = {
    "resnet18": _Entry(partial(build_resnet, 18), "ResNet-18, basic blocks, Conv + BatchNormalization + Relu", _IMAGE),
    "resnet50": _Entry(partial(build_resnet, 50), "ResNet-50, bottleneck blocks 64..2048 channels", _IMAGE),
    "mobilenetv2": _Entry(build_mobilenetv2, "MobileNetV2, depthwise inverted residuals, ReLU6 as Clip", _IMAGE),
    "bert": _Entry(build_bert, "BERT encoder (small by default), dynamic batch and sequence", _TOKENS),
    "bert-base": _Entry(build_bert, "BERT-base: 12 layers, hidden 768, 12 heads (110M parameters)", _TOKENS, dict(BERT_BASE)),
    "vit-tiny": _Entry(build_vit, "ViT-Ti/16: patch Conv, class token, 12 pre-norm blocks, hidden 192", _IMAGE),
    "yolo": _Entry(
        build_yolo,
        "YOLOv8n-style detector: C2f backbone, SPPF, Resize + Concat neck, DFL decoding",
        (InputInfo("images", "float32", ("batch", 3, "image", "image")),),
    ),
    "rnn": _Entry(build_rnn, "recurrent text classifier on the LSTM or GRU op (option cell)", _IDS),
    "lstm": _Entry(partial(build_rnn, cell="lstm"), "bidirectional 2-layer LSTM text classifier", _IDS),
    "gru": _Entry(partial(build_rnn, cell="gru"), "bidirectional 2-layer GRU text classifier", _IDS),
    "digits": _Entry(
        build_digits,
        "small CNN trained on sklearn digits (8x8), with its test split; see models_zoo.digits",
        (InputInfo("input", "float32", ("batch", 1, 8, 8)),),
    ),
}


def list_models() -> list[ModelInfo]:
    """Every model the zoo builds, in a fixed order."""
    return [ModelInfo(name, e.description, e.inputs, e.defaults()) for name, e in _MODELS.items()]


def build(name: str, **options: Any) -> onnx.ModelProto:
    """Build model ``name`` with ``options`` (see ``list_models()`` for each model's options)."""
    entry = _MODELS.get(name)
    if entry is None:
        raise OnnxcError(f"unknown model {name!r}; the zoo has: {', '.join(_MODELS)}")
    defaults = entry.defaults()
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise OnnxcError(f"model {name!r} has no option {', '.join(unknown)}; its options: {', '.join(defaults)}")
    return entry.builder(**{**defaults, **options})


def export(name: str, path: str | os.PathLike, **options: Any) -> list[Path]:
    """Build model ``name`` and save it to ``path`` (external data when it is large); returns the files written."""
    return save(ir.serde.deserialize_model(build(name, **options)), path)


__all__ = [
    "InputInfo",
    "ModelInfo",
    "bert_parameter_count",
    "build",
    "digits",
    "export",
    "list_models",
]
