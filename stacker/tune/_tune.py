"""The study: open or create it, check it fits this table and space, run trials, export the best."""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stacker.errors import ConfigError, StudyError
from stacker.files import atomic_write_text
from stacker.table import PredictionTable
from stacker.tune._scoring import balanced_resamples, postprocess_choices, resample_strata, score_oof
from stacker.tune._space import SearchSpace, TrialSettings
from stacker.tune._storage import HEARTBEAT_INTERVAL, describe_storage, open_storage

if TYPE_CHECKING:
    import optuna

    from stacker.recipe import Recipe

__all__ = ["tune", "open_study", "export_best", "best_recipe_dict", "DEFAULT_STUDY", "ATTR"]

#: Study name used when none is given.
DEFAULT_STUDY = "stacker-tune"
#: Key of the study user attribute holding the fingerprint.
ATTR = "stacker"
#: Version of the objective: bump when the score changes meaning, so old studies are refused.
OBJECTIVE_VERSION = 1

_log = logging.getLogger("stacker.tune")


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _has_views(table: PredictionTable) -> bool:
    views = table.views
    return views is not None and len(set(map(str, views))) > 1


def _fingerprint(
    space: SearchSpace, classes: Sequence[str], n_folds: int, seed: int, n_resamples: int, resample_size: int | None
) -> dict[str, Any]:
    return {
        "objective_version": OBJECTIVE_VERSION,
        "classes": list(classes),
        "space_sha256": space.fingerprint(),
        "space": space.describe()["params"],
        "cv": {
            "n_folds": int(n_folds),
            "seed": int(seed),
            "n_resamples": int(n_resamples),
            "resample_size": resample_size,
        },
    }


def _check_fingerprint(name: str, have: dict[str, Any], want: dict[str, Any]) -> None:
    if have.get("objective_version") != want["objective_version"]:
        raise StudyError(
            f"study {name!r} was made by another version of stacker's objective "
            f"({have.get('objective_version')!r}, this one is {want['objective_version']}); use a new --study name"
        )
    if have.get("classes") != want["classes"]:
        raise StudyError(
            f"study {name!r} was created for a table with classes {have.get('classes')}; this table has "
            f"{want['classes']}. Scores on other classes are not comparable: use a new --study name"
        )
    if have.get("space_sha256") != want["space_sha256"]:
        old, new = have.get("space", {}), want["space"]
        added = sorted(set(new) - set(old))
        removed = sorted(set(old) - set(new))
        changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
        parts = [
            f"{label}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
            for label, keys in (("new", added), ("gone", removed), ("changed", changed))
            if keys
        ]
        raise StudyError(
            f"study {name!r} was created with a different search space ({'; '.join(parts) or 'different'}); "
            "reuse the same recipe and options, or use a new --study name"
        )
    if have.get("cv") != want["cv"]:
        raise StudyError(
            f"study {name!r} scores trials with {have.get('cv')}; this run asks for {want['cv']}. "
            "Scores are only comparable with the same folds and resamples: use a new --study name"
        )


def open_study(
    storage: str | os.PathLike[str] | None,
    study_name: str,
    fingerprint: dict[str, Any] | None = None,
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL,
    create: bool = True,
) -> optuna.Study:
    """Load ``study_name`` from ``storage`` (creating it if allowed) and check its fingerprint.

    Raises
    ------
    StudyError
        The storage is unreachable, the study is missing (``create=False``),
        or it was made for another table or search space.
    """
    import optuna

    _quiet_optuna()
    store = open_storage(storage, heartbeat_interval=heartbeat_interval)
    shown = describe_storage(storage) if storage != ":memory:" else ":memory:"
    try:
        if create:
            study = optuna.create_study(
                storage=store,
                study_name=study_name,
                direction="maximize",
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
        else:
            study = optuna.load_study(storage=store, study_name=study_name, sampler=sampler, pruner=pruner)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(store)]
        raise StudyError(f"storage {shown} has no study {study_name!r}; it has {names}") from None
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise StudyError(f"study {study_name!r} in {shown} minimises; it was not made by stacker tune")
    if fingerprint is not None:
        have = study.user_attrs.get(ATTR)
        if have is None:
            if any(t.state.is_finished() for t in study.get_trials(deepcopy=False)):
                raise StudyError(f"study {study_name!r} in {shown} has trials but was not made by stacker tune")
            study.set_user_attr(ATTR, fingerprint)
        else:
            _check_fingerprint(study_name, have, fingerprint)
    return study


def _coerce_table(table: PredictionTable | str | os.PathLike[str]) -> PredictionTable:
    if isinstance(table, PredictionTable):
        return table
    from stacker.table import read_table

    return read_table(table)


