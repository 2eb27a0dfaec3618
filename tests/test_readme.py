"""Every command README.md shows runs, on files made here in its place.

README's ``onnxc`` lines run as written (only the placeholder files they name are created
first: a zoo CNN as ``model.onnx``, a small BERT as ``bert.onnx``, .npz feeds in ``calib/``,
its TOML recipe as ``recipe.toml``); its Python blocks run in that folder; its benchmark lines
are parsed and their scripts' ``--help`` runs (a full benchmark takes minutes and is run by
hand, its figures quoted in the closing notes of the issue it serves).
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxc.models_zoo import export

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _commands(prefix: str) -> list[str]:
    commands = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith(prefix):
                commands.append(line)
    return commands


ONNXC_COMMANDS = _commands("onnxc ")
BENCHMARK_COMMANDS = _commands("python benchmarks/")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    export("mobilenetv2", folder / "model.onnx", batch=1)
    export("bert", folder / "bert.onnx", batch=1)
    calib = folder / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        np.savez(calib / f"{i:03}.npz", input=rng.normal(0, 1, (1, 3, 224, 224)).astype(np.float32))
    toml = _blocks("toml")[0]
    (folder / "recipe.toml").write_text(toml)
    return folder


def test_readme_shows_commands():
    assert len(ONNXC_COMMANDS) >= 4 and BENCHMARK_COMMANDS


@pytest.mark.parametrize("command", ONNXC_COMMANDS)
def test_onnxc_command_runs(command: str, workspace: Path):
    input_name = onnx.load(str(workspace / "model.onnx"), load_external_data=False).graph.input[0].name
    assert input_name == "input", "the calib/ feeds are named after the zoo model's input"
    result = subprocess.run([sys.executable, "-m", "onnxc", *shlex.split(command)[1:]], cwd=workspace,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command}\n{result.stderr[-2000:]}"
    for output in re.findall(r"-o (\S+)", command):
        onnx.checker.check_model(str(workspace / output))


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_block_runs(index: int, workspace: Path):
    """A block that registers passes is a plugin: `onnxc passes --plugin` must list what it registers.
    Any other block runs as a script. Each in its own process, so nothing leaks into the registry."""
    code = textwrap.dedent(_blocks("python")[index])
    script = workspace / f"readme_block_{index}.py"
    script.write_text(code)
    registered = re.findall(r'(?:register_pass\(name=|graphsurgeon_pass\()"([^"]+)"|^\s+name = "([^"]+)"', code, flags=re.M)
    names = [a or b for a, b in registered]
    if names:
        command = [sys.executable, "-m", "onnxc", "passes", "--plugin", str(script)]
    else:
        command = [sys.executable, str(script)]
    result = subprocess.run(command, cwd=workspace, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in names:
        assert re.search(rf"^{re.escape(name)}\s", result.stdout, flags=re.M), f"{name} not registered by block {index}"


@pytest.mark.parametrize("command", BENCHMARK_COMMANDS)
def test_benchmark_command_parses(command: str):
    script = shlex.split(command)[1]
    result = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "usage" in result.stdout.lower(), result.stderr[-2000:]
