"""One conformance suite over every level-2 and post-processing step.

scikit-learn's ``parametrize_with_checks`` runs on each step; the checks that feed
arbitrary real features (which a step of probabilities refuses, as documented) are
declared with their reasons in :func:`_expected`.  The project's own checks follow,
over the same list of steps: array, DataFrame and table inputs give identical
results; ``transform``/``predict`` do not change the fitted state; parameters,
``clone`` and save/load round trip; ``NotFittedError`` before fit; typed errors for
wrong input types and bad probabilities; Pipelines, ``cross_val_score`` and
``GridSearchCV`` over the Blend.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sklearn.exceptions
from sklearn.base import clone, is_classifier
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from stacker import (
    Blend,
    Chain,
    GreedyEqualizer,
    HungarianEqualizer,
    PowerMean,
    PredictionTable,
    PriorShift,
    SinkhornEqualizer,
    TemperatureScaling,
)
from stacker.errors import NotFittedError, ProbabilityError, StackerError

#: One logistic member and a log-linear pool: a Blend that fits in well under a second.
TINY = {"name": "tiny", "families": {"logistic": {"count": 1}, "pool": {"count": 1}}}
CLASSES = ["ant", "bee", "cat", "dog"]


def _steps():
    """Every step, with settings small enough for unit tests (new objects on each call)."""
    return [
        HungarianEqualizer(),
        GreedyEqualizer(),
        GreedyEqualizer(method="topk"),
        SinkhornEqualizer(),
        PriorShift(),
        PriorShift(prior=[1, 2, 3, 4], source_prior="uniform"),
        TemperatureScaling(),
        PowerMean(p=0.0, over="models"),
        Chain([TemperatureScaling(), HungarianEqualizer()]),
        Blend(TINY, n_folds=3, n_jobs=1),
    ]


def _id(step) -> str:
    return (
        type(step).__name__
        + ("-" + step.method if isinstance(step, GreedyEqualizer) else "")
        + ("-given" if isinstance(step, PriorShift) and step.source_prior == "uniform" else "")
    )


STEPS = _steps()
IDS = [_id(s) for s in STEPS]


# ------------------------------------------------------------------ scikit-learn's checks
_PROBS = (
    "the check feeds arbitrary real features; a step of probabilities refuses rows that do not sum to 1 "
    "(ProbabilityError naming the columns and rows), which is the documented answer"
)
_FLAT = (
    "the check's 2-d X is read as (N, M*K) probabilities of M models and K classes, and its column count is "
    "not a multiple of the number of labels (LabelError), or its rows are not probabilities"
)
_NEGATIVE = (
    "negative inputs are refused, with 'negative probabilities' and the column instead of scikit-learn's "
    "'Negative values in data' wording"
)
_ONE_LABEL = "an equalizer reads y only to name the classes; one label is not an error for a transductive step"
_REGRESSION = "X is checked before y, so the continuous target's 'Unknown label type' is not the error raised"
_SHARED = (
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_f_contiguous_array_estimator",
    "check_fit2d_predict1d",
    "check_fit_check_is_fitted",
    "check_fit_idempotent",
    "check_fit_score_takes_y",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_n_features_in",
    "check_transformer_data_not_an_array",
)
_FITTED = (
    "check_dtype_object",
    "check_estimators_dtypes",
    "check_estimators_fit_returns_self",
    "check_estimators_nan_inf",
    "check_estimators_overwrite_params",
    "check_estimators_pickle",
    "check_fit2d_1sample",
    "check_n_features_in_after_fitting",
    "check_pipeline_consistency",
    "check_readonly_memmap_input",
    "check_transformer_general",
    "check_transformer_preserve_dtypes",
)
_CLASSIFIER = (
    "check_classifier_data_not_an_array",
    "check_classifiers_classes",
    "check_classifiers_train",
    "check_supervised_y_2d",
)
_BLEND_WEIGHTS = (
    "check_all_zero_sample_weights_error",
    "check_class_weight_classifiers",
    "check_sample_weight_equivalence_on_dense_data",
    "check_sample_weights_list",
    "check_sample_weights_not_an_array",
    "check_sample_weights_not_overwritten",
    "check_sample_weights_shape",
)
_BLEND_FLAT = (
    "check_estimators_overwrite_params",
    "check_estimators_fit_returns_self",
    "check_readonly_memmap_input",
    "check_n_features_in_after_fitting",
    "check_positive_only_tag_during_fit",
    "check_estimators_dtypes",
    "check_dtype_object",
    "check_pipeline_consistency",
    "check_estimators_pickle",
    "check_transformer_general",
    "check_transformer_preserve_dtypes",
    "check_fit2d_1feature",
    "check_estimators_nan_inf",
    "check_sample_weights_pandas_series",
    "check_classifiers_one_label_sample_weights",
)


def _expected(est) -> dict[str, str]:
    out = dict.fromkeys(_SHARED, _PROBS)
    if isinstance(est, Blend):
        out.update(dict.fromkeys(_CLASSIFIER + _BLEND_WEIGHTS, _PROBS))
        out.update(dict.fromkeys(_BLEND_FLAT, _FLAT))
        return out
    out.update(dict.fromkeys(_FITTED, _PROBS))
    out["check_positive_only_tag_during_fit"] = _NEGATIVE
    if is_classifier(est):  # the equalizers
        out.update(dict.fromkeys(_CLASSIFIER, _PROBS))
        out["check_classifiers_one_label"] = _ONE_LABEL
        out["check_classifiers_regression_target"] = _REGRESSION
    if isinstance(est, (SinkhornEqualizer, PriorShift)):
        out["check_transformer_n_iter"] = _PROBS
    if isinstance(est, SinkhornEqualizer):
        out["check_non_transformer_estimators_n_iter"] = _PROBS
    if isinstance(est, PowerMean):
        out["check_transformers_unfitted_stateless"] = _PROBS
    return out


_SKLEARN = [
    HungarianEqualizer(),
    GreedyEqualizer(),
    SinkhornEqualizer(),
    PriorShift(source_prior="uniform"),
    TemperatureScaling(),
    PowerMean(over="models"),
    Chain([TemperatureScaling(), HungarianEqualizer()]),
    Blend({"name": "tiny", "families": {"logistic": {"count": 1}}}, n_folds=2, n_jobs=1),
]


@parametrize_with_checks(_SKLEARN, expected_failed_checks=_expected)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# ------------------------------------------------------------------ data
def _data(n=160, m=2, k=4, seed=0):
    """``(P (n, m, k), y names)``: M noisy models of the same labels, every class present."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    logits = rng.normal(size=(n, m, k)) * 1.2
    logits[np.arange(n), :, y] += 1.6
    logits[:, :, 0] += 0.6  # a prior shift the equalizers undo
    P = np.exp(logits)
    P /= P.sum(axis=2, keepdims=True)
    return P, np.asarray(CLASSES[:k], dtype=object)[y]


