"""The ``lowrank`` pass: a contraction with a constant weight becomes two thinner ones (truncated SVD).

    onnxc compile model.onnx -o small.onnx --passes "default,lowrank(ratio=0.5)"
    onnxc compile bert.onnx -o small.onnx --passes "default,lowrank(energy=0.9)" --calib-data calib/
    onnxc compile bert.onnx ... --passes "lowrank(ratio=0.5,exclude=[*attention*,*pooler*])" --calib-random
    onnxc compile model.onnx -o small.onnx --passes "default,lowrank(max_rel_error=0.05)" --calib-data calib/

What is factorized (main graph): ``MatMul`` with a constant 2-D weight as its second input (the
first may have any batch dims), ``Gemm`` with ``transA=0`` (``transB``, ``alpha``, ``beta`` and the
bias stay, on the second Gemm; the first has neither), and a 1×1 ``Conv`` with ``group=1`` (two 1×1
Convs: the first keeps strides and pads, the second the bias). ``W`` ``[K, N]`` becomes ``A``
``[K, r]`` then ``B`` ``[r, N]``, only where ``r < K N / (K + N)``, so parameters and
multiply-accumulates both drop.

A 2-D kh×kw ``Conv`` (``group=1``, explicit pads) becomes a kh×1 Conv to ``r`` channels then a
1×kw Conv (spatial SVD, Jaderberg et al. 2014 / Tai et al. 2016): the weight ``[O, C, kh, kw]`` read
as the matrix ``[C·kh, O·kw]`` is factorized, the first Conv takes the vertical stride, dilation and
pads, the second the horizontal ones and the bias. The first runs on every input column, so with
a horizontal stride ``sw`` the break-even rank is ``O C kh kw / (C kh sw + O kw)``. Whitened, the
matrix's rows are the kh×1 column patches the first Conv reads: the output error is then exact up
to the correlation between patches ``kw`` columns apart, which the metric leaves out. A 3×3 Conv
(16→32 channels) over images whose channels mostly move together, at half its parameters:
relative output error 0.60 plain, 0.09 whitened (tests/passes/test_lowrank.py).

The rank: ``energy`` keeps the smallest rank holding that fraction of the squared singular values
(default 0.95); ``ratio`` keeps the largest rank whose factors hold at most that fraction of the
layer's parameters. With ``whiten`` (default: on when calibration data is given) the SVD is taken
in the metric of the layer's input (:mod:`onnxc.factorize`): it minimises ``‖X W − X A B‖`` over the
calibration inputs rather than ``‖W − A B‖``, and the energy is that of the variance of the
layer's outputs (centred: a large input mean would otherwise count as most of it). On the BERT
zoo encoder's feed-forward layers at half their parameters (4 layers, hidden 256) it took the
pooled output's cosine to FP32 from 0.505 (plain) to 0.976 at the same ranks
(``benchmarks/bench_lowrank.py``).

The rank by an output error budget: with ``max_rel_error``, ``min_cosine`` or ``max_error`` (the
bound quantize's guard uses, :mod:`onnxc.search`) the ranks are searched instead (:mod:`.search`):
candidates of the whole model are judged on calibration feeds held apart from those the Gram
matrices came from, first at one energy for every layer, then lowering layers one by one while
the bound holds. On two parallel branches of the same spectrum, one 16x louder at the output,
``max_rel_error=0.05`` kept 0.41 of the parameters where the best uniform energy meeting the same
bound (0.999) kept 0.69 (tests/passes/test_lowrank.py).

The report (``details``) gives each factorized layer's rank, parameters before and after and the
energy kept, each skipped layer with its reason, and the totals. Every layer's Gram matrix is
measured on the model as it came in, in one pass over the data: a layer is whitened by the inputs
the float layers before it give, not by those of their factorized versions.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxc.calibration import GramAccumulator, GramRequest, collect_grams
from onnxc.errors import PipelineError
from onnxc.factorize import Spectrum, rank_for_ratio, spectrum
from onnxc.graph.edit import ValueNames
from onnxc.irutil import constant_array, use_count
from onnxc.pass_base import Pass, PassResult, option
from onnxc.passes.lowrank.rewrite import Layer, factorize_layer, weight_matrix
from onnxc.passes.lowrank.search import LEVELS, Assignment, Ladder, search_levels
from onnxc.search.bound import Bound
from onnxc.search.errors import Measured
from onnxc.search.feeds import Split, split_feeds
from onnxc.search.variants import Variants
from onnxc.registry import register_pass

DEFAULT_ENERGY = 0.95
# Whitening a weight shared by unrolled steps reads this many of its readers' inputs.
_GRAM_READERS = 4
def _why_nothing_factorized(skipped: dict[str, str]) -> str:
    """One line for the report when the model comes back as it was."""
    if not skipped:
        return "nothing to factorize: no MatMul, Gemm or Conv with a constant weight"
    name, reason = next(iter(skipped.items()))
    return f"no layer factorized ({len(skipped)} skipped, see details['skipped']; first: {name}: {reason})"


@register_pass
class LowRank(Pass):
    """Factorize MatMul/Gemm/Conv weights by truncated SVD (whitened by calibration data when given)."""

    name = "lowrank"
    lossless = False

    energy: float | None = option(None, "keep the smallest rank holding this fraction of the squared singular "
                                        "values, of the output variance when whitened (default 0.95 when ratio "
                                        "is not given)")
    ratio: float | None = option(None, "keep the largest rank whose factors hold at most this fraction of the "
                                       "layer's parameters, in (0, 1)")
    min_size: int = option(4096, "leave weights with fewer entries as they are")
    exclude: list[str] = option([], "node or weight names (globs) to leave as they are")
    whiten: bool | None = option(None, "factorize in the metric of each layer's input covariance "
                                       "(default: true when calibration data is given)")
    ridge: float = option(1e-3, "whitening: added to the input Gram's eigenvalues, relative to their mean")
    calib_samples: int | None = option(None, "whitening: use at most this many calibration feeds")
    max_rel_error: float | None = option(None, "rank search: every float output's RMS error over its spread "
                                               "stays at most this (needs calibration data)")
    min_cosine: float | None = option(None, "rank search: every float output's cosine to the original stays "
                                            "at least this")
    max_error: float | None = option(None, "rank search: largest absolute output error allowed")
    max_evaluations: int = option(64, "rank search: candidates tried when lowering layers one by one")

    def __post_init__(self) -> None:
        self._details: dict[str, Any] = {}
        if self.energy is not None and self.ratio is not None:
            raise PipelineError("lowrank: give energy or ratio, not both")
        if self.energy is not None and not 0.0 < self.energy <= 1.0:
            raise PipelineError(f"lowrank: energy must be in (0, 1], got {self.energy}")
        if self.ratio is not None and not 0.0 < self.ratio < 1.0:
            raise PipelineError(f"lowrank: ratio must be in (0, 1), got {self.ratio}")
        if self.ridge < 0:
            raise PipelineError(f"lowrank: ridge must be >= 0, got {self.ridge}")
        if self.min_size < 0:
            raise PipelineError(f"lowrank: min_size must be >= 0, got {self.min_size}")
        if self.calib_samples is not None and self.calib_samples < 1:
            raise PipelineError(f"lowrank: calib_samples must be positive, got {self.calib_samples}")
        if self._bound().active and (self.energy is not None or self.ratio is not None):
            raise PipelineError("lowrank: a rank search (max_rel_error, min_cosine or max_error) chooses the ranks; "
                                "give it without energy or ratio")
        if self.max_evaluations < 0:
            raise PipelineError(f"lowrank: max_evaluations must be >= 0, got {self.max_evaluations}")

    def needs(self) -> tuple[str, ...]:
        return ("calibration",) if self.whiten or self._bound().active else ()

    def _bound(self) -> Bound:
        return Bound(self.max_error, self.min_cosine, self.max_rel_error)

    def details(self) -> dict[str, Any]:
        return dict(self._details)

    def _whitened(self) -> bool:
        if self.whiten is not None:
            return self.whiten
        return self.context.calibration_data is not None or self.context.calibration_allow_random

    def call(self, model: ir.Model) -> PassResult:
        layers, skipped = self._plan(model)
        bound = self._bound()
        split = split_feeds(model, self.context, self.calib_samples) if bound.active and layers else None
        limit = self.calib_samples if split is None else split.calibration_limit
        grams = self._grams(model, layers, limit) if self._whitened() and layers else {}
        spectra = {}
        for layer in layers:
            gram, covariance = grams.get(layer.name, (None, None))
            spec = spectrum(layer.matrix, gram, self.ridge)
            # Energy counts the outputs' variance: with the mean in it (the uncentred Gram), inputs
            # far from zero (after a ReLU) put most of it in one direction and energy=0.9 keeps rank 1.
            measure = spec if covariance is None else spectrum(layer.matrix, covariance, self.ridge)
            spectra[layer.name] = (spec, measure, gram is not None)
        if split is not None:
            ranks, search = self._searched_ranks(model, layers, spectra, bound, split)
        else:
            ranks, search = {layer.name: self._rank(layer, spectra[layer.name][1]) for layer in layers}, None
        names = ValueNames(model)
        factorized = []
        for layer in layers:
            rank, reason = ranks[layer.name]
            if reason:
                skipped[layer.name] = reason
                continue
            spec, measure, whitened = spectra[layer.name]
            factorize_layer(model.graph, layer, *spec.factors(rank), names)
            k, n = layer.matrix.shape
            factorized.append({"node": layer.name, "op": layer.node.op_type, "shape": [k, n], "rank": rank,
                               "params_before": k * n, "params_after": rank * (k + n),
                               "energy": round(measure.energy(rank), 6), "whitened": whitened})
        before = sum(item["params_before"] for item in factorized)
        after = sum(item["params_after"] for item in factorized)
        self._details = {
            "layers": factorized,
            "skipped": skipped,
            "totals": {"layers": len(factorized), "params_before": before, "params_after": after,
                       "params_kept": round(after / before, 6) if before else 1.0},
            **({"search": search} if search is not None else {}),
        }
        if not factorized:
            self._details["reason"] = _why_nothing_factorized(skipped)
        return PassResult(model, bool(factorized))

    def _plan(self, model: ir.Model) -> tuple[list[Layer], dict[str, str]]:
        """The main graph's contractions with a constant weight, and why each left out was left out.
        Nodes reading one weight the same way (op and attributes) are one layer: they keep sharing it."""
        layers, skipped = self._readers(model)
        by_weight: dict[int, list[Layer]] = {}
        for layer in layers:
            by_weight.setdefault(id(layer.node.inputs[1]), []).append(layer)
        planned = []
        for readers in by_weight.values():
            first = readers[0]
            kinds = {(r.node.op_type, tuple(sorted((k, repr(a.value)) for k, a in r.node.attributes.items())))
                     for r in readers}
            if len(kinds) > 1 or len(readers) != use_count(first.node.inputs[1]):
                for reader in readers:
                    skipped[reader.name] = "its weight is shared with nodes that read it otherwise"
                continue
            planned.append(dataclasses.replace(first, sharers=tuple(r.node for r in readers[1:]),
                                               sharer_positions=tuple(r.position for r in readers[1:])))
        return planned, skipped

    def _readers(self, model: ir.Model) -> tuple[list[Layer], dict[str, str]]:
        layers, skipped = [], {}
        for position, node in enumerate(model.graph):
            if node.op_type not in ("MatMul", "Gemm", "Conv") or node.domain not in ("", "ai.onnx"):
                continue
            weight_value = node.inputs[1] if len(node.inputs) > 1 else None
            weight = constant_array(weight_value)
            if weight is None:
                continue  # two activations (attention scores) or an overridable weight: nothing to factorize
            name = node.name or f"{node.op_type}_{position}"
            patterns = (name, weight_value.name or "")
            if any(fnmatch.fnmatchcase(item, pattern) for pattern in self.exclude for item in patterns):
                skipped[name] = "excluded"
                continue
            matrix, spatial, reason = weight_matrix(node, weight)
            if reason is None and weight.size < self.min_size:
                reason = f"{weight.size} weights, fewer than min_size={self.min_size}"
            if reason is None and weight.dtype.kind != "f":
                reason = f"weight of type {weight.dtype} (only floating-point weights are factorized)"
            if reason:
                skipped[name] = reason
                continue
            layers.append(Layer(node, position, name, weight, matrix, spatial))
        return layers, skipped

    def _rank(self, layer: Layer, spec: Spectrum) -> tuple[int, str | None]:
        k, n = layer.matrix.shape
        even = layer.break_even()
        if self.ratio is not None:
            rank = min(rank_for_ratio(k, n, self.ratio), int(np.ceil(even)) - 1)
            if rank < 1:
                return 0, f"no rank fits ratio={self.ratio} (break-even rank {even:.1f})"
            return rank, None
        energy = DEFAULT_ENERGY if self.energy is None else self.energy
        rank = spec.rank_for_energy(energy)
        if rank >= even:
            return rank, f"rank {rank} for energy={energy} saves nothing (break-even rank {even:.1f})"
        return rank, None

    def _searched_ranks(self, model: ir.Model, layers: list[Layer], spectra: dict, bound: Bound,
                        split: Split) -> tuple[dict[str, tuple[int, str | None]], dict]:
        """Each layer's rank from the output error budget (:mod:`.search`), judged on held-apart feeds."""
        ladders = []
        for layer in layers:
            k, n = layer.matrix.shape
            even = layer.break_even()
            level_ranks = (spectra[layer.name][1].rank_for_energy(level) for level in LEVELS)
            ladders.append(Ladder(tuple(r if r < even else None for r in level_ranks), k * n, k + n))

        def write(candidate: ir.Model, keep: set[int] | None) -> None:
            nodes = list(candidate.graph)
            names = ValueNames(candidate)
            for code in sorted(keep or ()):
                index, level = divmod(code, len(LEVELS))
                layer = layers[index].in_graph(nodes)
                factorize_layer(candidate.graph, layer, *spectra[layer.name][0].factors(ladders[index].ranks[level]), names)

        variants = Variants(model, write, split.guard, label="low-rank candidate")

        def error(levels: Assignment) -> Measured:
            return variants.error({i * len(LEVELS) + level for i, level in enumerate(levels)
                                   if level is not None and ladders[i].ranks[level] is not None})

        outcome = search_levels(ladders, error, bound, max_evaluations=self.max_evaluations,
                                progress=self.context.progress)
        ranks = {}
        for layer, ladder, level in zip(layers, ladders, outcome.levels):
            rank = None if level is None else ladder.ranks[level]
            if rank is None:
                ranks[layer.name] = (0, "kept whole: the output error bound needs it" if level is None
                                     else f"no rank saves anything at the energy the bound needs ({LEVELS[level]})")
            else:
                ranks[layer.name] = (rank, None)
        return ranks, {**outcome.record, "feeds": split.note}

    def _grams(self, model: ir.Model, layers: list[Layer], limit: int | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``XᵀX / n`` and the covariance of each layer's input rows over the calibration data, by layer name.

        A shared weight's metric is the sum over its readers' inputs (at most ``_GRAM_READERS`` of
        them, evenly spaced): an unrolled LSTM's 40 steps over 4096 inputs would hold 15 GB of Grams.
        """
        self.require("calibration")
        requests: dict[str, list[GramRequest]] = {}
        for layer in layers:
            nodes = layer.readers()
            picked = sorted({round(i * (len(nodes) - 1) / max(_GRAM_READERS - 1, 1)) for i in range(_GRAM_READERS)})
            requests[layer.name] = [GramRequest(nodes[i].inputs[0].name, layer.rows(), layer.matrix.shape[0])
                                    for i in picked if i < len(nodes)]
        states = collect_grams(model, [r for wanted in requests.values() for r in wanted],
                               lambda: self.context.calibration(model, limit), self.context.progress)
        grams = {}
        for layer in layers:
            sources = [states[r] for r in requests[layer.name] if states[r].count > 0]
            if not sources:
                continue
            merged = GramAccumulator(sources[0].rows)
            for state in sources:
                merged.merge(state)
            state = merged.state()
            grams[layer.name] = (state.gram[0] / state.count, state.covariance()[0])
        return grams
