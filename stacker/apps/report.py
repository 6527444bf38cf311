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

from stacker.bundle import read_manifest
from stacker.errors import BundleError, ConfigError
from stacker.files import atomic_write_text
from stacker.table import MANIP, PredictionTable, read_table

__all__ = ["build_report", "write_report", "FIGURES"]

#: Figure ids, in the order they appear in the report.
FIGURES = (
    "scores",
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
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _part(scores: dict[str, Any] | None, part: str, metric: str) -> float | None:
    if not scores or not scores.get(part):
        return None
    return scores[part][metric]


def _fig_scores(rows: dict[str, dict[str, Any]]) -> str:
    plt = _plt()
    names = list(rows)
    parts = [
        p for p in ("all", "unaltered", "manipulated") if any(_part(rows[n], p, "accuracy") is not None for n in names)
    ]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(names) + 1.8))
    h = 0.8 / len(parts)
    y = np.arange(len(names))
    for ax, metric in zip(axes, ("accuracy", "log_loss")):
        for i, part in enumerate(parts):
            vals = [_part(rows[n], part, metric) or 0.0 for n in names]
            ax.barh(y + i * h, vals, height=h, label=part)
        ax.set_yticks(y + h * (len(parts) - 1) / 2, names)
        ax.invert_yaxis()
        ax.set_xlabel(metric.replace("_", " "))
        ax.grid(axis="x", alpha=0.3)
    axes[1].set_yticklabels([])
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="lower center",
        ncol=len(parts),
        fontsize=8,
        bbox_to_anchor=(0.5, -0.02),
    )
    fig.suptitle("level-1 models and the blend (out-of-fold on the holdout)")
    fig.subplots_adjust(bottom=0.22)
    return _png(fig)


