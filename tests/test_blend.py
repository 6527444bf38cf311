"""The Blend: grouped out-of-fold fitting, combining, bundles, bad input, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import make_table
from stacker import Blend
from stacker.apps.cli import main
from stacker.blend import class_sample_weights
from stacker.errors import BundleError, ConfigError, LabelError, NotFittedError
from stacker.recipe import Recipe
from stacker.table import read_table, write_table

TINY = {
    "name": "tiny",
    "families": {
        "xgboost": {"count": 1, "max_depth": [1, 2], "n_estimators": 20, "early_stopping_rounds": 5},
        "lightgbm": {
            "count": 1,
            "num_leaves": 7,
            "n_estimators": 20,
            "min_data_in_leaf": 5,
            "early_stopping_rounds": 5,
        },
        "pool": {"count": 1},
        "selection": {"count": 1},
    },
}


@pytest.fixture(scope="module")
def table():
    return make_table(n_images=120, views=("identity", "rot90"))


@pytest.fixture(scope="module")
def fitted(table):
    return Blend(TINY, n_folds=3, seed=0, n_jobs=1).fit(table)


def test_fit_gives_oof_scores_and_probabilities(fitted, table):
    b = fitted
    assert b.oof_.models == ("blend",) and len(b.oof_) == len(table)
    np.testing.assert_allclose(b.oof_.probs.sum(axis=2), 1.0)
    assert list(b.oof_.meta.columns) == list(table.meta.columns)
    s = b.scores_["blend"]
    assert set(s) == {"all", "unaltered", "manipulated"}
    assert s["all"]["n"] == len(table) and s["manipulated"]["n"] + s["unaltered"]["n"] == len(table)
    assert set(s["all"]["per_class_accuracy"]) == set(table.classes)
    assert set(b.scores_["members"]) == {m.name for m in b.members_}
    assert len(b.scores_["folds"]) == 3
    assert b.weights_.sum() == pytest.approx(1.0)
    # The blend is at least as good as the level-1 mean on this easy table.
    from stacker import metrics

    mean = table.probs.mean(axis=1)
    assert s["all"]["log_loss"] < metrics.log_loss(table.y, mean)
    p = b.predict_proba(table)
    assert p.shape == (len(table), table.n_classes)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_folds_keep_all_views_of_an_id_together_and_are_stratified(fitted, table):
    folds = pd.Series(fitted.folds_).groupby(table.meta["id"].to_numpy()).nunique()
    assert (folds == 1).all()
    counts = pd.crosstab(fitted.folds_, table.y)
    assert counts.to_numpy().min() >= 2 * 3  # 2 views, >= 3 images per class per fold


def test_member_oof_uses_only_other_folds(table):
    # A member fitted on folds != k and predicting fold k: re-derive one OOF block by hand.
    from stacker.features import FeatureSpec
    from stacker.metamodels.pool import LogLinearPool

    b = Blend({"families": {"pool": {"count": 1}}}, n_folds=3, seed=5, n_jobs=1).fit(table)
    X = FeatureSpec.from_table(table, "log").transform(table)
    k = 1
    tr, te = b.folds_ != k, b.folds_ == k
    pool = LogLinearPool(layout=(2, 10), input="log").fit(X[tr], table.y[tr])
    np.testing.assert_allclose(b.member_oof_[0, te], pool.predict_proba(X[te]), atol=1e-10)


def test_same_seed_same_result_and_parallel_equals_sequential(table):
    a = Blend(TINY, n_folds=3, seed=7, n_jobs=1, combine="mean").fit(table)
    b = Blend(TINY, n_folds=3, seed=7, n_jobs=2, combine="mean").fit(table)
    np.testing.assert_array_equal(a.oof_.probs, b.oof_.probs)
    c = Blend(TINY, n_folds=3, seed=8, n_jobs=1, combine="mean").fit(table)
    assert not np.array_equal(a.oof_.probs, c.oof_.probs)


def test_keras_members_train_their_folds_together_as_their_own_fits(table):
    """A Keras member is one task over all folds (a batched network); each fold model is the
    model a standalone fit on that fold's rows with that fold's seed gives, in any process."""
    pytest.importorskip("keras")
    from stacker.features import FeatureSpec
    from stacker.metamodels import KerasMLPClassifier
    from stacker.parallel import task_seed as _task_seed

    recipe = {
        "families": {
            "keras": {
                "count": 2,
                "units": 8,
                "n_layers": 1,
                "dropout": 0.2,
                "batch_size": 64,
                "epochs": 6,
                "patience": 2,
            }
        }
    }
    a = Blend(recipe, n_folds=3, seed=3, n_jobs=1, combine="mean").fit(table)
    b = Blend(recipe, n_folds=3, seed=3, n_jobs=2, combine="mean").fit(table)
    np.testing.assert_array_equal(a.member_oof_, b.member_oof_)
    X = FeatureSpec.from_table(table, "log").transform(table)
    groups = pd.factorize(pd.Series(table.ids, dtype=object))[0]
    for mi, m in enumerate(a.members_):
        for f in range(3):
            tr, te = a.folds_ != f, a.folds_ == f
            alone = KerasMLPClassifier(**m.params, random_state=_task_seed(m.seed, f))
            alone.fit(X[tr], table.y[tr], groups=groups[tr])
            np.testing.assert_allclose(a.member_oof_[mi, te], alone.predict_proba(X[te]), atol=1e-4)


def test_class_weights_become_sample_weights(table):
    y = table.y
    w = class_sample_weights({"LG-Nexus-5x": 3.0, "Motorola-Nexus-6": 0.5}, y, table.classes)
    lg, mn = table.classes.index("LG-Nexus-5x"), table.classes.index("Motorola-Nexus-6")
    assert (w[y == lg] == 3.0).all() and (w[y == mn] == 0.5).all() and (w[(y != lg) & (y != mn)] == 1).all()
    rows = np.r_[np.flatnonzero(y == 0)[:5], np.flatnonzero(y == 1)]
    bal = class_sample_weights("balanced", y[rows], table.classes)
    assert bal[0] * 5 == pytest.approx(bal[-1] * (y == 1).sum())
    a = Blend({"families": {"pool": {"count": 1}}}, n_folds=3, n_jobs=1).fit(table)
    b = Blend({"families": {"pool": {"count": 1}}}, n_folds=3, n_jobs=1, class_weight={"LG-Nexus-5x": 50.0}).fit(table)
    assert b.oof_.probs[:, 0, lg].mean() > a.oof_.probs[:, 0, lg].mean()


def test_on_fold_is_called_in_order_and_can_stop(table):
    seen = []
    Blend(TINY, n_folds=3, n_jobs=1, on_fold=lambda f, s: seen.append((f, s["log_loss"]))).fit(table)
    assert [f for f, _ in seen] == [0, 1, 2] and all(ll > 0 for _, ll in seen)

    class Pruned(Exception):
        pass

    def prune(fold, score):
        raise Pruned

    with pytest.raises(Pruned):
        Blend(TINY, n_folds=3, n_jobs=1, on_fold=prune).fit(table)


def test_bundle_round_trip_and_transform(fitted, table, tmp_path):
    path = fitted.save(tmp_path / "bundle")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["classes"] == list(table.classes) and manifest["models"] == list(table.models)
    assert manifest["recipe"]["name"] == "tiny" and len(manifest["member_weights"]) == 4
    assert manifest["feature_columns"][-1] == "manip"
    files = [p for p in path.rglob("*") if p.is_file()]
    assert not any(p.read_bytes()[:1] == b"\x80" for p in files)  # no pickle
    assert {p.suffix for p in files} >= {".json"}
    back = Blend.load(path)
    np.testing.assert_array_equal(back.predict_proba(table), fitted.predict_proba(table))
    out = back.transform(table)
    assert out.models == ("blend",) and list(out.meta.columns) == list(table.meta.columns)
    # Model and class order of the input table do not matter.
    shuffled = table.select_models(list(reversed(table.models)))
    order = list(reversed(range(table.n_classes)))
    shuffled = shuffled.replace(probs=shuffled.probs[:, :, order], classes=[table.classes[i] for i in order])
    np.testing.assert_allclose(back.predict_proba(shuffled), fitted.predict_proba(table), atol=1e-12)
    # Chain-style state: get_state writes into a directory, from_state rebuilds.
    d = tmp_path / "state"
    d.mkdir()
    state = fitted.get_state(d)
    json.dumps(state)
    again = Blend.from_state(state, d)
    np.testing.assert_array_equal(again.predict_proba(table), fitted.predict_proba(table))


def test_fit_transform_returns_out_of_fold(table):
    b = Blend({"families": {"pool": {"count": 1}}}, n_folds=3, n_jobs=1)
    oof = b.fit_transform(table)
    assert oof is b.oof_
    assert not np.allclose(oof.probs, b.transform(table).probs)


# ------------------------------------------------------------------------- bad input
def test_fit_bad_input(table):
    unlabeled = make_table(n_images=30, labels=False)
    with pytest.raises(LabelError, match="labelled"):
        Blend(TINY, n_jobs=1).fit(unlabeled)
    one = make_table(n_images=30, classes=["a", "b"])
    meta = one.meta.copy()
    meta["label"] = "a"
    with pytest.raises(LabelError, match="only one class"):
        Blend(TINY, n_jobs=1).fit(one.replace(meta=meta))
    few = table.take(np.flatnonzero(~((table.y == 0) & (table.ids != table.ids[table.y == 0][0]))))
    with pytest.raises(LabelError, match=r"fewer images than folds \(3\): 'HTC-1-M7': 1"):
        Blend(TINY, n_folds=3, n_jobs=1).fit(few)
    with pytest.raises(ConfigError, match="unknown classes"):
        Blend(TINY, n_jobs=1, class_weight={"Nokia-3310": 2.0}).fit(table)
    with pytest.raises(ConfigError, match="positive"):
        Blend(TINY, n_jobs=1, class_weight={"LG-Nexus-5x": -1}).fit(table)
    with pytest.raises(ConfigError, match="combine"):
        Blend(TINY, n_jobs=1, combine="median").fit(table)
    with pytest.raises(ConfigError, match="features"):
        Blend(TINY, n_jobs=1, features="rank").fit(table)
    with pytest.raises(ConfigError, match="n_folds"):
        Blend(TINY, n_jobs=1, n_folds=1).fit(table)
    partial = table.meta.copy()
    partial.loc[3, "label"] = None
    with pytest.raises(LabelError, match="1 rows have no label"):
        Blend(TINY, n_jobs=1).fit(table.replace(meta=partial))
    with pytest.raises(NotFittedError, match="not fitted"):
        Blend(TINY).predict_proba(table)


def test_predict_refuses_other_classes_or_models(fitted, table):
    other_models = make_table(n_images=30, models=("cnn-a", "cnn-z"))
    with pytest.raises(BundleError, match=r"models differ.*missing \['cnn-b'\], unexpected \['cnn-z'\]"):
        fitted.predict_proba(other_models)
    other_classes = make_table(n_images=30, classes=[f"c{i}" for i in range(10)])
    with pytest.raises(BundleError, match="classes differ"):
        fitted.predict_proba(other_classes)
    no_manip = make_table(n_images=30, manip=False)
    with pytest.raises(BundleError, match="manipulation flag"):
        fitted.predict_proba(no_manip)


def test_load_refuses_missing_or_tampered_bundles(fitted, tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        Blend.load(tmp_path / "nothing")
    path = fitted.save(tmp_path / "b")
    manifest = path / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text.replace('"tiny"', '"tinier"', 1))
    with pytest.raises(BundleError, match="modified"):
        Blend.load(path)
    manifest.write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Blend.load(path)
    manifest.unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        Blend.load(path)
    path = fitted.save(tmp_path / "c")
    member = next(p for p in (path / "members").rglob("fold0*") if not p.name.endswith(".meta.json"))
    member.write_bytes(member.read_bytes()[:-3] + b"xyz")
    with pytest.raises(BundleError, match="checksum"):
        Blend.load(path)
    member.unlink()
    with pytest.raises(BundleError, match="missing"):
        Blend.load(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda st: st["weights"].__setitem__(0, float("nan")), r"weights\[0\]' is nan"),
        (lambda st: st["weights"].__setitem__(0, -0.5), r"weights\[0\]' is -0.5"),
        (lambda st: st["weights"].__setitem__(0, st["weights"][0] + 0.25), "sums to"),
        (lambda st: st["weights"].pop(), "one weight per member"),
        (lambda st: st["members"][0]["files"][0].update(fold=10**9), r"fold' is 1000000000, not a fold index 0..2"),
        (lambda st: st["members"][0]["files"][0].update(model="../../x.json"), "outside the bundle"),
        (lambda st: st["params"].update(n_folds=10**9), "n_folds"),
    ],
)
def test_load_refuses_re_signed_manifests_with_impossible_values(fitted, tmp_path, edit, message):
    """An edited manifest signed again is caught by its values: nothing NaN, no 8 GB fold list."""
    from test_chain import resign

    path = fitted.save(tmp_path / "b")
    weighted = next(i for i, w in enumerate(fitted.weights_) if w > 0)

    def change(doc):
        st = doc["state"]
        st["members"].insert(0, st["members"].pop(weighted))  # a member with files first
        st["weights"].insert(0, st["weights"].pop(weighted))
        edit(st)

    resign(path, change)
    with pytest.raises(BundleError, match=message) as err:
        Blend.load(path)
    assert "manifest.json" in str(err.value)


def test_a_bundle_and_a_one_step_chain_are_one_format(fitted, table, tmp_path):
    from stacker.chain import Chain

    path = fitted.save(tmp_path / "b")
    as_chain = Chain.load(path)
    assert len(as_chain) == 1 and isinstance(as_chain[0], Blend)
    np.testing.assert_array_equal(as_chain.transform(table).probs, fitted.transform(table).probs)
    Chain([fitted]).save(tmp_path / "c")
    np.testing.assert_array_equal(Blend.load(tmp_path / "c").transform(table).probs, fitted.transform(table).probs)
    from stacker.transforms import PowerMean

    Chain([PowerMean(over="models")]).save(tmp_path / "d")
    with pytest.raises(BundleError, match="holds a chain, not a Blend"):
        Blend.load(tmp_path / "d")


# ------------------------------------------------------------------------- CLI
def test_cli_fit_and_predict(tmp_path, capsys, table):
    holdout = write_table(table, tmp_path / "holdout.parquet")
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(Recipe.from_dict(TINY).to_toml())
    bundle = tmp_path / "bundle"
    rc = main(
        [
            "fit",
            str(holdout),
            "-o",
            str(bundle),
            "-r",
            str(recipe),
            "-k",
            "3",
            "--seed",
            "1",
            "-j",
            "1",
            "--class-weight",
            '{"LG-Nexus-5x": 2}',
            "--oof",
            str(tmp_path / "oof.parquet"),
            "--no-progress",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "out-of-fold all" in out and "wrote bundle" in out
    assert read_table(tmp_path / "oof.parquet").models == ("blend",)
    test = write_table(make_table(n_images=40, seed=3), tmp_path / "test.parquet")
    rc = main(["predict", str(bundle), str(test), "-o", str(tmp_path / "pred.parquet")])
    assert rc == 0
    pred = read_table(tmp_path / "pred.parquet")
    assert pred.models == ("blend",) and len(pred) == 40
    assert "accuracy" in capsys.readouterr().out
    # Errors are reported, not raised.
    other = write_table(make_table(n_images=20, models=("x",)), tmp_path / "other.parquet")
    assert main(["predict", str(bundle), str(other), "-o", str(tmp_path / "p2.parquet")]) == 2
    assert "models differ" in capsys.readouterr().err
    assert main(["fit", str(holdout), "-o", str(tmp_path / "b2"), "--class-weight", "[1]"]) == 2
    assert "class-weight" in capsys.readouterr().err