def _table(P, y=None):
    return PredictionTable.from_arrays(
        np.arange(len(P)), P, CLASSES[: P.shape[2]], models=[str(i) for i in range(P.shape[1])], labels=y
    )


def _array(step, P):
    """The array a user would pass: (N, M*K) for the Blend, (N, K) for one model, else (N, M, K)."""
    return P.reshape(len(P), -1) if isinstance(step, Blend) else (P[:, 0, :] if P.shape[1] == 1 else P)


def _kinds(step, P, y):
    """The same input three ways: ``{kind: (X, y for fit)}``."""
    table = _table(P, y)
    return {"array": (_array(step, P), y), "frame": (table.to_frame().drop(columns="id"), None), "table": (table, None)}


def _probs_of(out):
    if isinstance(out, PredictionTable):
        return out.probs.reshape(len(out), -1)
    if isinstance(out, pd.DataFrame):
        return out[[c for c in out.columns if "/" in c]].to_numpy()
    return np.asarray(out).reshape(len(out), -1)


def _single(step) -> bool:
    return isinstance(step, (HungarianEqualizer, GreedyEqualizer, SinkhornEqualizer))


def _input(step, seed=0):
    P, y = _data(m=1 if _single(step) else 2, seed=seed)
    return P, y


# ------------------------------------------------------------------ equivalence of input kinds
@pytest.mark.parametrize("step", _steps(), ids=IDS)
def test_array_frame_and_table_inputs_give_identical_results(step):
    P, y = _input(step)
    P_new, _ = _input(step, seed=1)
    outs, preds, tests = {}, {}, {}
    for kind, (X, y_fit) in _kinds(step, P, y).items():
        est = clone(step)
        outs[kind] = _probs_of(est.fit_transform(X, y_fit))
        X_new = _kinds(step, P_new, None)[kind][0]
        tests[kind] = _probs_of(est.transform(X_new))
        assert type(est.transform(X_new)) is type(X_new)  # the answer comes in the input's kind
        if hasattr(est, "predict"):
            preds[kind] = np.asarray(est.predict(X_new)).astype(str)
    for kind in ("frame", "table"):
        np.testing.assert_array_equal(outs[kind], outs["array"], err_msg=kind)
        np.testing.assert_array_equal(tests[kind], tests["array"], err_msg=kind)
        if preds:
            np.testing.assert_array_equal(preds[kind], preds["array"], err_msg=kind)


