"""``onnxc build``: lower a model into a target's own artifact (OpenVINO IR, ...) in a folder,
verified against ORT on the same inputs.

The folder is staged beside the destination and renamed into place when the artifact is
complete and verified, so a failed build leaves no partial folder; an existing folder is
replaced only when it holds an earlier onnxc build.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import onnx_ir as ir

from onnxc.cli.common import EXIT_MISMATCH, EXIT_OK, SHAPE_HELP, Subparsers, add_command
from onnxc.errors import OnnxcError


def add_parser(sub: Subparsers) -> None:
    p = add_command(sub, "build", "Lower a model into a target's artifact (OpenVINO IR, ...), verified against ORT.", """
        onnxc build model.onnx --target openvino -o model_ov/            # IR + artifact.json, f32, verified
        onnxc build model.int8.onnx --target openvino -o int8_ov/ --threads 2
        onnxc build model.onnx --target openvino -o ov/ --shape input=1x3x224x224 --precision bf16
        onnxc compile model.onnx -o model.int8.onnx --passes default,quantize --target openvino --build int8_ov/""")
    p.add_argument("model", help="the .onnx file to lower (never modified)")
    p.add_argument("--target", required=True, help="the target to build for (see onnxc.targets: openvino, onnxruntime, ...)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the folder to write the artifact into")
    p.add_argument("--precision", help="the backend's inference precision: f32 (default, verified at 1e-3), bf16, fp16")
    p.add_argument("--threads", type=int, help="intra-op threads the artifact runs with (default: the backend's)")
    p.add_argument("--no-verify", action="store_true", help="skip running the artifact against ORT on generated inputs")
    p.add_argument("--samples", type=int, default=2, help="generated input sets for verification (default 2); "
                   "outputs outside the bound exit 1 and name the first op whose output departs from ORT's "
                   "(OpenVINO), the artifact is still written")
    p.add_argument("--shape", action="append", metavar="NAME=DIMS", help=SHAPE_HELP + "; fixes the artifact's input shape")
    p.add_argument("--seed", type=int, default=0, help="seed for generated verification inputs")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from onnxc.io import load

    model = load(args.model)
    return build_and_report(model, args.target, Path(args.output), shapes=args.shape, precision=args.precision,
                            threads=args.threads, verify=not args.no_verify, samples=args.samples, seed=args.seed)


def build_and_report(model: ir.Model, target_name: str, out_dir: Path, *, shapes: list[str] | None = None,
                     precision: str | None = None, threads: int | None = None, verify: bool = True,
                     samples: int = 2, seed: int = 0) -> int:
    """Lower ``model`` for the target into ``out_dir`` (``shapes`` as ``--shape`` items), verify
    it on ``samples`` generated input sets, print the summary; exit 1 when the artifact's outputs
    are outside the verification bound (:mod:`onnxc.backends.verify`), the summary and the
    manifest then saying where the artifact's values first depart from ORT's where the backend
    can tell (:func:`onnxc.backends.verify.locate_divergence`)."""
    from onnxc.backends.base import Artifact, BackendUnavailableError, LowerOptions
    from onnxc.backends.verify import verify_runner
    from onnxc.inputs import check_input_shapes, parse_shape_overrides, seeded_feeds
    from onnxc.targets import get_target

    backend = get_target(target_name).available_lowerer()
    fixed = parse_shape_overrides(shapes)
    check_input_shapes(model, fixed)
    options = LowerOptions(shapes={name: tuple(dims) for name, dims in fixed.items()} or None,
                           precision=precision, threads=threads)
    verification, unverified = None, "--no-verify"
    with staged_folder(out_dir) as staged:
        artifact = backend.lower(model, staged, options)
        if verify:
            feeds = seeded_feeds(model, fixed, samples=samples, seed=seed)
            try:
                runner = backend.load(artifact)
            except BackendUnavailableError as error:
                # An engine built here for another machine (TensorRT without a GPU) is still the artifact asked for.
                unverified = str(error)
                artifact.metadata["verification"] = {"skipped": unverified}
            else:
                try:
                    verification = verify_runner(runner, model, feeds, precision=artifact.metadata.get("precision_ran"))
                finally:
                    runner.close()
                artifact.metadata["verification"] = verification.as_dict()
            artifact.write_manifest()
    print(format_build(Artifact.read(out_dir), verification, unverified))
    return EXIT_OK if verification is None or verification.passed else EXIT_MISMATCH


@contextlib.contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
    """A new folder beside ``out_dir``; renamed onto it when the block ends cleanly, else removed.

    An existing ``out_dir`` must be empty or an earlier onnxc build (it holds artifact.json):
    anything else is the user's and is left alone.
    """
    from onnxc.backends.base import MANIFEST

    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir.is_dir() and (not any(out_dir.iterdir()) or (out_dir / MANIFEST).exists())):
        raise OnnxcError(f"{out_dir} exists and is not an onnxc build folder; give a new -o folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = out_dir.parent / f".{out_dir.name}.{secrets.token_hex(4)}.tmp"
    staged.mkdir()
    try:
        yield staged
        if out_dir.exists():
            # Swap the old build out and the new one in; the old one goes only once the new is in place.
            old = out_dir.parent / f".{out_dir.name}.{secrets.token_hex(4)}.old"
            os.replace(out_dir, old)
            os.replace(staged, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staged, out_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def format_build(artifact, verification, unverified: str = "--no-verify") -> str:
    """The build summary: files and sizes, the precision that ran, INT8 layers, verification."""
    meta = artifact.metadata
    lines = [f"built {artifact.backend} artifact in {artifact.directory}"]
    for path in artifact.files:
        lines.append(f"  {path.name:<24} {_size(path.stat().st_size):>10}")
    if "precision_ran" in meta:
        asked = meta.get("precision_hint")
        lines.append(f"precision: {meta['precision_ran']}" + (f" (asked {asked})" if asked and asked != meta["precision_ran"] else ""))
    if meta.get("threads"):
        lines.append(f"threads: {meta['threads']}")
    if "runtime_precision" in meta:
        int8 = meta.get("int8_layers") or {}
        totals = {layer: sum(by_precision.values()) for layer, by_precision in meta["runtime_precision"].items()}
        lines.append("int8 layers at run time: " + (", ".join(f"{layer} {n}/{totals[layer]}" for layer, n in int8.items())
                                                    if int8 else "none (the model runs in float)"))
    if verification is None:
        lines.append(f"not verified ({unverified})")
    else:
        verdict = "matches ORT" if verification.passed else "DOES NOT match ORT"
        lines.append(f"verification against ORT on {verification.feeds} generated input sets: {verdict}")
        lines.extend("  " + line for line in verification.lines())
    return "\n".join(lines)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
