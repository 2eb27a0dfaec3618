"""``onnxc bench``: latency and throughput of an original and compressed models on a target,
across batch sizes, interleaved in one run (:mod:`onnxc.benchmarking`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from onnxc.cli.common import EXIT_OK, SHAPE_HELP, Subparsers, add_command
from onnxc.errors import OnnxcError


def add_parser(sub: Subparsers) -> None:
    p = add_command(sub, "bench", "Time an original and compressed models on a target across batch sizes.", """
        onnxc bench model.onnx model.int8.onnx --target onnxruntime
        onnxc bench model.onnx model.int8.onnx --batch 1,8,32 --threads 2 --json bench.json --plot bench.png
        onnxc bench model.onnx model.int8.onnx --latency-budget 20     # largest batch within 20 ms (p90)
        onnxc bench model.onnx build/ --target openvino                  # build/ from `onnxc build`
        onnxc bench bert.onnx bert.int8.onnx --shape input_ids=1x128""")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="the original .onnx first, then compressed ones (.onnx, or a folder `onnxc build` wrote)")
    p.add_argument("--target", default="onnxruntime", help="the target to lower and time on (default: onnxruntime)")
    p.add_argument("--batch", default="1,8,16", help="batch sizes, comma separated (default: 1,8,16)")
    p.add_argument("--shape", action="append", metavar="NAME=DIMS", help=SHAPE_HELP + "; its batch dim is replaced")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per model before timing (default 3)")
    p.add_argument("--threads", type=int, help="intra-op threads of the runtime (default: its own)")
    p.add_argument("--precision", help="the backend's inference precision, e.g. f32 or bf16 (default: its own)")
    p.add_argument("--seed", type=int, default=0, help="seed for generated inputs")
    p.add_argument("--latency-budget", type=float, metavar="MS", help="say which largest batch fits MS milliseconds (p90)")
    p.add_argument("--json", metavar="FILE", help="write every figure and the machine's facts as JSON")
    p.add_argument("--plot", metavar="FILE", help="plot latency and throughput against batch size (.png or .svg)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from onnxc.benchmarking import bench, check_plot_path
    from onnxc.inputs import parse_shape_overrides
    from onnxc.progress import progress_bar

    batches = _batches(args.batch)
    if args.rounds < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        raise OnnxcError("--rounds and --threads must be at least 1, --warmup at least 0")
    if args.latency_budget is not None and args.latency_budget <= 0:
        raise OnnxcError(f"--latency-budget must be positive, got {args.latency_budget:g}")
    if args.plot:
        check_plot_path(args.plot)
    with progress_bar(desc="bench", enabled=False if args.no_progress else None, unit="run") as bar:
        def progress(what: str, done: int, total: int) -> None:
            bar.total = total
            bar.set_description(what)
            bar.update(done - bar.n)

        result = bench(_named(args.models), args.target, batches, shapes=parse_shape_overrides(args.shape),
                       rounds=args.rounds, warmup=args.warmup, threads=args.threads, precision=args.precision,
                       seed=args.seed, progress=progress)
    print(result.table(args.latency_budget))
    if args.json:
        result.write_json(args.json, args.latency_budget)
    if args.plot:
        result.plot(args.plot)
    return EXIT_OK


def _batches(text: str) -> list[int]:
    try:
        batches = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        batches = []
    if not batches or any(b < 1 for b in batches):
        raise OnnxcError(f"bad --batch {text!r}: expected positive integers such as 1,8,16")
    return sorted(set(batches))


def _named(paths: list[str]) -> dict[str, str]:
    """Models by a short name: the file or folder name, made unique where two are alike."""
    named: dict[str, str] = {}
    for path in paths:
        base = Path(path).name.removesuffix(".onnx") or path
        name, count = base, 1
        while name in named:
            count += 1
            name = f"{base}#{count}"
        named[name] = path
    return named
