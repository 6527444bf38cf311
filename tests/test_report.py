"""`stacker report`: a self-contained HTML file whose numbers match the bundle."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import make_table
from stacker.apps.cli import main
from stacker.apps.report import FIGURES, build_report
from stacker.blend import Blend
from stacker.bundle import read_manifest
from stacker.errors import BundleError
from stacker.table import read_table, write_table

TINY = {
    "name": "tiny-report",
    "families": {
        "lightgbm": {
            "count": 1,
            "num_leaves": 7,
            "learning_rate": 0.2,
            "min_data_in_leaf": 5,
            "n_estimators": 20,
            "early_stopping_rounds": 5,
        },
        "pool": {"count": 1},
        "selection": {"count": 1},
    },
}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    holdout = make_table(n_images=300, models=("cnn-a", "cnn-b", "cnn-c"), seed=1, n_folds=None)
    test = make_table(n_images=100, models=("cnn-a", "cnn-b", "cnn-c"), seed=2, n_folds=None)
    blend = Blend(recipe=TINY, n_folds=3, seed=0, n_jobs=1, progress=False).fit(holdout)
    blend.save(root / "bundle")
    pred = blend.transform(test)
    write_table(pred, root / "pred.parquet")
    return root, blend, pred


def _data(text: str) -> dict:
    m = re.search(r"<script type='application/json' id='report-data'>(.*?)</script>", text, re.S)
    assert m, "report data block missing"
    return json.loads(m.group(1))


def test_report_numbers_match_the_manifest_and_every_figure_is_present(fitted, tmp_path):
    root, blend, pred = fitted
    out = tmp_path / "report.html"
    assert main(["report", str(root / "bundle"), str(root / "pred.parquet"), "-o", str(out)]) == 0
    text = out.read_text()
    assert "http://" not in text and "https://" not in text  # opens with no network
    for fid in FIGURES:
        m = re.search(rf"<figure id='fig-{fid}'><img alt='{fid}' src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
        assert m, f"figure {fid} missing"
        assert len(m.group(1)) > 1000
    data = _data(text)
    manifest = read_manifest(root / "bundle")
    state = manifest["state"]
    assert data["blend_scores"] == manifest["scores"] == state["scores"]["blend"]
    assert data["member_weights"] == manifest["member_weights"]
    assert data["level1_scores"] == state["scores"]["level1"]
    assert set(data["level1_scores"]) == {"cnn-a", "cnn-b", "cnn-c"}
    np.testing.assert_allclose(data["level1_correlation"], state["level1_correlation"])
    # The score table shows the manifest's numbers.
    acc = manifest["scores"]["all"]["accuracy"]
    assert f"{acc:.4f}" in text
    # Confusion matrix and counts come from the labelled predictions.
    y = pred.y
    before = pred.probs[:, 0, :].argmax(1)
    cm = np.asarray(data["confusion"])
    assert cm.sum() == len(pred) and np.trace(cm) == int((before == y).sum())
    assert data["class_counts"]["before"] == np.bincount(before, minlength=10).tolist()
    # Exact equalization by manip: each half (50 rows, 10 classes) gets 5 per class.
    assert data["class_counts"]["after"] == [10] * 10
    assert data["accuracy_before"] == pytest.approx(float(np.mean(before == y)))


def test_report_without_predictions_uses_the_bundle_oof(fitted):
    root, blend, _ = fitted
    html, data = build_report(root / "bundle")
    assert data["evaluated_on"] == "holdout out-of-fold"
    assert np.asarray(data["confusion"]).sum() == len(blend.oof_)
    assert data["accuracy_before"] == pytest.approx(blend.scores_["blend"]["all"]["accuracy"])


def test_report_refuses_bad_bundles_and_mismatched_predictions(fitted, tmp_path, capsys):
    root, _, pred = fitted
    with pytest.raises(BundleError):
        build_report(tmp_path / "nope")
    other = pred.replace(classes=[f"c{i}" for i in range(10)])
    with pytest.raises(BundleError, match="classes"):
        build_report(root / "bundle", other)
    assert main(["report", str(tmp_path / "nope"), "-o", str(tmp_path / "r.html")]) == 2
    assert not (tmp_path / "r.html").exists()
    capsys.readouterr()
    assert main(["report", str(root / "pred.parquet"), "-o", str(tmp_path / "r.html")]) == 2
    assert "is a file, not a bundle directory" in capsys.readouterr().err


def test_report_refuses_a_modified_oof_table(fitted, tmp_path):
    import shutil

    root, _, _ = fitted
    bundle = tmp_path / "bundle"
    shutil.copytree(root / "bundle", bundle)
    table = read_table(bundle / "oof.parquet")
    write_table(table.take(np.arange(len(table) - 1)), bundle / "oof.parquet")
    with pytest.raises(BundleError, match="oof.parquet"):
        build_report(bundle)


def test_hostile_class_names_neither_crash_the_figures_nor_break_the_data_block(tmp_path):
    """'$' would start matplotlib mathtext; '<!--<script>' and '<script>' would confuse the JSON island."""
    classes = ["a$b", "<!--<script>", "<script>x", "plain"]  # ('/' is not allowed in class names)
    holdout = make_table(n_images=80, models=("m1", "m2"), classes=classes, seed=3, n_folds=None)
    blend = Blend(recipe={"name": "t", "families": {"pool": {"count": 1}}}, n_folds=2, n_jobs=1).fit(holdout)
    blend.save(tmp_path / "bundle")
    text, data = build_report(tmp_path / "bundle")
    assert "<!--<script>" not in text and "<script>x" not in text
    assert text.count("</script>") == 1  # the data block's own end, nothing inside it
    assert _data(text)["classes"] == classes == data["classes"]


def test_reliability_bins_and_ece_match_a_direct_computation():
    from stacker.apps.report import reliability

    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(4) * 0.3, size=500)
    y = rng.integers(0, 4, 500)
    r = reliability(y, proba, bins=5)
    conf, hit = proba.max(1), proba.argmax(1) == y
    ece = 0.0
    for b in range(5):
        lo, hi = b / 5, (b + 1) / 5
        m = (conf >= lo) & ((conf < hi) if b < 4 else (conf <= hi))
        assert r["count"][b] == m.sum()
        if m.any():
            assert r["accuracy"][b] == pytest.approx(hit[m].mean())
            ece += m.sum() * abs(hit[m].mean() - conf[m].mean())
    assert r["ece"] == pytest.approx(ece / 500)


def test_heatmap_labels_are_dark_on_light_cells_and_axes_zoom_to_the_values():
    import matplotlib

    from stacker.apps.report import _text_colour, _zoom

    viridis = matplotlib.colormaps["viridis"]
    assert _text_colour(viridis(1.0)) == "black"  # the yellow end: white text was unreadable there
    assert _text_colour(viridis(0.0)) == "white"
    lo, hi = _zoom([0.951, 0.962, 0.97], top=1.0)
    assert 0.93 < lo < 0.951 and 0.97 < hi <= 1.0  # not 0..1, which hid a 0.02 difference


def test_a_chain_bundle_reports_its_blend_and_calibration_and_its_data(tmp_path):
    from stacker.chain import Chain
    from stacker.transforms import TemperatureScaling

    holdout = make_table(n_images=150, models=("m1", "m2"), seed=5, n_folds=None)
    write_table(holdout, tmp_path / "holdout.parquet")
    blend = Blend(recipe={"name": "t", "families": {"pool": {"count": 1}}}, n_folds=2, n_jobs=1, progress=False)
    Chain([blend, TemperatureScaling()]).fit(read_table(tmp_path / "holdout.parquet")).save(tmp_path / "bundle")
    text, data = build_report(tmp_path / "bundle")
    assert data["steps"] == ["blend", "temperature"]
    assert data["data"] == "holdout.parquet" and data["data_rows"] == len(holdout)
    assert "<h1>stacker report: recipe t on holdout.parquet, 150 rows</h1>" in text
    assert set(data["reliability"]) == {"blend", "after temperature"}


def test_balance_is_judged_within_the_equalization_groups():
    """20 rows per class overall, but 6 to 14 per class within each manip group: the equalizer sees the groups."""
    from stacker.apps.report import _balance

    y = np.repeat(np.arange(10), 20)
    groups = np.zeros(200, dtype=int)
    for c in range(10):
        n = 6 + (c % 2) * 8  # 6 or 14 of the class's 20 rows in group 1
        groups[c * 20 : c * 20 + n] = 1
    assert _balance(y, 10, None)["balanced"]
    out = _balance(y, 10, groups)
    assert not out["balanced"] and out["groups"]["1"][:2] == [6, 14]
    assert _balance(y, 10, np.tile([0, 1], 100))["balanced"]


def test_the_report_names_the_predictions_it_read(fitted, tmp_path):
    root, blend, pred = fitted
    unlabelled = pred.replace(meta=pred.meta.assign(label=None))
    write_table(unlabelled, tmp_path / "unlabelled.parquet")
    text, data = build_report(root / "bundle", tmp_path / "unlabelled.parquet")
    assert "unlabelled.parquet</code>: not (all) labelled" in text and data["evaluated_on"] == "holdout out-of-fold"
    text, _ = build_report(root / "bundle", root / "pred.parquet")
    assert "pred.parquet</code>: labelled" in text
