"""An earlier commit's onnxc, installed beside the current one, for "no slower than before" ratios.

``install(rev)`` exports the commit's tree with ``git archive`` and installs it with pip into a
folder of its own (its native extension built as its own install builds it); the benchmarks then
run the tool ``onnxc@REV`` in a child whose PYTHONPATH puts that folder first, so the two versions
are timed in the same run, interleaved, on the same machine state. Any child tool of
``_optimize_once`` runs that way with ``@REV`` appended (``onnxc-calibrate@REV``).
"""
from __future__ import annotations

import atexit
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
_SITES: dict[str, Path] = {}


def install(rev: str) -> str:
    """Install commit ``rev`` once per process; returns its short hash (tools are named ``X@<short>``)."""
    short = subprocess.run(["git", "-C", str(REPOSITORY), "rev-parse", "--short", rev],
                           check=True, capture_output=True, text=True).stdout.strip()
    if short not in _SITES:
        root = Path(tempfile.mkdtemp(prefix=f"onnxc-{short}-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        archive = subprocess.run(["git", "-C", str(REPOSITORY), "archive", "--format=tar", short],
                                 check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(root / "src", filter="data")
        print(f"installing onnxc@{short} for the comparison (builds its native extension)...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
                        "--target", str(root / "site"), str(root / "src")], check=True)
        _SITES[short] = root / "site"
    return short


def child_environment(tool: str) -> tuple[str, dict[str, str] | None]:
    """The tool the child runs and its environment: ``X@REV`` is tool X with onnxc from REV's install."""
    base, _, short = tool.partition("@")
    if short not in _SITES:
        return tool, None
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_SITES[short]), environment.get("PYTHONPATH")]))
    return base, environment
