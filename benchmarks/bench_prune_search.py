"""Allocation and criteria of ``prune`` compared at one MACs target: held-out output error of each.

    python benchmarks/bench_prune_search.py                                # ResNet-18, width 16, 32 px
    python benchmarks/bench_prune_search.py --model mobilenetv2 --image 64 --macs 0.6

Every row prunes the same zoo model (random weights, so the measure is fidelity to it, not
accuracy) to ``--macs`` with ``round_to=1``: the global ranking (``search=false``) without and
with reconstruction, and the searched per-group ratios (the default with calibration data) with
each criterion, and with refitted sensitivity candidates (``search_refit=true``). Calibration:
``--calib`` random-normal feeds (the search judges on the last quarter, held apart); the error is measured on
``--test`` other feeds: RMS error over the logits' spread (``onnxc.search.errors``). Time is the
pass's wall time on this machine (noisy on a shared one).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import onnx_ir as ir

from onnxc.context import Context
from onnxc.models_zoo import build
from onnxc.registry import create_pass
from onnxc.search.errors import output_errors
from onnxc.verify import run_feeds

ROWS = (
    ("global l1, no reconstruction", {"reconstruct": False, "search": False}),
    ("global l1 + reconstruction", {"search": False}),
    ("global taylor + reconstruction", {"search": False, "criterion": "taylor"}),
    ("searched l1 + reconstruction", {}),
    ("searched l1, refitted candidates", {"search_refit": True}),
    ("searched taylor + reconstruction", {"criterion": "taylor"}),
    ("searched activation + reconstruction", {"criterion": "activation"}),
)


def random_feeds(count: int, seed: int, image: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"input": rng.normal(size=(1, 3, image, image)).astype(np.float32)} for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", choices=["resnet18", "resnet50", "mobilenetv2"])
    parser.add_argument("--image", type=int, default=32)
    parser.add_argument("--width", type=int, default=16, help="ResNet base width")
    parser.add_argument("--macs", type=float, default=0.5)
    parser.add_argument("--calib", type=int, default=24)
    parser.add_argument("--test", type=int, default=16)
    args = parser.parse_args()
    options = {"image": args.image, "classes": 10}
    if args.model.startswith("resnet"):
        options["width"] = args.width
    calibration, test = random_feeds(args.calib, 1, args.image), random_feeds(args.test, 2, args.image)
    reference = run_feeds(ir.serde.deserialize_model(build(args.model, **options)), test)
    table = [("variant", "MACs kept", "held-out rel. error", "candidates", "predicted", "time s")]
    for label, row in ROWS:
        model = ir.serde.deserialize_model(build(args.model, **options))
        start = time.perf_counter()
        pass_ = create_pass("prune", {"macs": args.macs, "round_to": 1, **row})
        pass_.bind(Context(calibration_data=calibration))(model)
        elapsed = time.perf_counter() - start
        details, search = pass_.details(), pass_.details().get("search", {})
        error = output_errors(reference, run_feeds(model, test)).max_rel_error
        table.append((label, f"{details['macs_kept']:.3f}", f"{error:.4f}", search.get("evaluations", "-"),
                      search.get("predicted_rel_error", "-"), f"{elapsed:.1f}"))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    main()
