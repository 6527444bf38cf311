"""What ``stacker inspect`` reports about a prediction table."""

from __future__ import annotations

from typing import Any


from stacker.aggregate import aggregate_views, power_mean
from stacker.metrics import score_split
from stacker.table import LABEL, MANIP, VIEW, PredictionTable

__all__ = ["summarize", "format_summary"]


def summarize(table: PredictionTable, p: float = 1.0) -> dict[str, Any]:
    """Counts, label balance and per-model scores of a table.

    Scores are computed per sample after aggregating TTA views with the power
    mean of exponent ``p`` (a table with one view per sample is unchanged), for
    every model and for the power means of all models with exponents ``p=1``
    (arithmetic), ``p=0`` (geometric) and ``p`` if different.
    """
    meta = table.meta
    out: dict[str, Any] = {
        "source": table.source,
        "rows": len(table),
        "images": int(meta["id"].nunique()),
        "samples": int(meta[table.sample_columns].drop_duplicates().shape[0]),
        "views": sorted(map(str, meta[VIEW].unique())) if VIEW in meta.columns else [],
        "models": list(table.models),
        "classes": list(table.classes),
        "columns": list(meta.columns),
    }
    if MANIP in meta.columns:
        out["manipulated_rows"] = int((meta[MANIP] == 1).sum())
    if LABEL in meta.columns:
        counts = meta[LABEL].value_counts()
        out["label_counts"] = {c: int(counts.get(c, 0)) for c in table.classes}
        out["unlabelled_rows"] = int(meta[LABEL].isna().sum())
    if not table.has_labels:
        out["scores"] = None
        return out
    agg = aggregate_views(table, p) if VIEW in meta.columns else table
    y = agg.y
    manip = agg.manip
    scores: dict[str, Any] = {}
    for i, model in enumerate(agg.models):
        scores[model] = score_split(y, agg.probs[:, i, :], manip)
    if agg.n_models > 1:
        exps = [1.0, 0.0] + ([p] if p not in (1.0, 0.0) else [])
        for e in exps:
            name = {1.0: "mean (p=1)", 0.0: "geometric mean (p=0)"}.get(e, f"power mean (p={e:g})")
            scores[name] = score_split(y, power_mean(agg.probs, e, axis=1), manip)
    out["scores"] = scores
    out["scored_on"] = "samples (views aggregated)" if VIEW in meta.columns else "rows"
    return out


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
