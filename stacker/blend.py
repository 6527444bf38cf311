"""The Blend: many meta-models trained on a labelled holdout and averaged.

``Blend.fit(table)``

1. builds the feature matrix (:class:`~stacker.features.FeatureSpec`: every
   level-1 model's probabilities, optionally as logs, plus the manipulation flag);
2. assigns rows to ``n_folds`` folds stratified by class and grouped by image id
   (all views and manipulations of an image share a fold; :mod:`stacker.cv`);
3. draws the members from the recipe with ``seed`` (:mod:`stacker.recipe`) and
   fits every member on every fold's training rows, in parallel
   (:mod:`stacker.parallel`).  Early stopping uses an inner grouped split of the
   training rows, never the held-out fold, so the out-of-fold scores are honest;
4. combines the members' out-of-fold probabilities by equal averaging
   (``combine="mean"``) or by weights from greedy ensemble selection
   (``combine="weights"``).  The blend's own out-of-fold prediction uses weights
   fitted on the *other* folds' predictions (cross-fitted), so learning the
   weights does not flatter the score; the final weights use all rows.

Prediction averages each member's K fold models (as the 1st-place solution did)
rather than refitting on all rows: no extra fits, and the fold models already
stopped early on held-out data.  Then the member weights combine them.

Persistence is a bundle directory (:mod:`stacker.bundle`): a JSON manifest and
each member's fold models in their native formats; no pickle.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin

from stacker import metrics
from stacker.base import Transform, register
from stacker.device import DEVICE_FAMILIES, check_device
from stacker.errors import BundleError, ConfigError, LabelError
from stacker.features import FeatureSpec
from stacker.inputs import (
    Form,
    encode_labels,
    group_codes,
    infer_n_classes,
    labels_to_names,
    to_table,
    with_labels,
)
from stacker.metamodels import BLOCK_FAMILIES
from stacker.metamodels.selection import selection_on_true_class
from stacker.planner import Planner, check_time_limit
from stacker.recipe import MemberSpec, Recipe, _is_num
from stacker.stats import model_correlation, model_scores
from stacker.table import FOLD, LABEL, VIEW, PredictionTable

__all__ = ["Blend", "COMBINE_RULES", "SELECTION_ITER", "class_sample_weights", "combine_members"]

COMBINE_RULES = ("mean", "weights")
#: Greedy steps when learning member weights (weights are multiples of 1/SELECTION_ITER).
SELECTION_ITER = 100


def class_sample_weights(
    class_weight: Mapping[str, float] | str | None, y: np.ndarray, classes: tuple[str, ...] | list[str]
) -> np.ndarray:
    """Per-row sample weights from class weights by name, ``"balanced"`` or None (all 1)."""
    k = len(classes)
    if class_weight is None:
        per_class = np.ones(k)
    elif isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ConfigError(f"class_weight must be a mapping, 'balanced' or None, got {class_weight!r}")
        counts = np.bincount(y, minlength=k).astype(np.float64)
        per_class = np.where(counts > 0, len(y) / (k * np.where(counts > 0, counts, 1)), 1.0)
    elif isinstance(class_weight, Mapping):
        unknown = [c for c in class_weight if c not in classes]
        if unknown:
            raise ConfigError(f"class_weight names unknown classes {unknown}; classes: {list(classes)}")
        per_class = np.ones(k)
        for c, v in class_weight.items():
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise ConfigError(f"class weight of {c!r} must be a number, got {v!r}") from None
            if not np.isfinite(v) or v <= 0 or v > 1e12:  # 1e308 overflowed the members' weight sums
                raise ConfigError(f"class weight of {c!r} must be positive, finite and at most 1e12, got {v}")
            per_class[list(classes).index(c)] = v
    else:
        raise ConfigError(f"class_weight must be a mapping, 'balanced' or None, got {type(class_weight).__name__}")
    return per_class[y]


def combine_members(
    oof: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    sample_weight: np.ndarray | None,
    rule: str,
    n_jobs: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Member weights and the blend's out-of-fold probabilities from members' OOF predictions.

    ``rule="mean"``: equal weights.  ``rule="weights"``: greedy ensemble selection;
    the blend's OOF rows of fold ``k`` use weights selected on the other folds'
    rows only (cross-fitting), and the returned weights use every row.

    Parameters
    ----------
    oof : ndarray of shape (n_members, n_rows, n_classes)
    y, folds : ndarray of shape (n_rows,)
    sample_weight : ndarray of shape (n_rows,) or None
    rule : {"mean", "weights"}
    n_jobs : int, default 1
        Threads for the K + 1 weight searches (NumPy releases the GIL in them).
    """
    if rule not in COMBINE_RULES:
        raise ConfigError(f"combine must be one of {COMBINE_RULES}, got {rule!r}")
    n_members, n, k = oof.shape
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if rule == "mean" or n_members == 1:
        weights = np.full(n_members, 1.0 / n_members)
        return weights, np.einsum("mnk,m->nk", oof, weights)
    from concurrent.futures import ThreadPoolExecutor

    true = oof[:, np.arange(n), y]  # only the true class's probability enters the search
    fold_ids = list(np.unique(folds))
    with ThreadPoolExecutor(max(1, int(n_jobs))) as pool:
        searches = [
            pool.submit(selection_on_true_class, true[:, folds != f], SELECTION_ITER, w[folds != f]) for f in fold_ids
        ]
        weights = selection_on_true_class(true, SELECTION_ITER, w)
        blend_oof = np.zeros((n, k))
        for f, search in zip(fold_ids, searches):
            te = folds == f
            blend_oof[te] = np.einsum("mnk,m->nk", oof[:, te], search.result())
    return weights, blend_oof