@pytest.mark.parametrize("step", _steps(), ids=IDS)
def test_transform_and_predict_do_not_change_the_fitted_state(step):
    P, y = _input(step)
    X, y_fit = _kinds(step, P, y)["array"]
    est = clone(step).fit(X, y_fit)

    def snapshot(obj):
        state = {}
        for k, v in vars(obj).items():
            if k.endswith("_") and not k.startswith("_"):
                state[k] = repr(v.tolist() if isinstance(v, np.ndarray) else v)
        state["params"] = repr(obj.get_params(deep=False))
        return state

    before = snapshot(est)
    X_new = _kinds(step, _input(step, seed=2)[0], None)["array"][0]
    X_copy = np.copy(X_new)
    est.transform(X_new)
    if hasattr(est, "predict"):
        est.predict(X_new)
    assert snapshot(est) == before
    np.testing.assert_array_equal(X_new, X_copy)  # the input is not written to either


# ------------------------------------------------------------------ parameters, clone, persistence
@pytest.mark.parametrize("step", _steps(), ids=IDS)
def test_params_round_trip_and_clone(step):
    params = step.get_params(deep=False)
    again = type(step)(**params)
    assert repr(again.get_params(deep=False)) == repr(params)
    twin = clone(step)
    assert repr(twin) == repr(step) and twin is not step
    assert step.set_params(**params) is step
    deep = step.get_params(deep=True)
    assert set(params) <= set(deep)
    with pytest.raises(ValueError):
        step.set_params(no_such_parameter=1)


def test_chain_keeps_steps_as_given_and_sets_nested_params():
    steps = [PowerMean(p=0.0, over="models"), HungarianEqualizer()]
    chain = Chain(steps)
    assert chain.steps is steps  # clone's identity check depends on it
    twin = clone(chain)
    assert twin.steps is not steps and repr(twin) == repr(chain)
    assert twin.steps[0] is not steps[0]
    twin.set_params(steps__0__p=1.0, steps__1__objective="prob")
    assert twin.steps[0].p == 1.0 and twin.steps[1].objective == "prob" and steps[0].p == 0.0
    assert twin.get_params()["steps__1__objective"] == "prob"
    twin.set_params(steps__1=GreedyEqualizer())
    assert isinstance(twin.steps[1], GreedyEqualizer)
    with pytest.raises(ValueError, match="steps__<i>"):
        twin.set_params(steps__7__p=1)


@pytest.mark.parametrize("step", _steps(), ids=IDS)
@pytest.mark.parametrize("kind", ["array", "table"])
def test_save_load_round_trip(step, kind, tmp_path: Path):
    P, y = _input(step)
    X, y_fit = _kinds(step, P, y)[kind]
    chain = Chain([clone(step)]).fit(X, y_fit)
    chain.save(tmp_path / "chain")
    loaded = Chain.load(tmp_path / "chain")
    X_new = _kinds(step, _input(step, seed=3)[0], None)[kind][0]
    np.testing.assert_array_equal(_probs_of(loaded.transform(X_new)), _probs_of(chain.transform(X_new)))
    if hasattr(step, "predict"):
        np.testing.assert_array_equal(loaded.predict(X_new), chain.predict(X_new))
        assert list(loaded.classes_) == list(chain.classes_)


@pytest.mark.parametrize(
    "step",
    [s for s in _steps() if not isinstance(s, PowerMean)],
    ids=[i for s, i in zip(_steps(), IDS) if not isinstance(s, PowerMean)],
)
def test_not_fitted_error_before_fit(step):
    P, _ = _input(step)
    X = _kinds(step, P, None)["array"][0]
    methods = [m for m in ("transform", "predict", "predict_proba") if hasattr(step, m)]
    for method in methods:
        with pytest.raises(NotFittedError, match="not fitted") as err:
            getattr(clone(step), method)(X)
        assert isinstance(err.value, sklearn.exceptions.NotFittedError) and isinstance(err.value, StackerError)


