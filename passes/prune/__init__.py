"""The ``prune`` pass: structured channel removal on any ONNX graph.

    onnxc compile model.onnx -o small.onnx --passes "default,prune(macs=0.5)" --calib-data calib/
    onnxc compile ... --passes "prune(ratio=0.3,criterion=l2,round_to=8)"
    onnxc compile ... --passes "prune(params=0.6,criterion=taylor,search=false)" --calib-data calib/

Channels are removed densely (weights sliced, not zeroed) from the dependency groups of
:mod:`onnxc.graph.groups`; a group that cannot lose channels says why in the report. Steps, one
module each: ``importance`` (per-channel scores: ``l1``/``l2``/``bn_scale`` from the weights,
``activation``/``taylor`` measured on calibration data), ``select`` (how many each group keeps:
uniform ``ratio``, or a global ranking to a ``macs``/``params`` target), ``search`` (with
calibration data and a ``macs``/``params`` target, by default: per-group ratios chosen by each
group's measured output error, AIMET's greedy selection; ``search=false`` for the global
ranking), ``refit`` (least-squares reconstruction of the consumers on calibration data),
``apply`` and ``remove`` (refit, then slicing). With the search, candidates are judged on feeds
held apart from the fitting ones: the Context's verification inputs, else the last quarter (2 to
8 feeds) of the calibration feeds (all of them, not held apart, below 6 feeds), as the other
lossy searches split them; the report has each group's ratio and sensitivities, the number of candidates run, and the
final model's error on those feeds beside the predicted one.

Measured with ``python benchmarks/bench_prune.py --models M --rounds 15 --cpu-time --also-round-to 8``
(224 px, 16 calibration feeds, 32 held out, ORT 1.32 CPU on a 2-core AVX-512 machine shared with
other jobs; latency over the FP32 model's, all variants interleaved in one run: wall clock at 2
threads, and CPU time at one thread, which the other jobs move far less; two MobileNetV2 runs):

    model        variant                     MACs kept  params kept  latency        cpu 1t         fidelity
    resnet50     int8                        1.000      1.002        0.336x         0.289x         cos 1.0000 rel 0.008
    resnet50     pruned global               0.499      0.481        0.544x         0.493x         cos 0.9990 rel 0.047
    resnet50     pruned global+int8          0.499      0.483        0.188x         0.158x         cos 0.9990 rel 0.047
    resnet50     pruned searched             0.501      0.611        0.539x         0.499x         cos 0.9996 rel 0.034
    resnet50     pruned searched+int8        0.501      0.613        0.204x         0.164x         cos 0.9996 rel 0.035
    resnet50     pruned searched round_to=8  0.500      0.610        0.561x         0.497x         cos 0.9996 rel 0.034
    mobilenetv2  int8                        1.000      1.013        0.485, 0.580x  0.471, 0.500x  cos 1.0000 rel 0.009
    mobilenetv2  pruned global               0.496      0.463        0.500, 0.670x  0.493, 0.511x  cos 1.0000 rel 0.008
    mobilenetv2  pruned global+int8          0.496      0.472        0.394, 0.463x  0.302, 0.289x  cos 1.0000 rel 0.008
    mobilenetv2  pruned searched             0.500      0.842        0.508, 0.566x  0.513, 0.561x  cos 1.0000 rel 0.009
    mobilenetv2  pruned searched+int8        0.500      0.853        0.245, 0.510x  0.264, 0.314x  cos 0.9999 rel 0.012
    mobilenetv2  pruned searched round_to=8  0.500      0.912        0.559, 0.658x  0.598, 0.652x  cos 0.9999 rel 0.014

With ``round_to=8`` (the former default) the MobileNetV2 search cut its early groups to 8, 24 and
40 channels, which ORT's NCHWc convolutions pad to their 16-channel blocks on AVX-512: MACs
without time. A depthwise MAC costs about two dense ones there (per-node ORT profile), but pricing
the search's cuts that way chose the same plan. In int8, ORT's depthwise and 3-channel stem
convolutions run no faster than in float (per-node profile; keeping them float costs more in
conversions), so int8 alone gives about 2x on MobileNetV2 and pruning to half the MACs multiplies
it by about 1.7-1.9x.

Allocation, benchmarks/bench_prune_search.py (zoo ResNet-18 of width 16 with random weights, 32
px, ``macs=0.5``, 24 random calibration feeds of which the search judges on 6, RMS error over the
logits' spread on 16 other feeds): global l1 ranking 0.874 without reconstruction, 0.324 with;
global taylor 0.213; searched ratios 0.162 (36 candidates; 0.159 with refitted candidates, whose
prediction was 0.170), searched with taylor 0.209, with activation 0.205 (all with reconstruction).

Real accuracy, benchmarks/bench_prune_digits.py (the zoo's digits CNN, 450 held-out test digits,
128 calibration digits, no fine-tuning; MACs counted by onnxc on each evaluated model; conv2's
channels reach the classifier through a Flatten of 4x4 maps, which the groups follow):

    variant                                  MACs target  MACs kept  conv channels  test accuracy
    original                                 -            1.000      16/32          0.9911
    onnxc plain (l1)                         0.70         0.706      11/32          0.0956
    onnxc + reconstruction                   0.70         0.706      11/32          0.9844
    onnxc searched + reconstruction          0.70         0.692      16/21          0.9933
    onnxc searched + reconstruction, taylor  0.70         0.685      14/24          0.9933
    Torch-Pruning L1 (MagnitudePruner)       0.70         0.708      13/27          0.8178
    onnxc plain (l1)                         0.50         0.505      9/27           0.0978
    onnxc + reconstruction                   0.50         0.505      9/27           0.9778
    onnxc searched + reconstruction          0.50         0.496      16/14          0.9711
    onnxc searched + reconstruction, taylor  0.50         0.507      12/20          0.9933
    Torch-Pruning L1 (MagnitudePruner)       0.50         0.508      11/22          0.3667

conv1's 16 channels have L1 norms within 1.2..2.1 of each other, so plain removal drops
channels that carry as much as the kept ones; the refit re-expresses the consumers' response
from the kept channels (and puts the removed ones' mean into the bias). The searched rows refit
on 96 digits (32 are held apart to judge).
"""
from __future__ import annotations

