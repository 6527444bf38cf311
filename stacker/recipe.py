"""Recipes: which meta-models a Blend trains, how many of each, and their hyperparameter ranges.

A recipe lists *families* (``xgboost``, ``lightgbm``, ``keras``, ``logistic``,
``pool``, ``selection``), each with a ``count`` and a table of parameters.  Each
member draws its own parameters from the ranges with a generator seeded by the
Blend's seed and the member's position, so the same seed gives the same members.

A parameter is written as

* a scalar: fixed, e.g. ``n_estimators = 1500``;
* ``[low, high]`` of two numbers: uniform; integers when both ends are integers,
  e.g. ``max_depth = [1, 2]``;
* ``{low = .., high = .., log = true, int = true}``: explicit range, log-uniform
  and/or integer;
* ``{choices = [...]}`` or a list that is not two numbers, e.g.
  ``optimizer = ["sgd", "adam"]``: one of the choices, uniformly.

For Keras members ``n_layers`` and ``units`` expand into
``hidden_layer_sizes`` (one width drawn per layer).

TOML form (YAML is the same structure)::

    name = "fast"
    description = "..."
    [families.xgboost]
    count = 2
    max_depth = [1, 2]
    learning_rate = [0.1, 0.3]

Shipped recipes are TOML files in ``stacker/recipes/``; :func:`get_recipe`
loads them by name and :func:`list_recipes` names them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from stacker.errors import ConfigError
from stacker.postprocess import check_postprocess

__all__ = ["Recipe", "FamilySpec", "MemberSpec", "get_recipe", "list_recipes", "DEFAULT_RECIPE", "sample_value"]

#: Name of the recipe ``Blend()`` uses when none is given.
DEFAULT_RECIPE = "default"

_RESERVED = {"count"}


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Range:
    """A numeric parameter range of a recipe (the one parser: recipes and the tuner's search space)."""

    low: float
    high: float
    log: bool
    integer: bool
    form: str  # "list" ([low, high]) or "dict" ({low, high, log, int})


def parse_range(spec: Any) -> Range | None:
    """The :class:`Range` of ``[low, high]`` or ``{low, high, log, int}``; None for choices and constants."""
    if isinstance(spec, dict) and "low" in spec and "high" in spec:
        return Range(float(spec["low"]), float(spec["high"]), bool(spec.get("log")), bool(spec.get("int")), "dict")
    if isinstance(spec, list) and len(spec) == 2 and all(_is_num(v) for v in spec):
        return Range(float(spec[0]), float(spec[1]), False, all(isinstance(v, int) for v in spec), "list")
    return None


def parse_choices(spec: Any) -> list[Any] | None:
    """The choices of ``{choices = [...]}`` or a list that is not a range; None otherwise."""
    if isinstance(spec, dict) and "choices" in spec:
        return list(spec["choices"])
    if isinstance(spec, list) and parse_range(spec) is None:
        return list(spec)
    return None


#: Parameters the Blend sets itself, per member: a recipe does not choose them.
_SET_BY_BLEND = frozenset({"random_state", "n_jobs", "device", "layout", "input"})


def _parameters(family: str) -> dict[str, Any]:
    """The parameters a recipe may give a family, with their defaults: its estimator's ``__init__``'s, less the
    Blend's own, plus Keras's shorthands (no default)."""
    import importlib
    import inspect

    from stacker.metamodels import FAMILIES

    module, name = FAMILIES[family]  # the module only: Keras itself is not imported here
    init = inspect.signature(getattr(importlib.import_module(module), name).__init__).parameters
    params = {k: p.default for k, p in init.items() if k != "self" and p.kind != p.VAR_KEYWORD}
    params = {k: v for k, v in params.items() if k not in _SET_BY_BLEND}
    return params | ({"n_layers": None, "units": None} if family == "keras" else {})


def _check_number(family: str, name: str, spec: Any, default: Any) -> None:
    """A parameter whose default is a number takes numbers (else the fit fails in a worker, far from the recipe)."""
    if not _is_num(default):
        return
    if isinstance(spec, dict) and "choices" not in spec:
        return  # a {low, high} range: _check_spec wants finite numbers
    values = (
        spec["choices"] if isinstance(spec, dict) and "choices" in spec else spec if isinstance(spec, list) else [spec]
    )
    bad = [v for v in values if not _is_num(v)]
    if bad:
        raise ConfigError(f"recipe family {family!r}, parameter {name!r}: expects a number, got {bad[0]!r}")


def _check_spec(family: str, name: str, spec: Any) -> None:
    where = f"recipe family {family!r}, parameter {name!r}"
    if isinstance(spec, dict):
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise ConfigError(f"{where}: 'choices' must be a non-empty list")
            return
        if set(spec) - {"low", "high", "log", "int"} or "low" not in spec or "high" not in spec:
            raise ConfigError(f"{where}: a range is {{low, high[, log][, int]}} or {{choices = [...]}}, got {spec}")
        lo, hi = spec["low"], spec["high"]
        if not (_is_num(lo) and _is_num(hi)) or not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
            raise ConfigError(f"{where}: needs finite numbers low <= high, got {lo!r}, {hi!r}")
        if spec.get("log") and lo <= 0:
            raise ConfigError(f"{where}: a log range needs low > 0, got {lo}")
    elif isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: empty list")
        rng = parse_range(spec)
        if rng is not None and rng.low > rng.high:
            raise ConfigError(f"{where}: range [low, high] has low > high: {spec}")


def sample_value(spec: Any, rng: np.random.Generator) -> Any:
    """One draw from a parameter spec (see the module docstring)."""
    r = parse_range(spec)
    if r is not None:
        lo, hi = r.low, r.high
        if r.form == "list":
            return int(rng.integers(int(lo), int(hi) + 1)) if r.integer else float(rng.uniform(lo, hi))
        as_int = r.integer
        if r.log:
            v = float(np.exp(rng.uniform(np.log(lo), np.log(hi + (1 if as_int else 0) - 1e-9 * as_int))))
        else:
            v = float(rng.uniform(lo, hi + (1 if as_int else 0)))
        return int(min(np.floor(v), hi)) if as_int else v
    choices = parse_choices(spec)
    if choices is not None:
        return choices[int(rng.integers(len(choices)))]
    return spec


@dataclass
class FamilySpec:
    """One family of a recipe: ``count`` members with parameters drawn from ``params``."""

    family: str
    count: int
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, **self.params}