def _fig_confusion(cm: np.ndarray, classes: list[str], title: str) -> str:
    plt = _plt()
    k = len(classes)
    fig, ax = plt.subplots(figsize=(0.55 * k + 2.5, 0.55 * k + 2))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        int(cm[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(k), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _png(fig)


def _fig_pair(
    classes: list[str], before: np.ndarray, after: np.ndarray, ylabel: str, title: str, target: np.ndarray | None = None
) -> str:
    plt = _plt()
    k = len(classes)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * k + 2), 3.6))
    x = np.arange(k)
    ax.bar(x - 0.2, before, width=0.4, label="before equalization")
    ax.bar(x + 0.2, after, width=0.4, label="after equalization")
    if target is not None:
        ax.step(np.r_[x - 0.5, k - 0.5], np.r_[target, target[-1]], where="post", color="k", lw=1, label="quota")
    ax.set_xticks(x, classes, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _fig_member_scores(members: dict[str, Any], blend: dict[str, Any]) -> str:
    plt = _plt()
    fam: dict[str, list[float]] = {}
    for name, sc in members.items():
        fam.setdefault(name.split("-")[0], []).append(sc["all"]["log_loss"])
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.hist(list(fam.values()), bins=20, stacked=True, label=list(fam))
    ax.axvline(blend["all"]["log_loss"], color="k", ls="--", label="blend")
    ax.set_xlabel("out-of-fold log loss")
    ax.set_ylabel("members")
    ax.set_title("distribution of member scores")
    ax.legend(fontsize=8)
    return _png(fig)


def _fig_member_weights(weights: dict[str, float]) -> str:
    plt = _plt()
    names = list(weights)
    fig, ax = plt.subplots(figsize=(max(6, 0.18 * len(names) + 2), 3.4))
    ax.bar(range(len(names)), [weights[n] for n in names])
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_ylabel("weight")
    ax.set_title("member weights in the blend")
    return _png(fig)


def _fig_corr(corr: np.ndarray, models: list[str]) -> str:
    plt = _plt()
    m = len(models)
    fig, ax = plt.subplots(figsize=(0.7 * m + 3, 0.7 * m + 2.2))
    im = ax.imshow(corr, cmap="viridis", vmin=min(0.0, float(corr.min())), vmax=1)
    for i in range(m):
        for j in range(m):
            ax.text(j, i, f"{corr[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_xticks(range(m), models, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(m), models, fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title("correlation of level-1 models\n(out-of-fold log-probabilities)")
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
        A bundle directory written by ``stacker fit`` / :meth:`Blend.save`.
    predictions : PredictionTable or path, optional
        A one-model table from ``stacker predict`` (several models are averaged).
    by : str or None, default "auto"
        Group column for the exact equalization; ``"auto"`` uses ``manip`` when present.
    """
    root = Path(bundle)
    manifest = read_manifest(root)
    if manifest.get("kind") != "blend":
        raise BundleError(f"bundle {str(root)!r} holds a {manifest.get('kind')}; the report reads Blend bundles")
    state = manifest.get("state", {})
    classes = list(manifest["classes"])
    k = len(classes)
    scores = state.get("scores", {})
    if "blend" not in scores:
        raise BundleError(f"bundle {str(root)!r}: the manifest holds no blend scores")
    figures: dict[str, str] = {}
    data: dict[str, Any] = {
        "bundle": str(root),
        "classes": classes,
        "models": list(manifest["models"]),
        "library_version": manifest.get("library_version"),
        "recipe": manifest.get("recipe", {}).get("name"),
        "blend_scores": scores["blend"],
        "level1_scores": scores.get("level1", {}),
        "member_scores": scores.get("members", {}),
        "member_weights": manifest.get("member_weights", {}),
        "plan": state.get("plan") or {},
    }

    rows = dict(scores.get("level1", {}))
    rows["blend"] = scores["blend"]
    figures["scores"] = _fig_scores(rows)

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
    else:
        oof = _read_oof(root, state)
        if oof is not None:
            eval_table, eval_source = oof, "holdout out-of-fold"
    counts_table = table if table is not None else eval_table
    if counts_table is None:
        raise ConfigError(
            "nothing to draw the confusion matrix from: pass labelled predictions, "
            "or a bundle that contains oof.parquet"
        )
    group = None if by == "none" else by
    if by == "auto":
        group = MANIP if MANIP in counts_table.meta.columns else None
    elif group is not None and group not in counts_table.meta.columns:
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
        data["confusion"] = cm.tolist()
        data["accuracy_before"] = float(np.mean(eb == y))
        data["accuracy_after"] = float(np.mean(ea == y))
        data["per_class_accuracy"] = {"before": acc_b.tolist(), "after": acc_a.tolist()}
        figures["confusion"] = _fig_confusion(cm, classes, f"confusion matrix ({eval_source}, before equalization)")
        figures["per-class-accuracy"] = _fig_pair(
            classes, acc_b, acc_a, "accuracy", f"per-class accuracy ({eval_source})"
        )
    if data["member_scores"]:
        figures["member-scores"] = _fig_member_scores(data["member_scores"], scores["blend"])
    if data["member_weights"]:
        figures["member-weights"] = _fig_member_weights(data["member_weights"])
    corr = state.get("level1_correlation")
    if corr is not None:
        data["level1_correlation"] = corr
        figures["level1-correlation"] = _fig_corr(np.asarray(corr, dtype=float), list(manifest["models"]))
    return _render(title or f"stacker report: {root.name}", data, figures), data


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
    return f"<table class='scores'>{head}{''.join(body)}</table>"


_CAPTIONS = {
    "scores": "Accuracy and log loss of every level-1 model and of the blend, unaltered and manipulated rows.",
    "confusion": "Confusion matrix of the blend.",
    "per-class-accuracy": "Per-class accuracy before and after exact (Hungarian) equalization.",
    "class-counts": "Predicted class counts before and after exact equalization, against the quota.",
    "member-scores": "Out-of-fold log loss of every blend member, by family; dashed: the blend.",
    "member-weights": "Weight of every member in the blend.",
    "level1-correlation": "Correlation of the level-1 models' out-of-fold log-probabilities.",
}


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
        f"<p>bundle <code>{html.escape(data['bundle'])}</code>, recipe <b>{html.escape(str(data['recipe']))}</b>, "
        f"stacker {html.escape(str(data['library_version']))}; {len(data['classes'])} classes, "
        f"{len(data['models'])} level-1 models, {len(data['member_weights'])} members.</p>",
        _plan_paragraph(data["plan"]),
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
    for fid in FIGURES:
        if fid in figures:
            parts.append(
                f"<figure id='fig-{fid}'><img alt='{fid}' src='data:image/png;base64,{figures[fid]}'/>"
                f"<figcaption>{_CAPTIONS[fid]}</figcaption></figure>"
            )
    # Inside <script> a "</script" or "<!--" in a class name would end or confuse the block: escape every <, >
    # and & as JSON unicode escapes, which JSON.parse reads back unchanged.
    payload = json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table.scores{border-collapse:collapse;font-size:13px}"
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
