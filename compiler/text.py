"""Plain-text formatting shared by reports: humanized numbers and aligned columns."""
from __future__ import annotations


def columns(rows: list[list[str]], *, indent: int = 0, right: tuple[int, ...] = ()) -> str:
    """Rows as aligned columns; the columns listed in ``right`` are right-aligned (numbers)."""
    if not rows:
        return " " * indent + "(none)"
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(max(len(row) for row in rows))]
    lines = []
    for row in rows:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append(" " * indent + "  ".join(cells).rstrip())
    return "\n".join(lines)


_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def human_count(value: float, unit: str = "") -> str:
    """Three significant digits with a decimal prefix: 4_090_000_000, "MACs" -> "4.09 GMACs"."""
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale * 0.9995:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip() if isinstance(value, float) else f"{value} {unit}".rstrip()


def human_bytes(value: int) -> str:
    """Decimal units, as file sizes are usually quoted: 97_500_000 -> "97.5 MB"."""
    return human_count(value, "B")
