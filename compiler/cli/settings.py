"""From the compile flags (and a ``--recipe``) to what a compilation needs: the Context, built
once, the pipeline and whether to verify. Flags win over the recipe."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from onnxc.context import Context
from onnxc.targets import DEFAULT_TARGET

# The recipe's [calibration] keys that say how to read the data (the others name files).
_READING_OPTIONS = ("preprocess", "batch_size", "limit")


@dataclasses.dataclass(frozen=True)
class CompileSettings:
    context: Context
    pipeline: Any  # a pipeline string, the recipe's pass specs, or None for the default
    verify: bool


def compile_settings(args: argparse.Namespace) -> CompileSettings:
    """The Context, pipeline and verification the flags and the recipe ask for; an unknown
    ``--target`` (or recipe target) is one error line naming the known ones."""
    from onnxc.inputs import parse_shape_overrides
    from onnxc.pipeline import load_recipe

    shapes = parse_shape_overrides(args.shape)
    recipe = load_recipe(args.recipe) if args.recipe else None
    calibration = recipe.calibration if recipe else {}
    cache = args.calib_cache or calibration.get("cache")
    context = Context(
        target=args.target or (recipe.target if recipe else None) or DEFAULT_TARGET,
        input_shapes={**(recipe.input_shapes if recipe else {}), **shapes},
        calibration_data=args.calib_data or calibration.get("data"),
        calibration_cache=Path(cache) if cache else None,
        calibration_allow_random=args.calib_random,
        calibration_options={k: v for k, v in calibration.items() if k in _READING_OPTIONS},
        progress=False if args.no_progress else None,
        seed=args.seed,
        check_speed=not args.no_speed_check,
    )
    pipeline = recipe.passes if recipe else args.passes
    return CompileSettings(context, pipeline, args.verify or bool(recipe and recipe.verify))
