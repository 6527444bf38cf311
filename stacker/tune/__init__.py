"""Tuning a Blend with Optuna: recipe, class weights, TTA power and post-processing.

``tune(table, n_trials=..., storage=..., study_name=...)`` runs trials of an
Optuna study (resuming it if it exists) and returns the study;
:func:`export_best` writes the best trial as a recipe TOML that
``stacker fit --recipe`` reads unchanged.  Studies live in SQLite by default,
or in PostgreSQL / a journal file shared by many workers (:mod:`._storage`).
Optuna is imported only when these functions run.
"""

from stacker.tune._scoring import (
    POSTPROCESS,
    available_postprocess,
    balanced_resamples,
    challenge_score,
    postprocess_choices,
)
from stacker.tune._space import SearchSpace, TrialSettings
from stacker.tune._storage import DEFAULT_STORAGE, describe_storage, open_storage, resolve_storage
from stacker.tune._tune import DEFAULT_STUDY, best_recipe_dict, export_best, open_study, tune

__all__ = [
    "tune",
    "export_best",
    "best_recipe_dict",
    "open_study",
    "open_storage",
    "resolve_storage",
    "describe_storage",
    "SearchSpace",
    "TrialSettings",
    "POSTPROCESS",
    "available_postprocess",
    "postprocess_choices",
    "balanced_resamples",
    "challenge_score",
    "DEFAULT_STORAGE",
    "DEFAULT_STUDY",
]