def test_power_mean_is_stateless():
    P, _ = _data()
    np.testing.assert_allclose(PowerMean(p=1.0, over="models").transform(P), P.mean(axis=1))


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("step", _steps(), ids=IDS)
@pytest.mark.parametrize("bad", ["probs.parquet", {"a": 1}, None, 3.0])
def test_wrong_input_type_is_a_type_error_naming_the_accepted_types(step, bad):
    with pytest.raises(TypeError, match="NumPy array, a pandas DataFrame .* or a PredictionTable"):
        clone(step).fit(bad, ["a"])


@pytest.mark.parametrize("step", _steps(), ids=IDS)
def test_bad_probabilities_in_arrays_are_probability_errors_with_rows(step):
    P, y = _input(step)
    for value, reason in ((np.nan, "NaN"), (-0.2, "negative"), (0.9, "do not sum to 1")):
        bad = P.copy()
        bad[[3, 7], 0, 1] = value
        X = _array(step, bad)
        with pytest.raises(ProbabilityError, match=reason) as err:
            clone(step).fit(X, y)
        assert err.value.rows[:2] == [3, 7] and "array X" in str(err.value)


# ------------------------------------------------------------------ the transductive steps
@pytest.mark.parametrize(
    "eq",
    [HungarianEqualizer(), GreedyEqualizer(), GreedyEqualizer(method="topk"), HungarianEqualizer(objective="prob")],
    ids=["exact", "iterative", "topk", "prob"],
)
def test_equalizer_fit_predict_is_the_argmax_of_fit_transform_on_exact_ties(eq):
    rng = np.random.default_rng(5)
    # Many exact ties: every row's probabilities from a handful of values, rows repeated.
    base = rng.choice([0.1, 0.2, 0.3, 0.4], size=(30, 5))
    P = np.repeat(base / base.sum(axis=1, keepdims=True), 4, axis=0)
    labels = clone(eq).fit_predict(P)
    out = clone(eq).fit_transform(P)
    np.testing.assert_array_equal(np.argmax(out, axis=1), labels)
    assert np.bincount(labels, minlength=5).tolist() == [24] * 5
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    # predict on a new batch equals fit_predict on it, and leaves the fitted batch's answer alone.
    fitted = clone(eq).fit(P)
    new = P[::-1].copy()
    np.testing.assert_array_equal(fitted.predict(new), clone(eq).fit_predict(new))
    np.testing.assert_array_equal(fitted.labels_, labels)


def test_equalizer_labels_follow_y_and_groups_split_the_batch():
    P, y = _data(m=1)
    P = P[:, 0, :]
    eq = HungarianEqualizer()
    assert eq.fit_predict(P).dtype.kind == "i"  # no labels: column indices
    named = eq.fit_predict(P, y)
    assert set(named) == set(CLASSES) and list(eq.classes_) == CLASSES
    groups = np.arange(len(P)) % 2
    by_group = HungarianEqualizer().fit_predict(P, groups=groups)
    for g in (0, 1):
        assert np.bincount(by_group[groups == g], minlength=4).tolist() == [20] * 4
    assert HungarianEqualizer().fit(P, y).score(P, y) == pytest.approx(float(np.mean(named == y)))


# ------------------------------------------------------------------ the Blend as a classifier
def test_blend_array_layouts_agree_and_learn():
    P, y = _data(n=240, m=3, seed=4)
    flat = Blend(TINY, n_folds=3, n_jobs=1).fit(P.reshape(len(P), -1), y)
    stacked = Blend(TINY, n_folds=3, n_jobs=1).fit(P, y)
    np.testing.assert_array_equal(flat.predict_proba(P.reshape(len(P), -1)), stacked.predict_proba(P))
    assert list(flat.classes_) == CLASSES and flat.n_features_in_ == 12
    score = flat.score(P.reshape(len(P), -1), y)
    assert (
        isinstance(score, float)
        and score > max(np.mean(P[:, m].argmax(1) == np.arange(240) % 4) for m in range(3)) - 0.05
    )
    oof = Blend(TINY, n_folds=3, n_jobs=1).fit_transform(P, y)
    assert oof.shape == (240, 4)
    np.testing.assert_allclose(oof, flat.oof_.probs[:, 0])  # cross-fitted out-of-fold rows


