"""Pruning accuracy on a real task: the digits CNN (``onnxc.models_zoo.digits``) at 70% and 50% of its MACs.

    python benchmarks/bench_prune_digits.py                       # onnxc rows, and Torch-Pruning's when installed
    python benchmarks/bench_prune_digits.py --macs 0.5 --no-torch

Torch-Pruning is a benchmark dependency only, never a runtime or dev one; into the venv:
``pip install torch==2.13.0 torch-pruning`` (a CPU build of torch is enough).

Rows, each pruned from the trained model and evaluated by ``digits.evaluate`` (ONNX Runtime,
top-1 on the 450 held-out test digits), no fine-tuning anywhere:

* onnxc plain: ``prune(macs=M, criterion=l1, reconstruct=false, search=false)``;
* onnxc + reconstruction: the same channels, consumers refitted by least squares on the
  calibration digits (``search=false``);
* onnxc searched + reconstruction: per-group ratios searched by measured output error, then
  refitted (the pass's default with calibration data); also with ``criterion=taylor``;
* Torch-Pruning: ``MagnitudePruner`` with L1 ``MagnitudeImportance`` on the PyTorch ``DigitsCNN``
  (models_zoo/train_digits.py) loaded with the same weights, the classifier ignored, its uniform
  ``pruning_ratio`` scanned for the channel counts whose MACs come closest to M; exported to ONNX
  and evaluated the same way.

Every row's MACs are counted by ``onnxc.costs`` on the ONNX model evaluated (``MACs kept``), so
rows at one target are comparable even when channel counts cannot hit it exactly. ``round_to=1``:
the net has 16 and 32 channels. Calibration: the zoo's "calib" split (128 training digits) in
feeds of 4; the search judges on the last 8 feeds, held apart.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from onnxc.context import Context
from onnxc.costs import compute_costs
from onnxc.models_zoo import digits
from onnxc.registry import create_pass

ROWS = (
    ("onnxc plain (l1)", {"criterion": "l1", "reconstruct": False, "search": False}),
    ("onnxc + reconstruction", {"criterion": "l1", "search": False}),
    ("onnxc searched + reconstruction", {"criterion": "l1"}),
    ("onnxc searched + reconstruction, taylor", {"criterion": "taylor"}),
)


def calibration_feeds(batch: int = 4) -> list[dict[str, np.ndarray]]:
    x, _ = digits.load_split("calib")
    return [{"input": x[start:start + batch]} for start in range(0, len(x), batch)]


def macs(model: ir.Model) -> int:
    return compute_costs(model, {"input": [1, 1, 8, 8]}).total_macs


def channels(model: ir.Model) -> str:
    return "/".join(str(node.inputs[1].shape[0]) for node in model.graph if node.op_type == "Conv")


def onnxc_row(target: float, options: dict, feeds: list) -> ir.Model:
    model = ir.serde.deserialize_model(digits.build_digits())
    pass_ = create_pass("prune", {"macs": target, "round_to": 1, **options})
    pass_.bind(Context(calibration_data=feeds if options.get("reconstruct", True) else None))(model)
    return model


def torch_pruning_row(target: float, total: int) -> ir.Model:
    """Torch-Pruning's L1 MagnitudePruner at the uniform ratio whose MACs come closest to ``target``."""
    import torch
    import torch_pruning as tp

    sys.path.insert(0, str(Path(digits.__file__).parent))
    from train_digits import DigitsCNN

    weights = np.load(digits.WEIGHTS_PATH)
    example = torch.from_numpy(digits.load_split("test")[0][:1])
    best: tuple[float, ir.Model] | None = None
    for step in range(1, 32):
        net = DigitsCNN()
        net.load_state_dict({name: torch.from_numpy(weights[name]) for name in weights.files}, strict=False)
        net.eval()
        pruner = tp.pruner.MagnitudePruner(net, example, importance=tp.importance.MagnitudeImportance(p=1),
                                           pruning_ratio=step / 32, ignored_layers=[net.fc])
        pruner.step()
        buffer = io.BytesIO()
        torch.onnx.export(net, example, buffer, input_names=["input"], output_names=["logits"], dynamo=False,
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
        model = ir.serde.deserialize_model(onnx.load_from_string(buffer.getvalue()))
        distance = abs(macs(model) / total - target)
        if best is None or distance < best[0]:
            best = (distance, model)
    return best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--macs", type=float, nargs="+", default=[0.7, 0.5])
    parser.add_argument("--no-torch", action="store_true", help="leave out the Torch-Pruning rows")
    args = parser.parse_args()
    original = ir.serde.deserialize_model(digits.build_digits())
    total = macs(original)
    feeds = calibration_feeds()
    rows = [("original", "-", 1.0, channels(original), digits.evaluate(original))]
    for target in args.macs:
        for label, options in ROWS:
            model = onnxc_row(target, options, feeds)
            rows.append((label, f"{target:.2f}", macs(model) / total, channels(model), digits.evaluate(model)))
        if not args.no_torch:
            try:
                model = torch_pruning_row(target, total)
            except ImportError as error:
                print(f"Torch-Pruning rows left out: {error} (pip install torch==2.13.0 torch-pruning)")
                args.no_torch = True
            else:
                rows.append(("Torch-Pruning L1 (MagnitudePruner)", f"{target:.2f}", macs(model) / total,
                             channels(model), digits.evaluate(model)))
    header = ("variant", "MACs target", "MACs kept", "conv channels", "test accuracy")
    table = [header] + [(label, target, f"{kept:.3f}", chans, f"{accuracy:.4f}")
                        for label, target, kept, chans, accuracy in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    main()
