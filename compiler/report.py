"""Readable renderings of compile reports and numbers."""
from __future__ import annotations

from onnxc.manager import CompileReport


def human_count(value: float, unit: str = "") -> str:
    """1234567 -> '1.23 M' (with the unit appended)."""
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g} {suffix}{unit}".rstrip()
    return f"{value:.4g} {unit}".rstrip()


def human_bytes(value: float) -> str:
    for threshold, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if value >= threshold:
            return f"{value / threshold:.3g} {suffix}"
    return f"{int(value)} B"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain-text table with right-aligned columns after the first."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    def line(cells):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths]), *[line(r) for r in rows]])


def format_compile_report(report: CompileReport) -> str:
    rows = []
    for record in report.passes:
        error = "" if record.max_abs_error is None else f"{record.max_abs_error:.2g}"
        rows.append([
            record.description,
            str(record.applications),
            str(record.changes),
            f"{record.time_s * 1000:.1f}",
            f"{record.nodes_before}->{record.nodes_after}",
            f"{record.params_before - record.params_after:,}",
            error,
        ])
    before, after = report.before, report.after
    lines = [
        table(["pass", "runs", "changed", "ms", "nodes", "params removed", "max abs err"], rows),
        "",
        f"nodes   {before['nodes']:>10,} -> {after['nodes']:,}",
        f"params  {before['params']:>10,} -> {after['params']:,}",
        f"weights {human_bytes(before['weight_bytes']):>10} -> {human_bytes(after['weight_bytes'])}",
        f"time    {report.total_time_s:.2f} s" + "".join(f"  ({name}: {n} iterations)" for name, n in report.iterations.items()),
    ]
    if report.error_vs_original is not None:
        e = report.error_vs_original
        lines.append(f"vs original: max abs {e['max_abs']:.3g}, max rel {e['max_rel']:.3g}, cosine {e['min_cosine']:.6f}")
    return "\n".join(lines)
