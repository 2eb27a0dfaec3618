"""Low-rank factorization of a BERT-style encoder's feed-forward layers: whitened vs plain SVD.

    python benchmarks/bench_lowrank.py                        # 4 layers, hidden 256, FFN 1024, seq 128
    python benchmarks/bench_lowrank.py --layers 2 --hidden 128 --intermediate 512 --ratio 0.5
    python benchmarks/bench_lowrank.py --json results.json

* FP32 baseline: the zoo BERT encoder after onnxc's default (lossless) pipeline.
* plain: ``lowrank(ratio=R, whiten=false)`` on every feed-forward MatMul (attention and pooler
  excluded): each ``W`` ``[K, N]`` becomes ``[K, r] · [r, N]`` with ``r (K + N) <= R K N``.
* whitened: the same ranks, the SVD taken in the metric of each layer's input Gram matrix
  measured on ``--calib`` calibration feeds (:mod:`onnxc.factorize`).
* Fidelity on ``--eval`` held-out feeds (other token ids than the calibration ones): cosine to
  FP32 and relative error (RMS error over the FP32 spread) of ``last_hidden_state`` and
  ``pooler_output`` (:func:`onnxc.search.errors.output_errors`).
* Latency: ORT CPU, 2 intra-op threads, batch 1, the three models interleaved round by round,
  minimum over rounds of the per-round median (:func:`onnxc.timing.ort_latencies`).

The zoo weights are random, so the FFN weights' singular values are spread out (no trained
low-rank structure): the plain SVD at half the parameters loses much of each layer, and what the
whitened one recovers comes from the inputs' own correlations (the second FFN matrix reads GELU of
a rank-``hidden`` projection). Inputs are random token ids with a full attention mask.
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import onnx_ir as ir

import onnxc
from onnxc import Context, models_zoo
from onnxc.search.errors import output_errors
from onnxc.timing import ort_latencies
from onnxc.verify import run_feeds

FFN_ONLY = "exclude=[*attention*,*pooler*]"


def token_feeds(count: int, seq_len: int, vocab: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``count`` batch-1 feeds of random token ids, a full attention mask and segment 0."""
    rng = np.random.default_rng(seed)
    return [{"input_ids": rng.integers(0, vocab, size=(1, seq_len), dtype=np.int64),
             "attention_mask": np.ones((1, seq_len), dtype=np.int64),
             "token_type_ids": np.zeros((1, seq_len), dtype=np.int64)} for _ in range(count)]


def factorized(base: ir.Model, ratio: float, whiten: bool, calibration: list[dict]) -> tuple[ir.Model, dict, float]:
    """A copy of ``base`` with its FFN layers factorized; the pass's details and its wall time."""
    model = ir.serde.deserialize_model(copy.deepcopy(ir.to_proto(base)))
    start = time.perf_counter()
    report = onnxc.compile(model, f"lowrank(ratio={ratio},whiten={str(whiten).lower()},{FFN_ONLY})",
                           context=Context(calibration_data=calibration if whiten else None))
    return model, report.passes[-1].details, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=1024)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of each FFN layer's parameters kept")
    parser.add_argument("--calib", type=int, default=32, help="calibration feeds for whitening")
    parser.add_argument("--eval", type=int, default=16, help="held-out feeds for the fidelity figures")
    parser.add_argument("--rounds", type=int, default=11, help="latency rounds (10 calls each)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    proto = models_zoo.build("bert", batch=1, seq_len=args.seq_len, layers=args.layers, hidden=args.hidden,
                             heads=args.heads, intermediate=args.intermediate, vocab=args.vocab)
    base = ir.serde.deserialize_model(proto)
    onnxc.compile(base, "default")
    calibration = token_feeds(args.calib, args.seq_len, args.vocab, seed=0)
    held_out = token_feeds(args.eval, args.seq_len, args.vocab, seed=1)
    reference = run_feeds(base, held_out, label="FP32 model")

    rows: dict[str, dict] = {}
    models = {"fp32": base}
    for label, whiten in (("plain", False), ("whitened", True)):
        model, details, seconds = factorized(base, args.ratio, whiten, calibration)
        models[label] = model
        errors = output_errors(reference, run_feeds(model, held_out, label=f"{label} model"))
        totals = details["totals"]
        rows[label] = {"layers": totals["layers"], "ffn_params_before": totals["params_before"],
                       "ffn_params_after": totals["params_after"], "ffn_params_kept": totals["params_kept"],
                       "ranks": sorted({layer["rank"] for layer in details["layers"]}),
                       "pass_s": round(seconds, 2),
                       **{f"{o.name}_cosine": o.cosine for o in errors.outputs},
                       **{f"{o.name}_rel_error": o.rel_error for o in errors.outputs}}
    latency = ort_latencies(models, held_out[0], rounds=args.rounds, calls_per_round=10, threads=2, label="BERT")

    print(f"BERT encoder: {args.layers} layers, hidden {args.hidden}, FFN {args.intermediate}, seq {args.seq_len}, "
          f"ratio {args.ratio}; {args.calib} calibration / {args.eval} held-out feeds")
    print(f"FP32 latency {latency['fp32'] * 1e3:.2f} ms")
    header = f"{'':>9} {'FFN params':>19} {'kept':>6} {'ranks':>10} {'pooled cos':>11} {'pooled rel':>11} " \
             f"{'hidden cos':>11} {'hidden rel':>11} {'latency':>9} {'vs FP32':>8}"
    print(header)
    for label, row in rows.items():
        ranks = ",".join(str(r) for r in row["ranks"])
        row["latency_ms"] = latency[label] * 1e3
        row["latency_ratio"] = latency[label] / latency["fp32"]
        print(f"{label:>9} {row['ffn_params_before']:>9}->{row['ffn_params_after']:<9} {row['ffn_params_kept']:>6.3f} "
              f"{ranks:>10} {row['pooler_output_cosine']:>11.5f} {row['pooler_output_rel_error']:>11.4f} "
              f"{row['last_hidden_state_cosine']:>11.5f} {row['last_hidden_state_rel_error']:>11.4f} "
              f"{row['latency_ms']:>7.2f}ms {row['latency_ratio']:>7.3f}x")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "fp32_latency_ms": latency["fp32"] * 1e3, "results": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
