"""Merging per-model tables, and power-mean aggregation of views."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_table
from stacker.aggregate import aggregate_models, aggregate_views, power_mean
from stacker.errors import ConfigError, MergeError, SchemaError
from stacker.merge import merge_tables
from stacker.table import PredictionTable, read_table, write_table


# ------------------------------------------------------------------------ merge
@pytest.fixture
def per_model(tmp_path):
    full = make_table(n_images=30, models=("a", "b", "c"), views=("identity", "flip"))
    paths = []
    for m in full.models:
        part = full.select_models([m])
        # Each level-1 run writes its rows in its own order.
        part = part.take(np.random.default_rng(hash(m) % 2**32).permutation(len(part)))
        paths.append(write_table(part, tmp_path / f"{m}.parquet"))
    return full, paths


def test_merge_aligns_rows_written_in_any_order(per_model):
    full, paths = per_model
    merged = merge_tables(paths)
    assert merged.models == ("a", "b", "c")
    base = read_table(paths[0])
    order = full.meta.set_index(["id", "manip", "view"]).index.get_indexer(
        base.meta.set_index(["id", "manip", "view"]).index
    )
    np.testing.assert_array_equal(merged.probs, full.probs[order])
    assert list(merged.meta["label"]) == list(full.meta["label"].iloc[order])


def test_merge_reorders_classes_to_the_first_table(tmp_path):
    t = make_table(n_images=20, models=("a", "b"))
    b = t.select_models(["b"])
    perm = list(reversed(range(t.n_classes)))
    b_rev = b.replace(probs=b.probs[:, :, perm], classes=[b.classes[i] for i in perm])
    merged = merge_tables([t.select_models(["a"]), b_rev])
    np.testing.assert_array_equal(merged.probs, t.probs)


def test_merge_refuses_mismatched_classes(tmp_path):
    a = make_table(n_images=20, models=("a",))
    b = make_table(n_images=20, models=("b",), classes=[f"c{i}" for i in range(10)])
    with pytest.raises(MergeError, match="class set differs"):
        merge_tables([a, b])


def test_merge_refuses_missing_and_extra_rows(per_model, tmp_path):
    full, paths = per_model
    b = read_table(paths[1])
    short = write_table(b.take(np.arange(1, len(b))), tmp_path / "short.parquet")
    with pytest.raises(MergeError, match="missing here") as err:
        merge_tables([paths[0], short])
    assert "short.parquet" in str(err.value) and err.value.ids
    with pytest.raises(MergeError, match="not in"):
        merge_tables([short, paths[0]])


def test_merge_refuses_duplicate_models_and_disagreeing_labels(per_model):
    full, paths = per_model
    with pytest.raises(MergeError, match="also in"):
        merge_tables([paths[0], paths[0]])
    a = full.select_models(["a"])
    b = full.select_models(["b"])
    meta = b.meta.copy()
    meta.loc[3, "label"] = a.classes[(a.classes.index(meta.loc[3, "label"]) + 1) % 10]
    with pytest.raises(MergeError, match="'label' disagrees") as err:
        merge_tables([a, b.replace(meta=meta)])
    assert err.value.rows == [3]


def test_merge_refuses_other_key_columns():
    a = make_table(n_images=20, models=("a",), views=("identity", "flip"))
    b = make_table(n_images=20, models=("b",), manip=False)
    with pytest.raises(MergeError, match="key columns"):
        merge_tables([a, b])


# ------------------------------------------------------------------------ power mean
probs_strategy = st.integers(1, 6).flatmap(
    lambda v: st.integers(2, 6).flatmap(
        lambda k: st.lists(st.lists(st.floats(1e-6, 1.0), min_size=k, max_size=k), min_size=v, max_size=v)
    )
)


def _norm(x):
    x = np.asarray(x, dtype=float)
    return x / x.sum(axis=-1, keepdims=True)


@settings(max_examples=60, deadline=None)
@given(probs_strategy)
def test_p1_is_the_arithmetic_mean(views):
    x = _norm(views)
    np.testing.assert_allclose(power_mean(x, 1.0), x.mean(axis=0), atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(probs_strategy)
def test_p_to_zero_converges_to_geometric_mean(views):
    x = _norm(views)
    geo = _norm(np.exp(np.log(x).mean(axis=0)))
    np.testing.assert_allclose(power_mean(x, 0.0), geo, atol=1e-10)
    errs = [np.abs(power_mean(x, p) - geo).max() for p in (1e-1, 1e-2, 1e-3, 1e-4)]
    assert errs[-1] < 1e-3
    assert all(b <= a + 1e-12 for a, b in zip(errs, errs[1:]))


@settings(max_examples=60, deadline=None)
@given(probs_strategy, st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0]), st.randoms())
def test_view_order_does_not_matter(views, p, rnd):
    x = _norm(views)
    perm = list(range(len(x)))
    rnd.shuffle(perm)
    np.testing.assert_allclose(power_mean(x, p), power_mean(x[perm], p), atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(probs_strategy, st.sampled_from([-2.0, 0.0, 0.3, 1.0, 2.0]))
def test_single_view_is_unchanged(views, p):
    x = _norm(views)[:1]
    np.testing.assert_allclose(power_mean(x, p), x[0], atol=1e-12)


def test_power_means_are_ordered_before_normalising():
    x = _norm(np.random.default_rng(0).dirichlet(np.ones(5), size=(4, 7)))
    means = [power_mean(x, p, normalize=False) for p in (-1.0, 0.0, 1.0, 2.0)]
    for lo, hi in zip(means, means[1:]):
        assert (lo <= hi + 1e-12).all()


def test_rms_matches_definition():
    x = _norm(np.random.default_rng(1).dirichlet(np.ones(4), size=(3, 5)))
    expect = _norm(np.sqrt((x**2).mean(axis=0)))
    np.testing.assert_allclose(power_mean(x, 2.0), expect, atol=1e-12)


def test_geometric_mean_survives_zeros():
    x = np.array([[1.0, 0.0], [0.5, 0.5]])
    out = power_mean(x, 0.0)
    assert np.isfinite(out).all() and out[0] > 0.99


def test_bad_p_and_weights():
    x = _norm(np.ones((2, 3)))
    with pytest.raises(ConfigError):
        power_mean(x, np.nan)
    with pytest.raises(ConfigError):
        power_mean(x, 1.0, weights=np.array([1.0, -1.0]))
    with pytest.raises(ConfigError):
        power_mean(x, 1.0, axis=-1)


# ------------------------------------------------------------------------ aggregate views
def test_aggregate_views_per_sample():
    t = make_table(n_images=25, models=("a", "b"), views=("identity", "flip", "rot90"))
    for p in (0.0, 1.0, 2.0):
        agg = aggregate_views(t, p)
        assert len(agg) == 25 and "view" not in agg.meta.columns
        x = t.probs.reshape(25, 3, 2, 10)  # rows are image-major in make_table
        np.testing.assert_allclose(agg.probs, power_mean(x, p, axis=1), atol=1e-12)
        assert list(agg.meta["id"]) == list(t.meta["id"].iloc[::3])
        assert list(agg.meta["label"]) == list(t.meta["label"].iloc[::3])


def test_aggregate_views_is_order_invariant():
    t = make_table(n_images=12, views=("identity", "flip", "rot90"))
    shuffled = t.take(np.random.default_rng(3).permutation(len(t)))
    a, b = aggregate_views(t, 0.0), aggregate_views(shuffled, 0.0)
    order = b.meta.set_index("id").index.get_indexer(a.meta["id"])
    np.testing.assert_allclose(a.probs, b.probs[order], atol=1e-12)


def test_manipulated_variants_are_not_averaged_together():
    base = make_table(n_images=4, views=("identity", "flip"), manip=False)
    meta = base.meta.copy()
    meta["manip_kind"] = ""
    other = meta.copy()
    other["manip_kind"] = "jpg70"
    t = PredictionTable(
        meta=__import__("pandas").concat([meta, other], ignore_index=True),
        probs=np.concatenate([base.probs, base.probs[:, :, ::-1]]),
        classes=base.classes,
        models=base.models,
    )
    agg = aggregate_views(t)
    assert len(agg) == 8
    assert sorted(agg.meta["manip_kind"].unique()) == ["", "jpg70"]


def test_views_disagreeing_on_label_are_refused():
    t = make_table(n_images=6, views=("identity", "flip"))
    meta = t.meta.copy()
    meta.loc[1, "label"] = meta.loc[2, "label"] if meta.loc[2, "label"] != meta.loc[1, "label"] else t.classes[0]
    with pytest.raises(SchemaError, match="disagree on 'label'"):
        aggregate_views(t.replace(meta=meta))


def test_view_weights():
    t = make_table(n_images=5, models=("a",), views=("identity", "flip"))
    agg = aggregate_views(t, 1.0, view_weights={"identity": 1.0, "flip": 0.0})
    np.testing.assert_allclose(agg.probs, t.probs[::2], atol=1e-12)


def test_aggregate_models_on_real_cifar(cifar_table):
    from stacker.metrics import accuracy

    y = cifar_table.y
    assert accuracy(y, aggregate_models(cifar_table, 1.0)) == pytest.approx(0.9628, abs=5e-5)
    assert accuracy(y, aggregate_models(cifar_table, 0.0)) == pytest.approx(0.9636, abs=5e-5)


@pytest.mark.parametrize("p", [20.0 + 1e-9, 1e3, 1e9])
def test_large_exponents_are_finite_and_tend_to_the_largest_view(p):
    # x ** p underflowed to 0 for every class at p = 1e9 (the Blend's fit then scored NaN rows).
    table = make_table(n_images=30, views=["a", "b", "c"])
    below = aggregate_views(table, 20.0 - 1e-9).probs
    out = aggregate_views(table, p).probs
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(axis=-1), 1.0)
    x = table.probs[table.meta["view"].to_numpy() == "a"]
    assert np.isfinite(power_mean(np.stack([x, x**2]), p, axis=0)).all()
    if p < 21:
        np.testing.assert_allclose(out, below, atol=1e-6)  # the two branches agree where they meet
    if p >= 1e9:
        ids = table.meta["id"].to_numpy()
        top = np.stack([table.probs[ids == i].max(axis=0) for i in dict.fromkeys(ids)])
        np.testing.assert_allclose(out, top / top.sum(axis=-1, keepdims=True), atol=1e-6)


@pytest.mark.parametrize("argv", [["aggregate", "t.parquet", "-o", "o.parquet", "-p", "nan"],
                                  ["inspect", "t.parquet", "-p", "inf"],
                                  ["fit", "t.parquet", "-o", "b", "--tta-power", "nan"]])  # fmt: skip
def test_exponents_are_checked_when_parsed(argv, capsys):
    from stacker.apps.cli import main

    with pytest.raises(SystemExit):
        main(argv)
    assert "expected a finite number (1 arithmetic, 0 geometric)" in capsys.readouterr().err


def test_a_blend_refuses_a_nan_tta_power_before_fitting():
    from stacker import Blend

    with pytest.raises(ConfigError, match="tta_power must be a finite number or None, got nan"):
        Blend({"name": "p", "families": {"pool": {"count": 1}}}, n_jobs=1, tta_power=float("nan")).fit(
            make_table(n_images=30)
        )