@dataclass(frozen=True)
class MemberSpec:
    """One sampled member: a name, its family, concrete parameters and a seed."""

    name: str
    family: str
    params: dict[str, Any]
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "params": self.params, "seed": self.seed}


def _expand_keras(params: dict[str, Any], rng: np.random.Generator, specs: dict[str, Any]) -> dict[str, Any]:
    if "n_layers" in params or "units" in specs:
        n_layers = int(params.pop("n_layers", 1))
        params.pop("units", None)
        unit_spec = specs.get("units", 64)
        params["hidden_layer_sizes"] = [int(sample_value(unit_spec, rng)) for _ in range(n_layers)]
    return params


@dataclass
class Recipe:
    """A named list of meta-model families with counts and hyperparameter ranges.

    Build one with :meth:`from_dict`, :meth:`from_file` (TOML or YAML) or
    :func:`get_recipe`; :meth:`sample` draws the concrete members.
    """

    name: str
    families: list[FamilySpec]
    description: str = ""
    #: Blend-wide settings a tuned recipe carries (``stacker tune`` writes them): per-class
    #: weights (the Blend's default ``class_weight``), the TTA power-mean exponent and the
    #: post-processing choice; and the time budget of a fit.  None: not set.
    class_weight: dict[str, float] | None = None
    tta_power: float | None = None
    postprocess: str | None = None
    #: Seconds for a whole Blend fit (:mod:`stacker.planner`); None: no budget.
    time_limit: float | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str | None = None) -> Recipe:
        from stacker.metamodels import FAMILIES

        where = f"recipe {source!r}" if source else "recipe"
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a table/mapping, got {type(d).__name__}")
        fams = d.get("families")
        if not isinstance(fams, dict) or not fams:
            raise ConfigError(f"{where}: needs a non-empty 'families' table, e.g. [families.xgboost] count = 20")
        unknown = set(d) - {"name", "description", "families", *_SETTINGS}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
        settings = _check_settings(d, where)
        out = []
        for fam, body in fams.items():
            if fam not in FAMILIES:
                raise ConfigError(f"{where}: unknown family {fam!r}; known: {sorted(FAMILIES)}")
            if not isinstance(body, dict):
                raise ConfigError(f"{where}: family {fam!r} must be a table")
            body = dict(body)
            count = body.pop("count", 1)
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ConfigError(f"{where}: family {fam!r} count must be a non-negative integer, got {count!r}")
            allowed = _parameters(fam)
            typos = sorted(set(body) - allowed.keys())
            if typos:
                raise ConfigError(
                    f"{where}: family {fam!r} has no parameter {', '.join(map(repr, typos))}; its parameters: "
                    f"{', '.join(sorted(allowed))}"
                )
            for k, v in body.items():
                _check_spec(fam, k, v)
                _check_number(fam, k, v, allowed[k])
            if count:
                out.append(FamilySpec(fam, count, body))
        if not out:
            raise ConfigError(f"{where}: every family has count 0")
        return cls(str(d.get("name", source or "custom")), out, str(d.get("description", "")), **settings)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Recipe:
        """Read a recipe from a ``.toml`` or ``.yaml``/``.yml`` file."""
        from stacker.config import load_config

        path = Path(path)
        data = load_config(path, "recipe file")
        data.setdefault("name", path.stem)
        return cls.from_dict(data, source=str(path))

    @classmethod
    def default(cls) -> Recipe:
        return get_recipe(DEFAULT_RECIPE)

    @classmethod
    def coerce(cls, recipe: Recipe | str | os.PathLike[str] | dict[str, Any] | None) -> Recipe:
        """A Recipe from a Recipe, a shipped name, a file path, a dict, or None (the default)."""
        if recipe is None:
            return cls.default()
        if isinstance(recipe, Recipe):
            return recipe
        if isinstance(recipe, dict):
            return cls.from_dict(recipe)
        s = str(recipe)
        if s in list_recipes():
            return get_recipe(s)
        if Path(s).suffix.lower() in (".toml", ".yaml", ".yml") or Path(s).exists():
            return cls.from_file(s)
        raise ConfigError(f"unknown recipe {s!r}: not a shipped recipe ({list_recipes()}) nor a file")

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "description": self.description}
        for key in _SETTINGS:
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        d["families"] = {f.family: f.to_dict() for f in self.families}
        return d

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    @property
    def n_members(self) -> int:
        return sum(f.count for f in self.families)

    def sample(self, seed: int = 0) -> list[MemberSpec]:
        """The concrete members, drawn from ``seed``.

        Every (family, member, parameter) has its own random stream keyed by
        names, not positions, so reordering keys or families (e.g. through a TOML
        round trip) or adding a family leaves the other members unchanged.
        """
        members = []
        for fam in self.families:
            for i in range(fam.count):

                def rng(key: str, _f=fam.family, _i=i) -> np.random.Generator:
                    return np.random.default_rng([int(seed) % (2**32), _crc(_f), _i, _crc(key)])

                params = {k: sample_value(v, rng(k)) for k, v in fam.params.items()}
                if fam.family == "keras":
                    params = _expand_keras(params, rng("units"), fam.params)
                member_seed = int(rng("__seed__").integers(2**31 - 1))
                members.append(MemberSpec(f"{fam.family}-{i:02d}", fam.family, params, member_seed))
        return members