class _Objective:
    """Score one trial: fit a Blend out-of-fold, post-process balanced resamples of its OOF rows."""

    def __init__(
        self,
        table: PredictionTable,
        space: SearchSpace,
        *,
        n_folds: int,
        seed: int,
        n_resamples: int,
        resample_size: int | None,
        blend_kwargs: dict[str, Any],
    ) -> None:
        self.table = table
        self.space = space
        self.n_folds = n_folds
        self.seed = seed
        self.n_resamples = n_resamples
        self.resample_size = resample_size
        self.blend_kwargs = blend_kwargs
        self._resamples: dict[int, list[np.ndarray]] = {}

    def _rows_table(self, settings: TrialSettings) -> PredictionTable:
        if settings.tta_power is None:
            return self.table
        from stacker.aggregate import aggregate_views

        return aggregate_views(self.table, settings.tta_power)

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        from stacker.blend import Blend
        from stacker.recipe import Recipe

        t0 = time.perf_counter()
        settings = self.space.suggest(trial)
        recipe_dict = settings.recipe_dict(f"tuned-trial-{trial.number}")
        trial.set_user_attr("recipe", recipe_dict)
        if settings.n_members == 0:
            raise optuna.TrialPruned("every family count is 0: no members to blend")
        table = self._rows_table(settings)
        recipe = Recipe.from_dict({"name": recipe_dict["name"], "families": recipe_dict["families"]})
        running: list[float] = []

        def on_fold(fold: int, scores: dict[str, float]) -> None:
            # Running mean accuracy of the equal-weight blend over the folds done: comparable across trials.
            running.append(float(scores["accuracy"]))
            trial.report(float(np.mean(running)), fold)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {fold} (running accuracy {np.mean(running):.4f})")

        blend = Blend(
            recipe=recipe,
            class_weight=settings.class_weight,
            n_folds=self.n_folds,
            seed=self.seed,
            on_fold=on_fold,
            **self.blend_kwargs,
        )
        with warnings.catch_warnings():
            # Pruning abandons the fold's remaining fits on purpose; joblib warns about each one.
            warnings.filterwarnings("ignore", message=".*tasks which were still being processed", category=UserWarning)
            blend.fit(table)
        oof = blend.oof_
        key = len(table)
        if key not in self._resamples:
            # Labels (and the deployed grouping) and seed only: every trial and worker scores the same resamples.
            self._resamples[key] = balanced_resamples(
                oof.y, self.n_resamples, self.seed, per_class=self.resample_size, strata=resample_strata(oof)
            )
        value = score_oof(oof, settings.postprocess, self._resamples[key])
        blend_scores = blend.scores_["blend"]["all"]
        trial.set_user_attr("oof_accuracy", float(blend_scores["accuracy"]))
        trial.set_user_attr("oof_log_loss", float(blend_scores["log_loss"]))
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
        if not math.isfinite(value):
            raise optuna.TrialPruned("the score is not finite")
        return value


