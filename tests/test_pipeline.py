"""The pieces composed: TTA power inside the Blend, post-processing in `stacker predict`, tuned recipes."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_table
from stacker import Blend
from stacker.aggregate import aggregate_views
from stacker.apps.cli import main
from stacker.recipe import Recipe
from stacker.table import read_table, write_table

TINY = {
    "name": "tiny-pipeline",
    "families": {"pool": {"count": 1}, "selection": {"count": 1}},
}


@pytest.fixture(scope="module")
def tables():
    holdout = make_table(n_images=150, models=("a", "b"), views=("identity", "flip", "rot90"), seed=3, n_folds=None)
    test = make_table(n_images=60, models=("a", "b"), views=("identity", "flip", "rot90"), seed=4, n_folds=None)
    return holdout, test


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_tta_power_aggregates_views_before_fit_and_predict(tables, p):
    holdout, test = tables
    blend = Blend(TINY, n_folds=3, n_jobs=1, tta_power=p).fit(holdout)
    assert len(blend.oof_) == 150 and "view" not in blend.oof_.meta.columns
    out = blend.transform(test)
    assert len(out) == 60
    # Same as aggregating by hand and fitting without a TTA power.
    manual = Blend(TINY, n_folds=3, n_jobs=1).fit(aggregate_views(holdout, p))
    np.testing.assert_allclose(out.probs, manual.transform(aggregate_views(test, p)).probs, atol=1e-10)
    np.testing.assert_allclose(blend.oof_.probs, manual.oof_.probs, atol=1e-10)


def test_recipe_tta_power_is_used_and_survives_the_bundle(tables, tmp_path):
    holdout, test = tables
    recipe = Recipe.from_dict({**TINY, "tta_power": 0.0})
    blend = Blend(recipe, n_folds=3, n_jobs=1).fit(holdout)
    assert blend.tta_power_ == 0.0
    blend.save(tmp_path / "b")
    loaded = Blend.load(tmp_path / "b")
    assert loaded.tta_power_ == 0.0
    np.testing.assert_allclose(loaded.transform(test).probs, blend.transform(test).probs, atol=1e-12)


def test_views_without_tta_power_stay_rows(tables):
    holdout, test = tables
    blend = Blend(TINY, n_folds=3, n_jobs=1).fit(holdout)
    assert len(blend.oof_) == 450 and len(blend.transform(test)) == 180


def test_cli_fit_predict_with_tta_power_and_exact_equalization(tables, tmp_path, capsys):
    holdout, test = tables
    hp = write_table(holdout, tmp_path / "holdout.parquet")
    tp = write_table(test, tmp_path / "test.parquet")
    recipe = tmp_path / "r.toml"
    recipe.write_text(Recipe.from_dict({**TINY, "postprocess": "hungarian"}).to_toml())
    assert (
        main(
            [
                "fit",
                str(hp),
                "-o",
                str(tmp_path / "bundle"),
                "-r",
                str(recipe),
                "-k",
                "3",
                "-j",
                "1",
                "--tta-power",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    out = tmp_path / "pred.parquet"
    assert main(["predict", str(tmp_path / "bundle"), str(tp), "-o", str(out)]) == 0
    assert "hungarian post-processing by manip" in capsys.readouterr().out
    pred = read_table(out)
    assert len(pred) == 60 and pred.models == ("blend",)
    labels = pred.probs[:, 0, :].argmax(1)
    for flag in (0, 1):  # 30 rows per half, 10 classes: exactly 3 each
        assert np.bincount(labels[pred.manip == flag], minlength=10).tolist() == [3] * 10
    # --post none overrides the recipe.
    assert main(["predict", str(tmp_path / "bundle"), str(tp), "-o", str(out), "--post", "none"]) == 0
    raw = read_table(out)
    assert not np.array_equal(raw.probs, pred.probs)
    assert main(["predict", str(tmp_path / "bundle"), str(tp), "-o", str(out), "--post", "greedy", "--by", "none"]) == 0
    g = read_table(out).probs[:, 0, :].argmax(1)
    assert np.bincount(g, minlength=10).tolist() == [6] * 10
