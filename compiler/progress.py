"""Progress bars for long work, shown on a terminal and silent elsewhere unless asked for."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(total: int | None = None, desc: str = "", enabled: bool | None = None, unit: str = "it") -> tqdm:
    """A tqdm bar writing to stderr; ``enabled=None`` shows it only when stderr is a terminal."""
    show = sys.stderr.isatty() if enabled is None else enabled
    return tqdm(total=total, desc=desc, disable=not show, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True)