def tune(
    table: PredictionTable | str | os.PathLike[str],
    *,
    n_trials: int | None = 20,
    storage: str | os.PathLike[str] | None = None,
    study_name: str = DEFAULT_STUDY,
    recipe: Recipe | str | os.PathLike[str] | None = None,
    n_folds: int = 5,
    seed: int = 0,
    postprocess: Sequence[str] | None = None,
    max_count: int | None = None,
    class_weights: bool = True,
    n_resamples: int = 10,
    resample_size: int | None = None,
    timeout: float | None = None,
    max_trials: int | None = None,
    combine: str = "weights",
    features: str = "log",
    n_jobs: int | None = -1,
    scheduler: str | None = None,
    trial_time_limit: float | None = None,
    prune: bool = True,
    sampler_seed: int | None = None,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
) -> optuna.Study:
    """Tune a Blend's recipe, class weights, TTA power and post-processing on a labelled holdout.

    Every trial fits a :class:`~stacker.blend.Blend` with grouped stratified
    ``n_folds``-fold cross-validation and is scored on its out-of-fold
    predictions only: the post-processing is applied to ``n_resamples``
    class-balanced resamples of the out-of-fold rows (the same resamples for
    every trial), and the score is the challenge's (accuracy, 0.7/0.3-weighted
    by manipulation when the table has a ``manip`` column).  Each fold reports
    the running out-of-fold accuracy, so the median pruner stops trials that are
    behind after a fold.

    Parameters
    ----------
    table : PredictionTable or path
        The labelled holdout.
    n_trials : int or None, default 20
        Trials this call runs (None: until ``timeout``/``max_trials``).  Several
        processes on one study each run their own ``n_trials``.
    storage : str or path, optional
        Study storage: a SQLite path or URL (default ``stacker-tune.db``), a
        ``postgresql://`` URL, ``journal:PATH`` or ``":memory:"``.
    study_name : str, default "stacker-tune"
        An existing study of that name is resumed; it must have been made for
        the same classes, search space and cross-validation.
    recipe : Recipe, name or path, optional
        Base recipe bounding the search (default: the Blend's default recipe).
    n_folds, seed : int
        Cross-validation folds and the seed of folds, members and resamples.
    postprocess : sequence of str, optional
        Choices among ``"none", "hungarian", "greedy", "sinkhorn"`` (default:
        every one available here).
    max_count : int, optional
        Upper bound of every family's member count (default: its base count).
    class_weights : bool, default True
        Search per-class weights.
    n_resamples, resample_size : int
        Balanced resamples of the OOF rows and rows per class in each
        (default: half the smallest class).
    timeout : float, optional
        Stop starting trials after this many seconds.
    max_trials : int, optional
        Stop once the study (all workers together) has this many finished trials.
    combine, features, n_jobs, scheduler
        Passed to :class:`~stacker.blend.Blend`.
    trial_time_limit : float, optional
        Seconds for each trial's Blend fit (its ``time_limit``); None: no budget.
        Under a budget a trial's folds are scored only once its members are
        decided, so pruning acts later.
    prune : bool, default True
        Prune trials behind the median after a fold.
    sampler_seed : int, optional
        Seed of the TPE sampler; default unseeded, so parallel workers propose
        different trials.
    heartbeat_interval : int or None
        Heartbeat of running trials in RDB storages: a trial of a killed process
        is failed after two intervals and retried once.
    callbacks : sequence
        Optuna trial callbacks.

    Returns
    -------
    optuna.Study
    """
    import optuna

    from stacker.recipe import Recipe

    _quiet_optuna()
    if n_trials is not None and int(n_trials) < 1:
        raise ConfigError(f"n_trials must be at least 1, got {n_trials}")
    if max_trials is not None and int(max_trials) < 1:
        raise ConfigError(f"max_trials must be at least 1, got {max_trials}")
    if int(n_resamples) < 1:
        raise ConfigError(f"n_resamples must be at least 1, got {n_resamples}")
    from stacker.planner import check_time_limit

    trial_limit = check_time_limit(trial_time_limit, "trial_time_limit")
    base = Recipe.coerce(recipe)
    choices = postprocess_choices(postprocess)
    # Check the storage before reading a table file: a wrong URL should fail within seconds.
    if not isinstance(table, PredictionTable) and (storage is None or str(storage) != ":memory:"):
        open_storage(storage, heartbeat_interval=None)
    data = _coerce_table(table)
    if not data.has_labels:
        from stacker.errors import LabelError

        raise LabelError("tuning needs a labelled holdout; the table has no labels", path=data.source, column="label")
    space = SearchSpace(
        base, data.classes, choices, tta=_has_views(data), max_count=max_count, class_weights=class_weights
    )
    fp = _fingerprint(space, data.classes, n_folds, seed, n_resamples, resample_size)
    sampler = optuna.samplers.TPESampler(seed=sampler_seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1) if prune else optuna.pruners.NopPruner()
    if storage is not None and str(storage) == ":memory:":
        study = optuna.create_study(study_name=study_name, direction="maximize", sampler=sampler, pruner=pruner)
        study.set_user_attr(ATTR, fp)
    else:
        study = open_study(
            storage, study_name, fp, sampler=sampler, pruner=pruner, heartbeat_interval=heartbeat_interval
        )
    objective = _Objective(
        data,
        space,
        n_folds=n_folds,
        seed=seed,
        n_resamples=n_resamples,
        resample_size=resample_size,
        blend_kwargs={
            "combine": combine,
            "features": features,
            "n_jobs": n_jobs,
            "scheduler": scheduler,
            "time_limit": trial_limit,
        },
    )
    cbs = list(callbacks)
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    if max_trials is not None:
        if len(study.get_trials(deepcopy=False, states=done)) >= int(max_trials):
            return study
        cbs.append(optuna.study.MaxTrialsCallback(int(max_trials), states=done))
    # Failures that are bad input (StackerError) stop the study; pruning does not.
    study.optimize(objective, n_trials=n_trials, timeout=timeout, callbacks=cbs, catch=(), gc_after_trial=False)
    return study


def best_recipe_dict(study: optuna.Study) -> dict[str, Any]:
    """The recipe of the study's best trial, as ``stacker fit --recipe`` reads it."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise StudyError(f"study {study.study_name!r} has no finished trial to export yet")
    best = study.best_trial
    recipe = best.user_attrs.get("recipe")
    if not isinstance(recipe, dict):
        raise StudyError(f"trial {best.number} of study {study.study_name!r} has no recipe; not a stacker study")
    recipe = json.loads(json.dumps(recipe))
    recipe["name"] = f"{study.study_name}-best"
    recipe["description"] = (
        f"Tuned by stacker tune: trial {best.number} of study {study.study_name!r} "
        f"({len(complete)} complete trials), out-of-fold score {best.value:.5f}."
    )
    return recipe


def export_best(study: optuna.Study, path: str | os.PathLike[str]) -> Path:
    """Write the best trial's recipe as TOML at ``path`` (atomically); checked to load as a Recipe."""
    import tomli_w

    from stacker.recipe import Recipe

    d = best_recipe_dict(study)
    Recipe.from_dict(d, source=str(path))  # what fit --recipe will do: refuse now rather than later
    path = Path(path)
    atomic_write_text(path, tomli_w.dumps(d))
    return path
