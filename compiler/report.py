"""Readable renderings of compile reports and numbers."""
from __future__ import annotations

from onnxc.manager import CompileReport
from onnxc.text import columns, human_bytes


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain-text table with a header rule; columns after the first are right-aligned."""
    rule = ["-" * max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    return columns([headers, rule, *rows], right=tuple(range(1, len(headers))))


def format_compile_report(report: CompileReport) -> str:
    rows = []
    for record in report.passes:
        error = "" if record.max_abs_error is None else f"{record.max_abs_error:.2g}"
        rows.append([
            record.description,
            str(record.applications),
            str(record.changes),
            f"{record.time_s * 1000:.1f}",
            f"{record.nodes_removed:,}",
            f"{record.params_removed:,}",
            error,
        ])
    before, after = report.before, report.after
    lines = [
        table(["pass", "runs", "changed", "ms", "nodes removed", "params removed", "max abs err"], rows),
        "",
        f"nodes   {before['nodes']:>10,} -> {after['nodes']:,}",
        f"params  {before['params']:>10,} -> {after['params']:,}",
        f"weights {human_bytes(before['weight_bytes']):>10} -> {human_bytes(after['weight_bytes'])}",
        f"time    {report.total_time_s:.2f} s" + "".join(f"  ({name}: {n} iterations)" for name, n in report.iterations.items()),
    ]
    for record in report.passes:
        for key, value in record.details.items():
            lines.append(f"{record.name}: {key}: {_brief(value)}")
    if report.speed_check is not None:
        lines.append(_speed_line(report.speed_check))
    if report.error_vs_original is not None:
        e = report.error_vs_original
        lines.append(f"vs original: max abs {e['max_abs']:.3g}, max rel {e['max_rel']:.3g}, cosine {e['min_cosine']:.6f}")
    return "\n".join(lines)


def _speed_line(check: dict) -> str:
    claimed = ", ".join(check["claimed_by"])
    if "input_ms" not in check:
        return f"speed: {check['reason']} (promised by {claimed})"
    line = (f"speed: input {check['input_ms']:.3g} ms, compiled {check['output_ms']:.3g} ms on ORT CPU "
            f"({check['speedup']:.2f}x, promised by {claimed})")
    return line + (f"; {check['reason']}" if check["kept"] == "input" else "")


def _brief(value, limit: int = 8) -> str:
    if isinstance(value, (list, tuple)):
        shown = ", ".join(str(v) for v in value[:limit])
        return f"{shown}{f', ... ({len(value)} in all)' if len(value) > limit else ''}" if value else "none"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
