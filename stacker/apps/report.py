"""``stacker report``: one self-contained HTML file describing a fitted bundle and its predictions.

The report reads the bundle's verified manifest (scores of the blend, of every
member and of every level-1 model on the holdout, out-of-fold; member weights;
the level-1 correlation matrix) and, optionally, a prediction table written by
``stacker predict``.  Where that table has labels, the confusion matrix and the
per-class accuracy before and after exact equalization come from it; otherwise
from the bundle's out-of-fold predictions (``oof.parquet``).  Figures are
matplotlib PNGs embedded as base64, so the file opens with no network.  Every
figure has a stable ``id`` and every number shown in a table is also in a
``<script type="application/json" id="report-data">`` block, which the tests
read back against the manifest.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from stacker.bundle import find_blend, read_manifest
from stacker.errors import BundleError, ConfigError
from stacker.files import atomic_write_text
from stacker.postprocess import resolve_by
from stacker.table import PredictionTable, read_table

__all__ = ["build_report", "write_report", "FIGURES"]

#: Figure ids, in the order they appear in the report.
FIGURES = (
    "scores",
    "reliability",
    "confusion",
    "per-class-accuracy",
    "class-counts",
    "member-scores",
    "member-weights",
    "level1-correlation",
)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    # Class and model names are text, not TeX: a '$' in a name must not start mathtext (it would fail).
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _part(scores: dict[str, Any] | None, part: str, metric: str) -> float | None:
    if not scores or not scores.get(part):
        return None
    return scores[part][metric]


# Figures are drawn at most this wide (inches at _DPI): 9.4 x 90 = 846 px, which with the page's margins
# fits a 1,000-px browser window at full size, so no figure is shrunk or cut at the right edge.
_WIDTH, _DPI = 9.4, 90
_MARKERS = ("o", "s", "D", "^")


def _zoom(values: list[float], *, top: float | None = None) -> tuple[float, float]:
    """Axis limits that show the differences between ``values`` (not 0..1): their range, padded."""
    vals = [v for v in values if v is not None and np.isfinite(v)]
    if not vals:
        return 0.0, 1.0
    lo, hi = min(vals), max(vals)
    pad = max(0.08 * (hi - lo), 0.004 * max(abs(hi), 1e-3), 1e-3)
    lo, hi = lo - pad, hi + pad
    return lo, (min(hi, top) if top is not None and max(vals) <= top else hi)


def _legend_above(ax, n: int) -> None:
    # Above the axes, outside them: a legend inside covered bars and points.
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=n, fontsize=8, frameon=False)


def _fig_scores(rows: dict[str, dict[str, Any]]) -> str:
    plt = _plt()
    names = list(rows)
    parts = [
        p for p in ("all", "unaltered", "manipulated") if any(_part(rows[n], p, "accuracy") is not None for n in names)
    ]
    fig, axes = plt.subplots(1, 2, figsize=(_WIDTH, 0.42 * len(names) + 1.6), sharey=True)
    y = np.arange(len(names))
    step = 0.5 / max(len(parts), 1)
    for ax, metric in zip(axes, ("accuracy", "log_loss")):
        shown: list[float] = []
        for i, part in enumerate(parts):
            vals = [_part(rows[n], part, metric) for n in names]
            have = [j for j, v in enumerate(vals) if v is not None]
            xs = [float(vals[j]) for j in have]  # type: ignore[arg-type]
            shown += xs
            ax.plot(xs, y[have] + (i - (len(parts) - 1) / 2) * step, _MARKERS[i % 4], ls="none", ms=6, label=part)
        ax.set_xlim(*_zoom(shown, top=1.0 if metric == "accuracy" else None))
        ax.set_xlabel(
            metric.replace("_", " ") + (" (higher is better)" if metric == "accuracy" else " (lower is better)")
        )
        ax.grid(axis="x", alpha=0.3)
        for j in range(len(names) - 1):
            ax.axhline(j + 0.5, color="#ddd", lw=0.8)
    axes[0].set_yticks(y, names, fontsize=8)
    axes[0].set_ylim(len(names) - 0.5, -0.5)
    _legend_above(axes[0], len(parts))
    fig.suptitle("level-1 models and the blend (out-of-fold on the holdout)", y=1.0)
    fig.tight_layout()
    return _png(fig)


def _text_colour(rgba: Any) -> str:
    """Black on light cells, white on dark ones (white on viridis' yellow was unreadable)."""
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _fig_confusion(cm: np.ndarray, classes: list[str], title: str) -> str:
    plt = _plt()
    k = len(classes)
    side = min(_WIDTH, 0.5 * k + 2.5)
    fig, ax = plt.subplots(figsize=(side, side - 0.4))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    colour = _text_colour(im.cmap(im.norm(norm[i, j])))
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(k), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    return _png(fig)


def _fig_pair(
    classes: list[str],
    before: np.ndarray,
    after: np.ndarray,
    ylabel: str,
    title: str,
    target: np.ndarray | None = None,
    top: float | None = None,
) -> str:
    """Before and after equalization per class: two markers joined by a line, on an axis zoomed to them."""
    plt = _plt()
    k = len(classes)
    fig, ax = plt.subplots(figsize=(min(_WIDTH, max(6.0, 0.45 * k + 2)), 3.4))
    x = np.arange(k)
    ax.vlines(x, np.minimum(before, after), np.maximum(before, after), color="#bbb", lw=2, zorder=1)
    ax.plot(x, before, "o", ms=6, label="before equalization", zorder=2)
    ax.plot(x, after, "s", ms=5, label="after equalization", zorder=3)
    shown = list(map(float, before)) + list(map(float, after))
    if target is not None:
        ax.step(
            np.r_[x - 0.5, k - 0.5], np.r_[target, target[-1]], where="post", color="k", lw=1, ls="--", label="quota"
        )
        shown += list(map(float, target))
    ax.set_ylim(*_zoom(shown, top=top))
    ax.set_xlim(-0.6, k - 0.4)
    ax.set_xticks(x, classes, rotation=60 if k > 6 else 0, ha="right" if k > 6 else "center", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10, pad=22)
    _legend_above(ax, 3)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _fig_member_scores(members: dict[str, Any], blend: dict[str, Any]) -> str:
    plt = _plt()
    fam: dict[str, list[float]] = {}
    for name, sc in members.items():
        fam.setdefault(name.split("-")[0], []).append(sc["all"]["log_loss"])
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(list(fam.values()), bins=20, stacked=True, label=list(fam))
    ax.axvline(blend["all"]["log_loss"], color="k", ls="--", label="blend")
    ax.set_xlabel("out-of-fold log loss (lower is better)")
    ax.set_ylabel("members")
    ax.set_title("distribution of member scores", fontsize=10, pad=22)
    _legend_above(ax, len(fam) + 1)
    return _png(fig)


def _fig_member_weights(weights: dict[str, float]) -> str:
    plt = _plt()
    names = list(weights)
    fig, ax = plt.subplots(figsize=(min(_WIDTH, max(6.0, 0.16 * len(names) + 2)), 3.2))
    ax.bar(range(len(names)), [weights[n] for n in names])
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_ylabel("weight")
    ax.set_title("member weights in the blend", fontsize=10)
    return _png(fig)


def _fig_corr(corr: np.ndarray, models: list[str]) -> str:
    plt = _plt()
    m = len(models)
    side = min(_WIDTH, 0.65 * m + 3)
    fig, ax = plt.subplots(figsize=(side, side - 0.8))
    off = corr[~np.eye(m, dtype=bool)] if m > 1 else corr.ravel()
    # The colours span the off-diagonal values, so that 0.91 and 0.97 look different.
    im = ax.imshow(corr, cmap="viridis", vmin=float(np.floor(off.min() * 50) / 50), vmax=1)
    if m <= 25:
        for i in range(m):
            for j in range(m):
                colour = _text_colour(im.cmap(im.norm(corr[i, j])))
                ax.text(j, i, f"{corr[i, j]:.2f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(m), models, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(m), models, fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title("correlation of level-1 models\n(out-of-fold log-probabilities)", fontsize=10)
    return _png(fig)


#: Bins of the reliability diagram (equal width in confidence).
RELIABILITY_BINS = 10


def reliability(y: np.ndarray, proba: np.ndarray, bins: int = RELIABILITY_BINS) -> dict[str, Any]:
    """Top-label reliability: per confidence bin the rows, mean confidence and accuracy; and the ECE.

    The expected calibration error is the row-weighted mean of ``|accuracy - confidence|`` over the bins.
    """
    conf = proba.max(axis=1)
    hit = (proba.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    safe = np.maximum(count, 1)
    mean_conf = np.bincount(idx, conf, minlength=bins) / safe
    acc = np.bincount(idx, hit, minlength=bins) / safe
    ece = float(np.sum(count * np.abs(acc - mean_conf)) / max(len(y), 1))
    keep = count > 0
    return {
        "edges": edges.tolist(),
        "count": count.tolist(),
        "confidence": np.where(keep, mean_conf, np.nan).tolist(),
        "accuracy": np.where(keep, acc, np.nan).tolist(),
        "ece": ece,
    }


def _fig_reliability(curves: dict[str, dict[str, Any]], source: str) -> str:
    plt = _plt()
    fig, (ax, hx) = plt.subplots(
        2, 1, figsize=(8.6, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.08}
    )
    ax.plot([0, 1], [0, 1], color="#999", ls="--", lw=1, label="perfectly calibrated")
    width = 1.0 / RELIABILITY_BINS / (len(curves) + 1)
    shown = [0.9]
    for i, (name, c) in enumerate(curves.items()):
        conf, acc = np.asarray(c["confidence"], float), np.asarray(c["accuracy"], float)
        ok = np.isfinite(conf)
        shown += list(conf[ok]) + list(acc[ok])
        ax.plot(conf[ok], acc[ok], _MARKERS[i % 4] + "-", ms=5, label=f"{name} (ECE {c['ece']:.4f})")
        left = np.asarray(c["edges"][:-1])
        hx.bar(left + (i + 0.5) * width, c["count"], width=width, label=name)
    lo = max(0.0, float(np.floor(min(shown) * 10) / 10))  # zoomed to the bins that hold rows
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(lo, 1.0)
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability of the top class ({source})", fontsize=10, loc="left")
    # Beside the diagram, outside it: the curves run to the top right corner where a legend would sit.
    ax.legend(loc="upper left", bbox_to_anchor=(1.03, 1.0), fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    hx.set_ylabel("rows")
    hx.set_xlabel("confidence (probability of the predicted class)")
    return _png(fig)


def _confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k)


def _before_after(table: PredictionTable, by: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Class per row by argmax, and after exact equalization (by ``by`` when the table has it).

    Several models are averaged first, as ``stacker equalize`` does.
    """
    from stacker.equalize import HungarianEqualizer

    if table.n_models > 1:
        table = table.replace(probs=table.probs.mean(axis=1, keepdims=True), models=["mean"])
    group = by if by in table.meta.columns else None
    out = HungarianEqualizer(by=group).fit_transform(table)
    return np.argmax(table.probs[:, 0, :], axis=1), np.argmax(out.probs[:, 0, :], axis=1)


def _read_oof(root: Path, state: dict[str, Any]) -> PredictionTable | None:
    """The bundle's out-of-fold table (its checksum verified with the manifest), if it has one."""
    from stacker.bundle import oof_path

    path = oof_path(root, state)
    return None if path is None else read_table(path)


#: Steps after the Blend that only pick classes: the reliability diagram leaves them out.
_ASSIGNERS = frozenset({"hungarian", "greedy"})


def _calibrated(
    root: Path, manifest: dict[str, Any], index: int | None, oof: PredictionTable
) -> tuple[PredictionTable | None, list[str]]:
    """The Blend's out-of-fold table through the chain's steps after the Blend that change probabilities.

    Only those steps are rebuilt, from the manifest already verified: not the Blend and its members.
    """
    if index is None:
        return None, []
    from stacker.chain import Chain

    # A malformed entry is kept, so that Chain.from_state refuses it with a BundleError.
    later = [
        e for e in manifest["state"]["steps"][index + 1 :] if not (isinstance(e, dict) and e.get("kind") in _ASSIGNERS)
    ]
    if not later:
        return None, []
    steps = Chain.from_state({"steps": later}, root)
    return steps.transform(oof), [str(e["kind"]) for e in later]


def _data_name(state: dict[str, Any], oof: PredictionTable | None) -> tuple[str, int | None]:
    raw = state.get("data")
    info: dict[str, Any] = raw if isinstance(raw, dict) else {}
    source = info.get("source") or (oof.source if oof is not None else None) or "a table in memory"
    rows = info.get("rows") if isinstance(info.get("rows"), int) else (len(oof) if oof is not None else None)
    return Path(str(source)).name, rows  # a file's name; "demo holdout" or "<array X>" as they are


def _balance(y: np.ndarray, k: int, groups: np.ndarray | None) -> dict[str, Any]:
    """True class counts overall and, when equalizing by a group, within each group (as the equalizer sees them)."""

    def even(counts: np.ndarray) -> bool:
        return bool(counts.max() - counts.min() <= max(1, 0.02 * counts.max()))

    counts = np.bincount(y[y >= 0], minlength=k)
    out: dict[str, Any] = {"counts": counts.tolist(), "balanced": even(counts)}
    if groups is not None:
        per = {str(g): np.bincount(y[(groups == g) & (y >= 0)], minlength=k) for g in np.unique(groups)}
        out["groups"] = {g: c.tolist() for g, c in per.items()}
        out["balanced"] = out["balanced"] and all(even(c) for c in per.values())
    return out


def build_report(
    bundle: str | os.PathLike[str],
    predictions: PredictionTable | str | os.PathLike[str] | None = None,
    *,
    by: str | None = "auto",
    title: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Render the report; returns ``(html, data)`` where ``data`` holds every number shown.

    Parameters
    ----------
    bundle : path
        A bundle directory written by ``stacker fit`` / :meth:`Blend.save`, or a chain with a Blend step.
    predictions : PredictionTable or path, optional
        A one-model table from ``stacker predict`` (several models are averaged).
    by : str or None, default "auto"
        Group column for the exact equalization; ``"auto"`` uses ``manip`` when present.
    title : str, optional
        Default: the recipe and the table the Blend was fitted on.
    """
    from stacker.bundle import blend_summary

    root = Path(bundle)
    manifest = read_manifest(root)
    state, blend_dir, kinds, blend_index = find_blend(root, manifest)
    try:
        summary = blend_summary(state)
    except (KeyError, TypeError) as exc:
        raise BundleError(f"bundle {str(root)!r}: the Blend's state lacks {exc}") from None
    classes = list(summary["classes"])
    k = len(classes)
    scores = state.get("scores", {})
    if "blend" not in scores:
        raise BundleError(f"bundle {str(root)!r}: the manifest holds no blend scores")
    oof = _read_oof(blend_dir, state)
    data_name, data_rows = _data_name(state, oof)
    figures: dict[str, str] = {}
    data: dict[str, Any] = {
        "bundle": str(root),
        "steps": kinds,
        "data": data_name,
        "data_rows": data_rows,
        "classes": classes,
        "models": list(summary["models"]),
        "library_version": manifest.get("library_version"),
        "recipe": summary.get("recipe", {}).get("name"),
        "blend_scores": scores["blend"],
        "level1_scores": scores.get("level1", {}),
        "member_scores": scores.get("members", {}),
        "member_weights": summary.get("member_weights", {}),
        "plan": state.get("plan") or {},
    }

    rows = dict(scores.get("level1", {}))
    rows["blend"] = scores["blend"]
    figures["scores"] = _fig_scores(rows)

    if oof is not None and oof.has_labels:
        y_oof = oof.y
        curves = {"blend": reliability(y_oof, oof.probs[:, 0, :])}
        calibrated, steps = _calibrated(root, manifest, blend_index, oof)
        if calibrated is not None:
            curves["after " + ", ".join(steps)] = reliability(y_oof, calibrated.probs[:, 0, :])
        data["reliability"] = curves
        figures["reliability"] = _fig_reliability(curves, "holdout out-of-fold")

    # Confusion / per-class / counts: from the labelled predictions, else the bundle's OOF.
    table = None
    if predictions is not None:
        table = predictions if isinstance(predictions, PredictionTable) else read_table(predictions)
        if list(table.classes) != classes:
            raise BundleError(f"predictions {table.source!r} have classes {list(table.classes)}, the bundle {classes}")
        data["predictions"] = table.source
    eval_table, eval_source = None, None
    if table is not None and table.has_labels and (table.y >= 0).all():
        eval_table, eval_source = table, "predictions"
    elif oof is not None:
        eval_table, eval_source = oof, "holdout out-of-fold"
    counts_table = table if table is not None else eval_table
    if counts_table is None:
        raise ConfigError(
            "nothing to draw the confusion matrix from: pass labelled predictions, "
            "or a bundle that contains oof.parquet"
        )
    group = resolve_by(by, counts_table.meta.columns)  # as stacker predict reads --by
    if group is not None and group not in counts_table.meta.columns:
        raise ConfigError(f"no group column {group!r} to equalize by; columns: {list(counts_table.meta.columns)}")
    data["equalized_by"] = group

    before, after = _before_after(counts_table, group)
    cnt_before = np.bincount(before, minlength=k)
    cnt_after = np.bincount(after, minlength=k)
    data["class_counts"] = {
        "source": "predictions" if table is not None else eval_source,
        "before": cnt_before.tolist(),
        "after": cnt_after.tolist(),
    }
    figures["class-counts"] = _fig_pair(
        classes, cnt_before, cnt_after, "rows", "predicted class counts", target=np.full(k, len(before) / k)
    )

    if eval_table is not None:
        eb, ea = (before, after) if eval_table is counts_table else _before_after(eval_table, group)
        y = eval_table.y
        cm = _confusion(y, eb, k)
        acc_b = np.diag(cm) / np.maximum(cm.sum(axis=1), 1)
        cm_a = _confusion(y, ea, k)
        acc_a = np.diag(cm_a) / np.maximum(cm_a.sum(axis=1), 1)
        data["evaluated_on"] = eval_source
        groups = eval_table.meta[group].to_numpy() if group in eval_table.meta.columns else None
        data["label_balance"] = _balance(y, k, groups)
        data["confusion"] = cm.tolist()
        data["accuracy_before"] = float(np.mean(eb == y))
        data["accuracy_after"] = float(np.mean(ea == y))
        data["per_class_accuracy"] = {"before": acc_b.tolist(), "after": acc_a.tolist()}
        figures["confusion"] = _fig_confusion(cm, classes, f"confusion matrix ({eval_source}, before equalization)")
        figures["per-class-accuracy"] = _fig_pair(
            classes, acc_b, acc_a, "accuracy", f"per-class accuracy ({eval_source})", top=1.0
        )
    if data["member_scores"]:
        figures["member-scores"] = _fig_member_scores(data["member_scores"], scores["blend"])
    if data["member_weights"]:
        figures["member-weights"] = _fig_member_weights(data["member_weights"])
    corr = state.get("level1_correlation")
    if corr is not None:
        data["level1_correlation"] = corr
        figures["level1-correlation"] = _fig_corr(np.asarray(corr, dtype=float), list(summary["models"]))
    if title is None:
        rows_text = f", {data_rows} rows" if data_rows else ""
        title = f"stacker report: recipe {data['recipe']} on {data_name}{rows_text}"
    return _render(title, data, figures), data


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


def _score_table(rows: dict[str, Any]) -> str:
    head = (
        "<tr><th>model</th>"
        + "".join(f"<th>{m} {p}</th>" for p in ("all", "unaltered", "manipulated") for m in ("acc", "log loss"))
        + "</tr>"
    )
    body = []
    for name, sc in rows.items():
        cells = "".join(
            f"<td>{_fmt(_part(sc, p, m))}</td>"
            for p in ("all", "unaltered", "manipulated")
            for m in ("accuracy", "log_loss")
        )
        body.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    # In a scrolling box: 13 columns must not widen the page past a 1,000-px window.
    return f"<div class='wide'><table class='scores'>{head}{''.join(body)}</table></div>"


_RELIABILITY = (
    "Reliability of the blend's top class on the holdout, out-of-fold: accuracy against mean confidence per "
    "confidence bin (on the diagonal: calibrated)"
)
_CAPTIONS = {
    "scores": "Accuracy and log loss of every level-1 model and of the blend, unaltered and manipulated rows.",
    "confusion": "Confusion matrix of the blend.",
    "per-class-accuracy": "Per-class accuracy before and after exact (Hungarian) equalization.",
    "class-counts": "Predicted class counts before and after exact equalization, against the quota.",
    "member-scores": "Out-of-fold log loss of every blend member, by family; dashed: the blend.",
    "member-weights": "Weight of every member in the blend.",
    "level1-correlation": "Correlation of the level-1 models' out-of-fold log-probabilities.",
    "reliability": _RELIABILITY + ", before and after the chain's steps that change probabilities (fitted on these "
    "rows, so the second curve is in-sample); below, the rows per bin.",
}


def _caption(fid: str, data: dict[str, Any]) -> str:
    if fid == "reliability" and len(data.get("reliability", {})) == 1:
        return (
            _RELIABILITY + "; below, the rows per bin. The bundle has no step after the Blend that changes "
            "probabilities (a chain with temperature scaling would show a second curve)."
        )
    return _CAPTIONS[fid]


def _predictions_paragraph(data: dict[str, Any]) -> str:
    """Which predictions the counts (and, when labelled, the confusion matrix) come from."""
    if "predictions" not in data:
        return ""
    name = html.escape(str(data["predictions"]))
    if data.get("evaluated_on") == "predictions":
        return f"<p>Predictions <code>{name}</code>: labelled, so the figures below are scored on them.</p>"
    return (
        f"<p>Predictions <code>{name}</code>: not (all) labelled, so they give the class counts; the confusion "
        "matrix and per-class accuracy come from the holdout out-of-fold.</p>"
    )


def _plan_paragraph(plan: dict[str, Any]) -> str:
    """The time budget, and the members it left out with the reason for each."""
    if not plan:
        return ""
    limit = plan.get("time_limit")
    text = (
        f"<p>Fitted {len(plan.get('fitted', []))} members in {float(plan.get('seconds', 0)):.1f} s "
        + (f"within a time budget of {limit:g} s" if limit else "with no time budget")
        + "."
    )
    skipped = plan.get("skipped") or []
    if not skipped:
        return text + "</p>"
    items = "".join(
        f"<li><code>{html.escape(str(x.get('name')))}</code>: {html.escape(str(x.get('reason')))}</li>" for x in skipped
    )
    return text + f" Skipped {len(skipped)}:</p><ul class='skipped'>{items}</ul>"


def _render(title: str, data: dict[str, Any], figures: dict[str, str]) -> str:
    rows = dict(data["level1_scores"])
    rows["blend"] = data["blend_scores"]
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>bundle <code>{html.escape(data['bundle'])}</code> ({html.escape(' → '.join(data['steps']))}), "
        f"recipe <b>{html.escape(str(data['recipe']))}</b>, fitted on <code>{html.escape(str(data['data']))}</code>"
        + (f" ({data['data_rows']} rows)" if data["data_rows"] else "")
        + f", stacker {html.escape(str(data['library_version']))}; {len(data['classes'])} classes, "
        f"{len(data['models'])} level-1 models, {len(data['member_weights'])} members.</p>",
        _plan_paragraph(data["plan"]),
        _predictions_paragraph(data),
        "<h2>Scores (out-of-fold on the holdout)</h2>",
        _score_table(rows),
    ]
    if "accuracy_before" in data:
        parts.append(
            f"<p>On the {html.escape(data['evaluated_on'])}: accuracy {data['accuracy_before']:.4f} before and "
            f"{data['accuracy_after']:.4f} after exact equalization"
            + (f" by <code>{html.escape(data['equalized_by'])}</code>" if data["equalized_by"] else "")
            + ".</p>"
        )
        balance = data["label_balance"]
        if not balance["balanced"]:
            every = [balance["counts"], *balance.get("groups", {}).values()]
            lo, hi = min(min(c) for c in every), max(max(c) for c in every)
            where = " within its equalization groups" if "groups" in balance else ""
            parts.append(
                f"<p class='note' id='unbalanced'><b>Note:</b> the {html.escape(data['evaluated_on'])} is not "
                f"class-balanced{where} (true class counts {lo} to {hi}). Equalization gives every class "
                "the same count, which is right for a balanced test set (as the challenge's was) but not for these "
                "rows, so the accuracy after equalization here says little about a balanced test set.</p>"
            )
    for fid in FIGURES:
        if fid in figures:
            parts.append(
                f"<figure id='fig-{fid}'><img alt='{fid}' src='data:image/png;base64,{figures[fid]}'/>"
                f"<figcaption>{_caption(fid, data)}</figcaption></figure>"
            )
    # Inside <script> a "</script" or "<!--" in a class name would end or confuse the block: escape every <, >
    # and & as JSON unicode escapes, which JSON.parse reads back unchanged.
    payload = json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    style = (
        "body{font-family:sans-serif;max-width:960px;margin:1.5em auto;padding:0 12px;color:#222}"
        "div.wide{overflow-x:auto}p.note{background:#fff4d6;border-left:4px solid #e0a800;padding:6px 10px}"
        "table.scores{border-collapse:collapse;font-size:12px}"
        "table.scores td,table.scores th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "table.scores td:first-child{text-align:left}figure{margin:1.5em 0}img{max-width:100%}"
        "figcaption{color:#555;font-size:13px}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}"
        f"<script type='application/json' id='report-data'>{payload}</script></body></html>"
    )


def write_report(
    bundle: str | os.PathLike[str],
    output: str | os.PathLike[str],
    predictions: PredictionTable | str | os.PathLike[str] | None = None,
    *,
    by: str | None = "auto",
) -> dict[str, Any]:
    """Build the report and write it atomically to ``output``; returns its data."""
    text, data = build_report(bundle, predictions, by=by)
    atomic_write_text(output, text)
    return data