def test_blend_groups_keep_images_in_one_fold_and_sample_weight_matters():
    P, y = _data(n=240, m=2, seed=6)
    groups = np.arange(240) % 80  # three rows per image, of one label
    b = Blend(TINY, n_folds=3, n_jobs=1, combine="mean").fit(P, y, groups=groups)
    assert all(len(set(b.folds_[groups == g])) == 1 for g in np.unique(groups))
    w = np.where(y == "ant", 5.0, 1.0)
    weighted = Blend(TINY, n_folds=3, n_jobs=1, combine="mean").fit(P, y, groups=groups, sample_weight=w)
    assert not np.allclose(weighted.oof_.probs, b.oof_.probs)
    assert (weighted.oof_.probs[:, 0, 0].mean()) > b.oof_.probs[:, 0, 0].mean()
    with pytest.raises(StackerError, match="sample_weight"):
        Blend(TINY, n_jobs=1).fit(P, y, sample_weight=np.ones(3))


def test_blend_needs_y_for_arrays_and_names_label_mismatches():
    P, y = _data(n=120, m=2)
    with pytest.raises(StackerError, match="requires y"):
        Blend(TINY, n_jobs=1).fit(P)
    with pytest.raises(StackerError, match="do not divide"):
        Blend(TINY, n_jobs=1).fit(P.reshape(120, -1)[:, :7], y)


def test_pipeline_cross_val_score_and_grid_search_over_the_blend():
    P, y = _data(n=240, m=2, seed=8)
    X = P.reshape(len(P), -1)
    pipe = Pipeline([("blend", Blend(TINY, n_folds=3, n_jobs=1)), ("eq", HungarianEqualizer())]).fit(X, y)
    X_test, y_test = _data(n=200, m=2, seed=9)
    pred = pipe.predict(X_test.reshape(200, -1))
    assert sorted(pd.Series(pred).value_counts().tolist()) == [50] * 4  # equalized classes of the test batch
    assert (
        pipe.score(X_test.reshape(200, -1), y_test)
        >= Blend(TINY, n_folds=3, n_jobs=1).fit(X, y).score(X_test.reshape(200, -1), y_test) - 0.02
    )
    scores = cross_val_score(Blend(TINY, n_folds=3, n_jobs=1), X, y, cv=3)
    assert scores.shape == (3,) and (scores > 0.5).all()
    search = GridSearchCV(Blend(TINY, n_folds=3, n_jobs=1), {"combine": ["mean", "weights"]}, cv=2).fit(X, y)
    assert search.best_params_["combine"] in ("mean", "weights") and 0.5 < search.best_score_ <= 1.0


CIFAR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-5models" / "probs.parquet"


@pytest.mark.skipif(not CIFAR.is_file(), reason="../shared/data/cifar10-5models is absent")
def test_pipeline_on_real_cifar_arrays_beats_the_best_single_model():
    from stacker import read_table

    table = read_table(CIFAR)
    rows = np.random.default_rng(0).permutation(len(table))
    train = table.take(np.sort(rows[:2000]))
    rest = rows[2000:]
    labels = table.labels[rest]  # a balanced test batch, 100 per class, as the equalizer assumes
    test = table.take(np.sort(np.concatenate([rest[labels == c][:100] for c in table.classes])))
    X, y = train.probs.reshape(2000, -1), train.labels.astype(str)
    X_test, y_test = test.probs.reshape(1000, -1), test.labels.astype(str)
    pipe = Pipeline([("blend", Blend("fast", n_folds=3, n_jobs=1)), ("eq", HungarianEqualizer())]).fit(X, y)
    best_single = max(
        float(np.mean(np.asarray(test.classes)[test.probs[:, m].argmax(1)] == y_test)) for m in range(test.n_models)
    )
    assert pipe.score(X_test, y_test) >= best_single - 0.005
    # The array answer equals the table answer, labels included.
    blend = pipe.named_steps["blend"]
    table_labels = Blend("fast", n_folds=3, n_jobs=1).fit(train).predict(test)
    np.testing.assert_array_equal(blend.predict(X_test), table_labels)


def test_a_table_in_another_class_order_is_aligned_to_the_fitted_order():
    P, y = _data(m=1)
    table = _table(P, y)
    shift = PriorShift(prior={"ant": 1, "bee": 2, "cat": 3, "dog": 4}).fit(table)
    order = [2, 0, 3, 1]
    shuffled = PredictionTable.from_arrays(np.arange(len(P)), P[:, :, order], [CLASSES[i] for i in order], models=["0"])
    out = shift.transform(shuffled)
    assert out.classes == tuple(CLASSES)
    np.testing.assert_array_equal(out.probs, shift.transform(table).probs)
    other = PredictionTable.from_arrays(np.arange(len(P)), P, ["a", "b", "c", "d"], models=["0"])
    with pytest.raises(ValueError, match="fitted on classes"):
        shift.transform(other)
