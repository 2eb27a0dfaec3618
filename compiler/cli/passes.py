"""``onnxc passes``: every registered pass with its options and defaults."""
from __future__ import annotations

import argparse
import json

from onnxc.cli.common import EXIT_OK, Subparsers, add_command, load_plugins


def add_parser(sub: Subparsers) -> None:
    p = add_command(sub, "passes", "List every registered pass with its options and defaults.", """
        onnxc passes
        onnxc passes --plugin my_passes --json""")
    p.add_argument("--plugin", action="append", metavar="MODULE", help="also list the passes this module registers")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from onnxc.passes import DEFAULT_FINAL, DEFAULT_FIXED_POINT
    from onnxc.registry import pass_options, registered_passes

    load_plugins(args)
    passes = registered_passes()
    if args.json:
        print(json.dumps({
            name: {"summary": cls.summary(), "lossless": cls.lossless,
                   "options": [{"name": o.name, "type": o.type_name, "default": o.default, "help": o.help} for o in pass_options(cls)]}
            for name, cls in passes.items()
        }, indent=2, default=str))
        return EXIT_OK
    for name, cls in passes.items():
        kind = "lossless" if cls.lossless else "lossy"
        print(f"{name}  [{kind}]\n    {cls.summary()}")
        for o in pass_options(cls):
            print(f"    --  {o.name}: {o.type_name} = {o.default!r}    {o.help}")
    print(f"\ndefault = fixed point of [{', '.join(DEFAULT_FIXED_POINT)}], then {', '.join(DEFAULT_FINAL)}")
    return EXIT_OK