def _crc(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())


_SETTINGS = ("class_weight", "tta_power", "postprocess", "time_limit")


def _check_settings(d: dict[str, Any], where: str) -> dict[str, Any]:
    """The optional blend-wide settings of a (tuned) recipe, checked."""
    out: dict[str, Any] = {}
    cw = d.get("class_weight")
    if cw is not None:
        if not isinstance(cw, dict) or not all(_is_num(v) and v > 0 and np.isfinite(v) for v in cw.values()):
            raise ConfigError(f"{where}: class_weight must map class names to positive numbers, got {cw!r}")
        out["class_weight"] = {str(k): float(v) for k, v in cw.items()}
    p = d.get("tta_power")
    if p is not None:
        if not _is_num(p) or not np.isfinite(p):
            raise ConfigError(f"{where}: tta_power must be a finite number, got {p!r}")
        out["tta_power"] = float(p)
    if d.get("time_limit") is not None:
        from stacker.planner import check_time_limit

        out["time_limit"] = check_time_limit(d["time_limit"], f"{where}: time_limit")
    post = d.get("postprocess")
    if post is not None:
        out["postprocess"] = check_postprocess(post, f"{where}: postprocess")
    return out


def _recipe_dir():
    return resources.files("stacker") / "recipes"


def list_recipes() -> list[str]:
    """Names of the shipped recipes."""
    return sorted(p.name[:-5] for p in _recipe_dir().iterdir() if p.name.endswith(".toml"))


def get_recipe(name: str) -> Recipe:
    """A shipped recipe by name (see :func:`list_recipes`)."""
    path = _recipe_dir() / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"no shipped recipe {name!r}; shipped: {list_recipes()}")
    with resources.as_file(path) as p:
        return Recipe.from_file(p)