import fnmatch
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxc.analysis import parameter_count
from onnxc.calibration import ChannelMoments, collect_activations
from onnxc.costs import compute_costs, concrete_shapes
from onnxc.errors import PipelineError
from onnxc.graph.groups import Group, Groups, find_groups
from onnxc.inputs import resolve_input_shapes
from onnxc.pass_base import Pass, PassResult, option
from onnxc.passes.prune.apply import consumers_of, prune_model
from onnxc.passes.prune.importance import CRITERIA, DATA_CRITERIA, group_scores, measured_tensors
from onnxc.passes.prune.refit import Grams, collect_grams
from onnxc.passes.prune.search import RATIOS, Searched, search_counts
from onnxc.passes.prune.select import MacsModel, ParamsModel, by_cost, by_ratio, kept_indices
from onnxc.registry import register_pass
from onnxc.search.errors import output_errors
from onnxc.search.feeds import split_feeds
from onnxc.verify import run_feeds

# How many unprunable groups the report spells out.
_REASONS_SHOWN = 10


@register_pass
class Prune(Pass):
    """Remove whole channels (structured pruning) to a ratio or a MACs/parameter target, refitting consumers on calibration data."""

    name = "prune"
    lossless = False

    ratio: float | None = option(None, "fraction of each group's channels removed (uniform)")
    macs: float | None = option(None, "fraction of the original MACs to keep")
    params: float | None = option(None, "fraction of the original parameters to keep")
    max_ratio: float = option(0.8, "with macs/params: the largest fraction of one group's channels removed")
    criterion: str = option("l1", "channel importance: l1 | l2 | bn_scale | activation | taylor "
                                  "(the last two measured on calibration data)")
    # ORT's CPU convolutions run channel blocks (NCHWc) of 8 with AVX2 and 16 with AVX-512, padding a
    # count that is not a multiple: MobileNetV2 at 64 px pruned to 50% of its MACs ran 2.7x slower than
    # the original with unrounded counts, 0.35x of it with multiples of 8. At 224 px on an AVX-512 CPU
    # (ORT 1.32, one thread, CPU time), the searched plan ran 0.60x of the original with multiples of 8
    # (cuts to 8, 24, 40 channels bought MACs, not time) and 0.52x with multiples of 16.
    round_to: int = option(16, "keep a multiple of this many channels per group (1: any count)")
    protect: list[str] = option([], "node or output names (globs) whose channels stay")
    reconstruct: bool | None = option(None, "refit consumers by least squares on calibration data "
                                            "(default: when calibration data is given)")
    ridge: float = option(1e-3, "reconstruction ridge, relative to the mean input energy")
    calib_samples: int | None = option(32, "calibration feeds read for reconstruction and data criteria")
    search: bool | None = option(None, "with macs/params: search per-group ratios by their measured output error "
                                       "(default: when calibration data is given)")
    search_ratios: list[float] = option(list(RATIOS), "with search: the ratios each group's sensitivity is measured at")
    max_evaluations: int = option(96, "with search: the most sensitivity candidates run (fewer ratios per group past it)")
    search_refit: bool = option(False, "with search and reconstruction: refit every sensitivity candidate too "
                                       "(holds every consumer's Gram at once; slower)")

    def __post_init__(self) -> None:
        self._details: dict[str, Any] = {}
        if sum(t is not None for t in (self.ratio, self.macs, self.params)) != 1:
            raise PipelineError("prune: give exactly one of ratio=, macs= or params=")
        if self.ratio is not None and not 0.0 <= self.ratio < 1.0:
            raise PipelineError(f"prune: ratio must be in [0, 1), got {self.ratio}")
        for name in ("macs", "params"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise PipelineError(f"prune: {name} must be in (0, 1], got {value}")
        if not 0.0 <= self.max_ratio < 1.0:
            raise PipelineError(f"prune: max_ratio must be in [0, 1), got {self.max_ratio}")
        if self.criterion not in CRITERIA:
            raise PipelineError(f"prune: criterion must be one of {', '.join(CRITERIA)}, got {self.criterion!r}")
        if self.round_to < 1:
            raise PipelineError(f"prune: round_to must be positive, got {self.round_to}")
        if self.search and self.ratio is not None:
            raise PipelineError("prune: search needs a macs= or params= target (ratio= prunes every group alike)")
        if not self.search_ratios or not all(0.0 < r < 1.0 for r in self.search_ratios):
            raise PipelineError(f"prune: search_ratios must be in (0, 1), got {self.search_ratios}")
        if self.max_evaluations < 1:
            raise PipelineError(f"prune: max_evaluations must be positive, got {self.max_evaluations}")

    def needs(self) -> tuple[str, ...]:
        wanted = self.reconstruct or self.search or self.criterion in DATA_CRITERIA
        return ("calibration",) if wanted else ()

    def details(self) -> dict[str, Any]:
        return dict(self._details)

    def _reconstructs(self) -> bool:
        if self.reconstruct is not None:
            return self.reconstruct
        return self.context.calibration_data is not None

    def _searches(self) -> bool:
        if self.search is not None:
            return self.search
        return self.ratio is None and self.context.calibration_data is not None

    def call(self, model: ir.Model) -> PassResult:
        input_shapes = resolve_input_shapes(model, self.context.input_shapes)
        shapes = concrete_shapes(model, input_shapes)
        groups = find_groups(model, shapes)
        self._protect(groups)
        calibration, held_out, note = self._feeds(model)
        scores = group_scores(groups, self.criterion, self._moments(model, groups, calibration),
                              centred=self._reconstructs())
        round_to = groups.round_steps(self.round_to)
        details: dict[str, Any] = {}
        grams: Grams | None = None
        found: Searched | None = None
        if self._searches():
            if self._reconstructs() and self.search_refit:
                grams, details["reconstruction_skipped"] = self._grams(model, groups, calibration, scores)
            found = search_counts(
                model, groups, scores, self._cost_model(model, groups, shapes), self.macs or self.params, held_out,
                shapes=shapes, ratios=self.search_ratios, max_ratio=self.max_ratio, round_to=round_to,
                max_evaluations=self.max_evaluations, grams=grams, ridge=self.ridge, progress=self.context.progress)
            keep = found.keep
            details["search"] = {"feeds": note, **found.report(groups)}
        elif self.ratio is not None:
            keep = by_ratio(scores, self.ratio, round_to)
        else:
            keep = by_cost(scores, self._cost_model(model, groups, shapes), self.macs or self.params, self.max_ratio,
                           round_to)
        kept = {gid: kept_indices(scores[gid], count) for gid, count in keep.items() if count < len(scores[gid])}
        details = {**self._group_details(groups, kept), **details}
        if not kept:
            self._details = {**details, "reason": _why_nothing_pruned(groups)}
            return PassResult(model, False)
        before = (compute_costs(model, input_shapes).total_macs, parameter_count(model))
        if self._reconstructs() and grams is None:
            needed = [member.node for member, _ in consumers_of(groups, kept).values()]
            grams, details["reconstruction_skipped"] = collect_grams(model, needed, calibration, self.context.progress)
        details["tensors_cut"], refits = prune_model(model, groups, kept, grams, self.ridge)
        after = (compute_costs(model, input_shapes).total_macs, parameter_count(model))
        details.update({
            "macs": f"{before[0]} -> {after[0]} ({after[0] / max(before[0], 1):.3f})",
            "params": f"{before[1]} -> {after[1]} ({after[1] / max(before[1], 1):.3f})",
            "macs_kept": round(after[0] / max(before[0], 1), 4),
            "params_kept": round(after[1] / max(before[1], 1), 4),
        })
        if refits:
            details["reconstruction"] = refits
        if found is not None:
            # The search predicted the error from groups measured alone: the final model is measured too.
            measured = output_errors(found.reference, run_feeds(model, held_out, label="pruned model"))
            details["search"]["rel_error"] = round(measured.max_rel_error, 5)
        if not details.get("reconstruction_skipped"):
            details.pop("reconstruction_skipped", None)
        self._details = details
        return PassResult(model, True)

    def _cost_model(self, model: ir.Model, groups: Groups, shapes) -> MacsModel | ParamsModel:
        return MacsModel(model, groups, shapes) if self.macs is not None else ParamsModel(model, groups)

    def _feeds(self, model: ir.Model) -> tuple[Any, list, str]:
        """The fitting feeds (Grams, data criteria), the search's judging feeds and which they are:
        without search the first ``calib_samples``; with it, see the module docstring."""
        searching = self._searches()
        if not (searching or self._reconstructs() or self.criterion in DATA_CRITERIA):
            return None, [], ""
        self.require("calibration")
        if not searching:
            return self.context.calibration(model, self.calib_samples), [], ""
        split = split_feeds(model, self.context, self.calib_samples)
        return self.context.calibration(model, split.calibration_limit), split.guard, split.note

    def _moments(self, model: ir.Model, groups: Groups, calibration) -> dict | None:
        if self.criterion not in DATA_CRITERIA:
            return None
        wanted = {name: ChannelMoments(axis) for name, axis in measured_tensors(groups).items()}
        found = collect_activations(model, wanted, calibration, progress=self.context.progress)
        return {name: accumulator.state() for name, accumulator in found.items()}

    def _grams(self, model: ir.Model, groups: Groups, calibration, scores) -> tuple[Grams, dict[str, str]]:
        """Grams of every consumer of a group the search may cut, collected once for every
        candidate and the final refit (``search_refit``: all of them are held at once)."""
        nodes = [member.node for gid in sorted(scores) for member in groups.groups[gid].members
                 if member.role == "consumer"]
        return collect_grams(model, nodes, calibration, self.context.progress)

    def _protect(self, groups: Groups) -> None:
        """Groups whose producer (or its output) matches a ``protect`` pattern become unprunable."""
        for group in groups.groups:
            for node in group.producers:
                names = [node.name or "", *(v.name or "" for v in node.outputs)]
                pattern = next((p for p in self.protect for n in names if fnmatch.fnmatchcase(n, p)), None)
                if pattern is not None:
                    group.reasons.append(f"protected by {pattern!r}")
                    break

    def _group_details(self, groups: Groups, kept: dict[int, np.ndarray]) -> dict[str, Any]:
        unprunable = [g for g in groups.groups if not g.prunable]
        before = sum(g.size for g in groups.groups)
        after = before - sum(g.size - len(kept[g.id]) for g in groups.groups if g.id in kept)
        return {
            "groups": len(groups.groups),
            "pruned": len(kept),
            "unprunable": len(unprunable),
            "unprunable_reasons": {_label(g): "; ".join(g.reasons) for g in unprunable[:_REASONS_SHOWN]},
            "channels": f"{before} -> {after}",
            "per_group": {_label(g): f"{g.size} -> {len(kept[g.id])}" for g in groups.groups if g.id in kept},
        }


def _why_nothing_pruned(groups: Groups) -> str:
    """One line for the report when the model comes back as it was."""
    if not groups.groups:
        return "no channels to remove: no Conv, Gemm or MatMul with a constant float weight"
    unprunable = [g for g in groups.groups if not g.prunable]
    if len(unprunable) == len(groups.groups):
        first = unprunable[0]
        return (f"no group can be pruned ({len(unprunable)} unprunable, see details['unprunable_reasons']; "
                f"first: {_label(first)}: {'; '.join(first.reasons)})")
    prunable = len(groups.groups) - len(unprunable)
    return (f"none of the {prunable} prunable groups loses channels at this target and round_to "
            "(a group keeps whole multiples of it)")


def _label(group: Group) -> str:
    return f"{group.name} ({group.size} channels)"
