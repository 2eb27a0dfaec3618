"""The Backend protocol every target implements, and what lowering produces."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import onnx_ir as ir

Feeds = dict[str, np.ndarray]


@dataclasses.dataclass
class Artifact:
    """What a lowerer wrote: the files (engine, IR, library) and facts about them."""

    backend: str
    files: list[Path]
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


@runtime_checkable
class Runner(Protocol):
    def run(self, feeds: Feeds) -> dict[str, np.ndarray]: ...


@runtime_checkable
class Backend(Protocol):
    name: str

    def available(self) -> tuple[bool, str]:
        """Whether this machine can lower and run for the target, and why not."""
        ...

    def lower(self, model: ir.Model, out_dir: Path, options: dict[str, Any] | None = None) -> Artifact: ...

    def load(self, artifact: Artifact) -> Runner: ...

    def benchmark(self, artifact: Artifact, feeds: Feeds, *, rounds: int = 5, calls_per_round: int = 10) -> float:
        """Seconds per inference (min of medians)."""
        ...
