"""What ``stacker inspect`` prints about a prediction table (the numbers: :mod:`stacker.stats`)."""

from __future__ import annotations

from typing import Any

from stacker.stats import summarize

__all__ = ["summarize", "format_summary"]


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}"


def format_summary(s: dict[str, Any]) -> str:
    """Human-readable text of :func:`summarize`'s result."""
    lines = [
        f"table     {s['source'] or '<memory>'}",
        f"rows      {s['rows']}",
        f"images    {s['images']}",
        f"samples   {s['samples']}",
        f"views     {len(s['views'])}" + (f" ({', '.join(s['views'][:10])})" if s["views"] else " (no view column)"),
        f"models    {len(s['models'])}: {', '.join(s['models'])}",
        f"classes   {len(s['classes'])}: {', '.join(s['classes'])}",
    ]
    if "manipulated_rows" in s:
        lines.append(f"manipulated rows {s['manipulated_rows']} of {s['rows']}")
    if "label_counts" in s:
        counts = s["label_counts"]
        lines.append("label balance")
        for c, n in counts.items():
            lines.append(f"  {c:<28} {n}")
        if s.get("unlabelled_rows"):
            lines.append(f"  {'(unlabelled)':<28} {s['unlabelled_rows']}")
    scores = s.get("scores")
    if not scores:
        lines.append("no labels: no scores")
        return "\n".join(lines)
    split = any(v.get("unaltered") is not None or v.get("manipulated") is not None for v in scores.values())
    width = max(24, max(len(k) for k in scores) + 2)
    head = f"{'model':<{width}}{'acc':>8}{'logloss':>9}"
    if split:
        head += f"{'acc unalt':>11}{'ll unalt':>10}{'acc manip':>11}{'ll manip':>10}"
    lines += ["", f"scores on {s['scored_on']}", head]
    for name, sc in scores.items():
        a = sc["all"]
        row = f"{name:<{width}}{_fmt(a['accuracy']):>8}{_fmt(a['log_loss']):>9}"
        if split:
            for part in ("unaltered", "manipulated"):
                pp = sc.get(part)
                row += f"{_fmt(pp and pp['accuracy']):>11}{_fmt(pp and pp['log_loss']):>10}"
        lines.append(row)
    return "\n".join(lines)
