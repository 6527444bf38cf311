"""stacker: level-2 stacking and post-processing of multi-class probability ensembles.

The public API is re-exported here from private-ish modules; see each module's
docstring for details.  Heavy optional parts (Keras members, Optuna tuning,
Dask) are imported lazily by the code that needs them.
"""

from stacker._version import __version__
from stacker.aggregate import aggregate_models, aggregate_views, power_mean
from stacker.errors import (
    BundleError,
    ConfigError,
    DuplicateKeyError,
    EmptyTableError,
    LabelError,
    MergeError,
    ProbabilityError,
    SchemaError,
    StackerError,
    TableError,
    TableReadError,
)
from stacker.merge import merge_tables
from stacker.table import PredictionTable, read_table, write_table

__all__ = [
    "__version__",
    "PredictionTable",
    "read_table",
    "write_table",
    "merge_tables",
    "aggregate_views",
    "aggregate_models",
    "power_mean",
    "StackerError",
    "TableError",
    "TableReadError",
    "SchemaError",
    "ProbabilityError",
    "DuplicateKeyError",
    "LabelError",
    "EmptyTableError",
    "MergeError",
    "BundleError",
    "ConfigError",
    "NotFittedError",
    "Chain",
    "load_chain",
    "HungarianEqualizer",
    "GreedyEqualizer",
    "SinkhornEqualizer",
    "PowerMean",
    "PriorShift",
    "TemperatureScaling",
    "solve_assignment",
    "greedy_assignment",
    "Blend",
    "Recipe",
    "get_recipe",
]

# The estimators pull in scikit-learn (~2 s); import them on first use, so that ``import stacker``
# and the table commands (inspect, merge, aggregate) stay light.
_LAZY = {
    "Blend": "stacker.blend",
    "Recipe": "stacker.recipe",
    "get_recipe": "stacker.recipe",
    "Chain": "stacker.chain",
    "load_chain": "stacker.chain",
    "HungarianEqualizer": "stacker.equalize",
    "GreedyEqualizer": "stacker.equalize",
    "greedy_assignment": "stacker.equalize",
    "solve_assignment": "stacker.equalize",
    "PowerMean": "stacker.transforms",
    "PriorShift": "stacker.transforms",
    "SinkhornEqualizer": "stacker.transforms",
    "TemperatureScaling": "stacker.transforms",
    "NotFittedError": "stacker.errors",
}


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stacker' has no attribute {name!r}")