@register("blend")
class Blend(ClassifierMixin, Transform):
    """Level-2 stacking: a recipe of meta-models, fitted out-of-fold and averaged.

    A scikit-learn classifier.  ``X`` is the level-1 models' probabilities: a
    ``(N, M*K)`` array with each model's K columns together (``np.hstack`` of the
    models' ``(N, K)`` arrays), a ``(N, M, K)`` array, a DataFrame with
    ``<model>/<class>`` columns, or a :class:`~stacker.table.PredictionTable`
    (:mod:`stacker.inputs`); ``y`` the labels (a table's label column by default).
    ``fit_transform`` returns the cross-fitted out-of-fold probabilities, so a
    ``Pipeline([("blend", Blend()), ("eq", HungarianEqualizer())])`` trains the
    next step on honest predictions.

    Parameters
    ----------
    recipe : Recipe, str, path or None, default None
        A :class:`~stacker.recipe.Recipe`, the name of a shipped recipe
        (``"default"``, ``"cmi-1st-place"``, ``"fast"``, ...), or a TOML/YAML
        file.  None means ``"default"``.
    class_weight : mapping of class name to weight, "balanced" or None
        Applied as sample weights to every member (and to the weight search).
    n_folds : int, default 5
        Folds of the grouped stratified cross-validation.
    seed : int, default 0
        Seeds the folds, the members' hyperparameters and their training.
    combine : {"weights", "mean"}, default "weights"
        Learned member weights (greedy ensemble selection on the out-of-fold
        predictions) or equal averaging.
    features : {"log", "proba"}, default "log"
        Members see log-probabilities (``"log"``, alias ``"logit"``) or raw
        probabilities.  Trees are indifferent; the MLP and logistic members do
        better on logs.
    n_jobs : int or None, default -1
        Parallel fits (-1: all cores); each fit uses one thread.
    scheduler : str or None
        ``tcp://host:port`` of a Dask scheduler to run the fits on instead.
    progress : bool, default False
        Show a progress bar over the fits.
    tta_power : float or None
        Power-mean exponent applied to the TTA views of each sample (tables with
        a ``view`` column) before fitting and predicting; None falls back to the
        recipe's ``tta_power``, and if that is unset too every view row is its
        own training row and is predicted as such.
    on_fold : callable or None
        ``on_fold(fold, scores)`` is called as each fold completes, in fold
        order, with the equal-weight blend's ``{"accuracy", "log_loss"}`` on that
        fold; raising from it (e.g. ``optuna.TrialPruned``) stops the fit.  Under
        a time limit a fold completes only once every member is decided.
    time_limit : float or None
        Seconds for the whole fit (:mod:`stacker.planner`): members are admitted,
        with all their folds, in the order of expected gain per second while a
        calibrated cost model expects them to end within the budget; the rest
        are skipped and listed in :attr:`plan_`.  None falls back to the recipe's
        ``time_limit`` (the ``default`` recipe has one); ``math.inf``: no budget.
    device : {"cpu", "cuda", "cuda:N"}, default "cpu"
        Where the XGBoost, LightGBM and Keras members train (:mod:`stacker.device`);
        a ConfigError when CUDA is asked for and absent.

    Attributes
    ----------
    classes_ : ndarray
        Class labels in column order: a table's class names, or ``y``'s sorted labels
        (arrays; :func:`~stacker.inputs.encode_labels`).
    models_ : tuple of str
        The level-1 models the Blend was fitted on (``"0"``, ``"1"``, ... for arrays).
    members_ : list of MemberSpec
        The fitted members (under a time limit, the sampled members that were
        fitted on every fold).
    weights_ : ndarray of shape (n_members,)
        Member weights (sum to 1).
    folds_ : ndarray of shape (n_rows,)
        Fold of each training row.
    oof_ : PredictionTable
        Out-of-fold blend probabilities (model ``"blend"``).
    member_oof_ : ndarray of shape (n_members, n_rows, n_classes)
    fit_seconds_ : ndarray of shape (n_members, n_folds)
        Wall seconds of each member's fit on each fold (with prediction and
        serialisation); a member whose folds were trained together (Keras) has
        its task's time split evenly over its folds.
    plan_ : dict
        What the planner did: ``time_limit``, ``seconds`` (the whole fit),
        ``fitted`` and ``skipped`` members (name, family, reason, expected
        seconds), ``overruns`` (fits that ended past the budget), ``forced`` (the
        member fitted although the budget was too small for it) and the cost
        model's ``cost_factors`` (observed / predicted seconds by family).
    time_limit_ : float or None
        The budget in force (the parameter's, else the recipe's).
    scores_ : dict
        ``{"blend": ..., "members": {name: ...}, "folds": [...]}``: accuracy,
        log loss and per-class accuracy, each on all, unaltered and manipulated rows.
    """

    def __init__(
        self,
        recipe: Recipe | str | os.PathLike[str] | None = None,
        class_weight: Mapping[str, float] | str | None = None,
        n_folds: int = 5,
        seed: int = 0,
        combine: str = "weights",
        features: str = "log",
        n_jobs: int | None = -1,
        scheduler: str | None = None,
        progress: bool = False,
        on_fold: Callable[[int, dict[str, float]], Any] | None = None,
        tta_power: float | None = None,
        time_limit: float | None = None,
        device: str = "cpu",
    ) -> None:
        self.recipe = recipe
        self.class_weight = class_weight
        self.n_folds = n_folds
        self.seed = seed
        self.combine = combine
        self.features = features
        self.n_jobs = n_jobs
        self.scheduler = scheduler
        self.progress = progress
        self.on_fold = on_fold
        self.tta_power = tta_power
        self.time_limit = time_limit
        self.device = device

    # ------------------------------------------------------------------ fitting
    def _check_labels(self, table: PredictionTable) -> np.ndarray:
        src = table.source
        if LABEL not in table.meta.columns or not table.has_labels:
            raise LabelError("fitting a Blend needs a labelled table; it has no labels", path=src, column=LABEL)
        y = table.y
        missing = y < 0
        if missing.any():
            rows = np.flatnonzero(missing)
            raise LabelError(
                f"{int(missing.sum())} rows have no label; fit on labelled rows only",
                path=src,
                column=LABEL,
                rows=rows,
                ids=table.meta["id"].iloc[rows[:5]].tolist(),
            )
        return y

    def _member_kwargs(self, m: MemberSpec, spec: FeatureSpec) -> dict[str, Any]:
        params = dict(m.params)
        if m.family in BLOCK_FAMILIES:
            params.update(layout=list(spec.layout), input=spec.kind)
        if self.device != "cpu" and m.family in DEVICE_FAMILIES:
            params["device"] = self.device
        return params

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    def _fit_table(self, X: Any, y: Any) -> tuple[PredictionTable, Form, np.ndarray]:
        """The labelled table of ``fit``'s input, its form and the class labels."""
        if not isinstance(X, (PredictionTable, pd.DataFrame)):
            arr = X if isinstance(X, np.ndarray) else (np.asarray(X) if isinstance(X, (list, tuple)) else X)
            if isinstance(arr, np.ndarray):
                if y is None:
                    raise LabelError("fitting a Blend on an array requires y to be passed, but the target y is None")
                n_classes = infer_n_classes(y, arr.shape[1], len(arr)) if arr.ndim == 2 else arr.shape[-1]
                table, form = to_table(arr, layout="flat", n_classes=n_classes)
                classes, codes = encode_labels(y, table.n_classes, len(table))
                self.n_features_in_ = int(np.prod(arr.shape[1:]))
                return with_labels(table, np.asarray(table.classes, dtype=object)[codes]), form, classes
        table, form = to_table(X)
        if y is not None:
            table = with_labels(table, labels_to_names(y, table, None))
        return table, form, np.asarray(table.classes, dtype=object)

    def _table(self, X: Any) -> tuple[PredictionTable, Form]:
        """The table of a prediction input, aligned with the fitted models and classes."""
        self._check_fitted("weights_")
        spec = self.feature_spec_
        if isinstance(X, (PredictionTable, pd.DataFrame)):
            table, form = to_table(X)
            return spec.align(table), form
        table, form = to_table(X, layout="flat", n_classes=len(spec.classes))
        if table.n_models != len(spec.models) or table.n_classes != len(spec.classes):
            raise ValueError(
                f"the Blend was fitted on {len(spec.models)} models x {len(spec.classes)} classes; "
                f"X has {table.n_models} x {table.n_classes}"
            )
        return table.replace(classes=spec.classes, models=spec.models), form

    def fit(self, X: Any, y: Any = None, *, groups: Any = None, sample_weight: Any = None) -> Blend:
        """Fit every member on every fold and learn the member weights.

        Parameters
        ----------
        X : array, DataFrame or PredictionTable
            Level-1 probabilities (see the class docstring).
        y : array-like of shape (N,), optional
            Labels; default: the table's or DataFrame's label column.
        groups : array-like of shape (N,), optional
            Image of each row: rows of one image share a fold (default: a table's ``id``;
            each row its own image for arrays).
        sample_weight : array-like of shape (N,), optional
            Multiplies the class weights.
        """
        table, form, classes = self._fit_table(X, y)
        self._fit(table, groups, sample_weight)
        self.classes_ = classes
        return self

    def _fit(self, table: PredictionTable, groups: Any, sample_weight: Any) -> None:
        started = time.monotonic()
        if self.combine not in COMBINE_RULES:
            raise ConfigError(f"combine must be one of {COMBINE_RULES}, got {self.combine!r}")
        recipe = Recipe.coerce(self.recipe)
        limit = check_time_limit(self.time_limit)  # typed error for 0, negative, NaN, strings
        check_device(self.device)
        # An explicit limit wins over the recipe's; inf means no budget even if the recipe has one.
        self.time_limit_ = limit if self.time_limit is not None else recipe.time_limit
        self.tta_power_ = self.tta_power if self.tta_power is not None else recipe.tta_power
        if self.tta_power_ is not None and not (_is_num(self.tta_power_) and np.isfinite(self.tta_power_)):
            raise ConfigError(f"tta_power must be a finite number or None, got {self.tta_power_!r}")
        n_rows = len(table)
        if groups is not None and VIEW in table.meta.columns and self.tta_power_ is not None:
            raise ConfigError(
                "groups= cannot follow rows through the TTA view aggregation; give the table an id column"
            )
        table = self._aggregate(table)
        y = self._check_labels(table)
        spec = FeatureSpec.from_table(table, self.features)
        # A tuned recipe carries class weights; an explicit class_weight wins.
        cw = self.class_weight if self.class_weight is not None else recipe.class_weight
        w = class_sample_weights(cw, y, table.classes)
        if sample_weight is not None:
            sw = np.asarray(sample_weight, dtype=np.float64)
            if sw.shape != (n_rows,) or not np.isfinite(sw).all() or (sw < 0).any() or sw.sum() <= 0:
                raise ConfigError(f"sample_weight must be {n_rows} finite non-negative numbers, not all 0")
            if len(table) != n_rows:
                raise ConfigError(
                    "sample_weight cannot follow rows through the TTA view aggregation; aggregate "
                    "the views first (stacker aggregate), or set tta_power=None"
                )
            w = w * sw
        image = table.ids if groups is None else group_codes(groups, n_rows)[0]
        folds = _grouped_folds(table, y, self.n_folds, self.seed, image)
        absent = [table.classes[k] for k in np.flatnonzero(np.bincount(y, minlength=table.n_classes) == 0)]
        if absent:  # the members would learn fewer classes than the table's columns
            raise LabelError(
                f"classes {absent[:5]} have no labelled rows; every class of the table needs rows to fit on",
                path=table.source,
                column=LABEL,
            )
        members = recipe.sample(self.seed)
        if "keras" in {m.family for m in members}:
            from stacker.metamodels.keras import check_keras

            check_keras()  # fail before any work if the nn extra is missing
        X = spec.transform(table)
        groups = pd.factorize(pd.Series(image, dtype=object))[0].astype(np.int64)
        n, k, n_folds = len(y), table.n_classes, int(self.n_folds)
        fold_rows = [np.flatnonzero(folds == f) for f in range(n_folds)]
        train_rows = [np.flatnonzero(folds != f) for f in range(n_folds)]
        from stacker.parallel import fit_member_folds, member_tasks, plan_fits, run_tasks

        planner = plan_fits(
            members,
            [self._member_kwargs(m, spec) for m in members],
            train_rows,
            X.shape[1],
            table.n_classes,
            len(table.models),
            self.n_jobs,
            self.time_limit_,
            started,
        )

        oof = np.zeros((len(members), n, k))
        states: list[list[Any]] = [[None] * n_folds for _ in members]
        seconds = np.zeros((len(members), n_folds))
        done: list[set[int]] = [set() for _ in members]
        fold_scores: list[dict[str, float]] = []

        def score_folds() -> None:
            # A fold is scored once every member that will be in the blend has fitted it.
            while len(fold_scores) < n_folds and planner.settled:
                f, live = len(fold_scores), planner.live()
                if not all(f in done[mi] for mi in live):
                    return
                p = oof[live][:, fold_rows[f]].mean(axis=0)
                yf = y[fold_rows[f]]
                fold_scores.append({"accuracy": metrics.accuracy(yf, p), "log_loss": metrics.log_loss(yf, p)})
                if self.on_fold is not None:
                    self.on_fold(f, fold_scores[-1])

        shared = {"X": X, "y": y, "w": w, "groups": groups, "preload": tuple(sorted({m.family for m in members}))}
        bar = _ProgressBar(self.progress, planner)
        try:
            for ti, res in run_tasks(
                fit_member_folds,
                member_tasks(planner, members, train_rows, fold_rows),
                shared,
                n_jobs=self.n_jobs,
                scheduler=self.scheduler,
            ):
                t = planner.task(ti)
                planner.task_done(t, res["seconds"])
                for f, r in zip(t.folds, res["folds"]):
                    oof[t.member, fold_rows[f]] = r["proba"]
                    states[t.member][f] = (r["model"], r["sidecar"])
                    seconds[t.member, f] = res["seconds"] / len(t.folds)
                    done[t.member].add(f)
                bar.step(len(t.folds))
                score_folds()
        finally:
            bar.close()
        score_folds()  # under a budget the last members are decided after the last fit
        plan = planner.summary()
        fitted = [mi for mi in range(len(members)) if planner.complete(mi)]
        members = [members[mi] for mi in fitted]
        oof, seconds = oof[fitted], seconds[fitted]
        states = [states[mi] for mi in fitted]

        from stacker.parallel import effective_n_jobs

        jobs = 1 if self.scheduler else effective_n_jobs(self.n_jobs)
        weights, blend_oof = combine_members(oof, y, folds, w, self.combine, n_jobs=jobs)
        plan["seconds"] = round(time.monotonic() - started, 3)
        self.plan_ = plan

        self.models_ = tuple(table.models)
        self.feature_spec_ = spec
        self.recipe_ = recipe
        self.members_ = members
        self.weights_ = weights
        self.folds_ = folds
        self.member_oof_ = oof
        self.fit_seconds_ = seconds
        self._states = states
        self._estimators: dict[tuple[int, int], Any] = {}
        manip = table.manip
        self.scores_: dict[str, Any] = {
            "blend": metrics.score_split(y, blend_oof, manip, table.classes),
            "members": {m.name: metrics.score_split(y, oof[mi], manip, table.classes) for mi, m in enumerate(members)},
            "folds": fold_scores,
            # The level-1 models' own scores on the same rows, for reports and comparisons.
            "level1": model_scores(table, y),
        }
        self.level1_correlation_ = model_correlation(table.probs)
        meta = table.meta.copy()
        if FOLD not in meta.columns:
            meta[FOLD] = pd.array(folds, dtype="Int64")
        self.oof_ = PredictionTable(
            meta, blend_oof[:, None, :], table.classes, ["blend"], source=table.source, validate=False
        )

    def _aggregate(self, table: PredictionTable) -> PredictionTable:
        """Power mean of each sample's TTA views, when a TTA power is set and the table has views."""
        p = getattr(self, "tta_power_", None)
        if p is None or VIEW not in table.meta.columns:
            return table
        from stacker.aggregate import aggregate_views

        return aggregate_views(table, p)

    # ------------------------------------------------------------------ predicting
    def _estimator(self, mi: int, f: int):
        key = (mi, f)
        if key not in self._estimators:
            from stacker.metamodels import get_family

            data, side = self._states[mi][f]
            self._estimators[key] = get_family(self.members_[mi].family).from_state(data, side)
        return self._estimators[key]

    def _member_proba(self, table: PredictionTable) -> np.ndarray:
        X = self.feature_spec_.transform(self._aggregate(table))
        out = np.zeros((len(self.members_), len(X), len(self.feature_spec_.classes)))
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            for mi in map(int, np.flatnonzero(self.weights_ > 0)):
                folds = [f for f in range(len(self._states[mi])) if self._states[mi][f] is not None]
                out[mi] = np.mean([self._estimator(mi, f).predict_proba(X) for f in folds], axis=0)
        return out

    def _blend_proba(self, table: PredictionTable) -> np.ndarray:
        p = np.einsum("mnk,m->nk", self._member_proba(table), self.weights_)
        return p / p.sum(axis=1, keepdims=True)

    def member_proba(self, X: Any) -> np.ndarray:
        """``(n_members, n_rows, n_classes)``: each member's fold-averaged probabilities (0 for unused members)."""
        return self._member_proba(self._table(X)[0])

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n_rows, n_classes)`` blend probabilities, columns in :attr:`classes_` order."""
        return self._blend_proba(self._table(X)[0])

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels."""
        codes = np.argmax(self.predict_proba(X), axis=1)
        return np.asarray(self.classes_)[codes]

    def transform(self, X: Any) -> Any:
        """Blend probabilities in the input's kind: a one-model table (model ``"blend"``) with the input's
        meta columns, a DataFrame of ``blend/<class>`` columns, or an ``(N, K)`` array."""
        table, form = self._table(X)
        aggregated = self._aggregate(table)
        p = self._blend_proba(aggregated)
        out = PredictionTable(
            aggregated.meta.copy(),
            p[:, None, :],
            self.feature_spec_.classes,
            ["blend"],
            source=table.source,
            validate=False,
        )
        return self._output(out, form, reduced=True)

    def fit_transform(self, X: Any, y: Any = None, *, groups: Any = None, sample_weight: Any = None) -> Any:
        """Fit, then return the level-2 out-of-fold probabilities (what a next step trains on)."""
        table, form, classes = self._fit_table(X, y)
        self._fit(table, groups, sample_weight)
        self.classes_ = classes
        return self._output(self.oof_, form, reduced=True)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Accuracy on ``X`` against ``y`` (default: the table's labels), as scikit-learn's classifiers."""
        from sklearn.metrics import accuracy_score

        if y is None:
            table = self._aggregate(self._table(X)[0])
            y_codes = self._check_labels(table)
            return float(
                accuracy_score(y_codes, np.argmax(self._blend_proba(table), axis=1), sample_weight=sample_weight)
            )
        return float(accuracy_score(np.asarray(y), self.predict(X), sample_weight=sample_weight))

    def evaluate(self, X: Any, y: Any = None) -> dict[str, Any]:
        """Accuracy, log loss and per-class accuracy on all, unaltered and manipulated rows of a labelled input."""
        table = self._table(X)[0]
        if y is not None:
            table = with_labels(
                table,
                labels_to_names(y, table, None if isinstance(X, (PredictionTable, pd.DataFrame)) else self.classes_),
            )
        aligned = self._aggregate(table)
        y_codes = self._check_labels(aligned)
        return metrics.score_split(y_codes, self._blend_proba(aligned), aligned.manip, self.feature_spec_.classes)

    # ------------------------------------------------------------------ persistence (stacker.bundle)
    def get_state(self, directory: Path) -> dict[str, Any]:
        from stacker.bundle import blend_state

        self._check_fitted("weights_")
        return blend_state(self, directory)

    @classmethod
    def from_state(cls, state: dict[str, Any], directory: Path) -> Blend:
        from stacker.bundle import blend_from_state

        return blend_from_state(cls, state, directory)

    def manifest_summary(self, state: dict[str, Any]) -> dict[str, Any]:
        from stacker.bundle import blend_summary

        return blend_summary(state)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a bundle directory (manifest + native member files); replaces an existing bundle atomically."""
        from stacker import bundle

        self._check_fitted("weights_")
        return bundle.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Blend:
        """Load a bundle written by :meth:`save` (or a one-step chain of a Blend), verifying every checksum."""
        from stacker import bundle
        from stacker.chain import Chain

        obj = bundle.load(path)
        kind = type(obj).kind
        if isinstance(obj, Chain) and len(obj) == 1:
            obj = obj[0]
        if not isinstance(obj, cls):
            raise BundleError(f"bundle {str(path)!r} holds a {kind}, not a Blend")
        return obj


class _ProgressBar:
    """``member-folds done / planned [elapsed, ETA]``, the plan and ETA from the planner's forecast."""

    def __init__(self, enabled: bool, planner: Planner) -> None:
        self.planner = planner
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            planned, eta = planner.forecast()
            self.bar = tqdm(
                total=planned,
                desc="blend",
                leave=False,
                bar_format="{desc}: {n}/{total} member-folds [{elapsed}{postfix}]",
            )
            self.bar.set_postfix_str(f"ETA {eta:.0f} s", refresh=False)

    def step(self, n_folds: int) -> None:
        if self.bar is None:
            return
        planned, eta = self.planner.forecast()
        self.bar.total = max(planned, self.bar.n + n_folds)
        self.bar.set_postfix_str(f"ETA {eta:.0f} s", refresh=False)
        self.bar.update(n_folds)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _grouped_folds(
    table: PredictionTable, y: np.ndarray, n_folds: int, seed: int, image: np.ndarray | None = None
) -> np.ndarray:
    from stacker.cv import grouped_folds

    try:
        return grouped_folds(y, table.ids if image is None else image, n_folds, seed, classes=table.classes)
    except LabelError as exc:
        raise LabelError(exc.reason, path=table.source, column=LABEL, rows=exc.rows) from None
