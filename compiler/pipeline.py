"""Pipelines: the pass list a user writes, as a string or a TOML recipe.

String form: ``"default,quantize(method=entropy,per_channel=true),my-pass"``. Values are
numbers, ``true``/``false``, bare words, quoted strings, or ``[a,b]`` lists. The name
``default`` expands to the default lossless pipeline.

Recipe form (TOML)::

    target = "onnxruntime"          # optional: the backend profile
    [calibration]                   # optional: data for calibrated passes
    data = "calib/"                 # relative to the recipe file (or module:function, file.py:function)
    cache = "calib.npz"             # statistics saved and reused
    batch_size = 1
    limit = 256                     # at most this many samples
    [calibration.preprocess]        # for a folder of images
    resize = [224, 224]
    mean = [0.485, 0.456, 0.406]
    std = [0.229, 0.224, 0.225]
    [[passes]]
    name = "default"
    [[passes]]
    name = "quantize"
    method = "entropy"
"""
from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

from onnxc.errors import PipelineError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclasses.dataclass(frozen=True)
class PassSpec:
    """One pipeline item: a pass name and the options given to it."""

    name: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Recipe:
    passes: list[PassSpec]
    target: str | None = None
    calibration: dict[str, Any] = dataclasses.field(default_factory=dict)
    input_shapes: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    verify: bool | None = None


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<punct>[(),=\[\]])
      | (?P<word>[^\s(),=\[\]"']+)
    )""",
    re.VERBOSE,
)


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise PipelineError(f"cannot parse pipeline at column {pos + 1}: {text[pos:pos + 20]!r}")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind), match.start(kind)))  # type: ignore[arg-type]
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise PipelineError(f"pipeline {self.text!r} ends early" + (f": expected {expected!r}" if expected else ""))
        if expected is not None and token[1] != expected:
            raise PipelineError(f"pipeline {self.text!r}: expected {expected!r} at column {token[2] + 1}, found {token[1]!r}")
        self.index += 1
        return token

    def pipeline(self) -> list[PassSpec]:
        specs = []
        while self.peek() is not None:
            specs.append(self.item())
            if self.peek() is not None:
                self.take(",")
        return specs

    def item(self) -> PassSpec:
        kind, name, col = self.take()
        if kind != "word" or not re.fullmatch(r"[A-Za-z_][\w\-.]*", name):
            raise PipelineError(f"pipeline {self.text!r}: expected a pass name at column {col + 1}, found {name!r}")
        options: dict[str, Any] = {}
        token = self.peek()
        if token is not None and token[1] == "(":
            self.take("(")
            while self.peek() is not None and self.peek()[1] != ")":
                key_kind, key, key_col = self.take()
                if key_kind != "word":
                    raise PipelineError(f"pipeline {self.text!r}: expected an option name at column {key_col + 1}")
                self.take("=")
                if key in options:
                    raise PipelineError(f"pipeline {self.text!r}: option {key!r} given twice to {name!r}")
                options[key] = self.value()
                if self.peek() is not None and self.peek()[1] == ",":
                    self.take(",")
            self.take(")")
        return PassSpec(name, options)

    def value(self) -> Any:
        kind, text, _ = self.take()
        if text == "[":
            items = []
            while self.peek() is not None and self.peek()[1] != "]":
                items.append(self.value())
                if self.peek() is not None and self.peek()[1] == ",":
                    self.take(",")
            self.take("]")
            return items
        if kind == "string":
            return bytes(text[1:-1], "utf-8").decode("unicode_escape")
        if kind != "word":
            raise PipelineError(f"pipeline {self.text!r}: unexpected {text!r}")
        return parse_scalar(text)


def parse_scalar(text: str) -> Any:
    """A bare pipeline value: true/false, none, an int, a float, else the text itself."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parse_pipeline(text: str) -> list[PassSpec]:
    """Parse ``"a,b(k=v),c"`` into pass specs."""
    specs = _Parser(text).pipeline()
    if not specs:
        raise PipelineError("the pipeline is empty")
    return specs


def load_recipe(path: str | Path) -> Recipe:
    """Read a TOML recipe; relative data paths are taken from the recipe's folder."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"recipe not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise PipelineError(f"recipe {path} is not valid TOML: {error}") from None
    known = {"passes", "pipeline", "target", "calibration", "input_shapes", "verify"}
    unknown = set(data) - known
    if unknown:
        raise PipelineError(f"recipe {path}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    if "passes" in data and "pipeline" in data:
        raise PipelineError(f"recipe {path}: give either 'passes' or 'pipeline', not both")
    if "pipeline" in data:
        specs = parse_pipeline(str(data["pipeline"]))
    else:
        entries = data.get("passes")
        if not isinstance(entries, list) or not entries:
            raise PipelineError(f"recipe {path}: needs a non-empty [[passes]] list or a 'pipeline' string")
        specs = []
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or "name" not in entry:
                raise PipelineError(f"recipe {path}: passes[{index}] needs a 'name'")
            options = {k: v for k, v in entry.items() if k != "name"}
            specs.append(PassSpec(str(entry["name"]), options))
    calibration = dict(data.get("calibration", {}))
    unknown = set(calibration) - {"data", "cache", "preprocess", "batch_size", "limit"}
    if unknown:
        raise PipelineError(f"recipe {path}: unknown [calibration] key(s) {', '.join(sorted(unknown))}")
    for key in ("data", "cache"):
        if isinstance(calibration.get(key), str):
            calibration[key] = _relative_to(path.parent, calibration[key])
    return Recipe(
        passes=specs,
        target=data.get("target"),
        calibration=calibration,
        input_shapes={k: list(v) for k, v in data.get("input_shapes", {}).items()},
        verify=data.get("verify"),
    )


def _relative_to(folder: Path, spec: str) -> str:
    """A path in a recipe is relative to the recipe; so is the file of a ``file.py:function`` spec."""
    file, sep, function = spec.rpartition(":")
    if sep and file.endswith(".py"):
        return f"{(folder / file).resolve()}:{function}"
    if sep and "/" not in file and not file.endswith(".py"):
        return spec  # module:function, imported by name
    return str((folder / spec).resolve())
