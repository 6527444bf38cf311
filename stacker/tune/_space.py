"""The search space of a study: what a trial may change in a base recipe, and the tuned settings.

From a base :class:`~stacker.recipe.Recipe` every family gets

* ``<family>.count``: an integer in ``[0, count]`` (``[0, max_count]`` when given;
  from 1 when the recipe has a single family);
* for each range parameter ``[low, high]``: ``<family>.<param>.center`` in the
  range (log scale for log ranges) and ``<family>.<param>.width`` in ``[0, 1]``;
  the trial's range is ``center +- width * (high - low) / 2`` clipped to the base
  range, so a trial can narrow a range down to a point or keep all of it;
* for each choice parameter: ``<family>.<param>``, one of the choices or ``*``
  (keep them all).

Fixed parameters stay fixed.  Then, for the whole blend:

* ``class_weight.<class>``: a log-uniform weight in ``[0.5, 2]`` per class
  (exported normalised to mean 1);
* ``tta_power``: the power-mean exponent of the TTA views in ``[0, 3]``, only
  when the table has several views per image;
* ``postprocess``: one of the post-processing choices available here.

:meth:`SearchSpace.describe` is a JSON-able canonical description; its hash,
together with the table's classes, is the study's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stacker.errors import ConfigError
from stacker.recipe import Range, parse_choices, parse_range

if TYPE_CHECKING:
    import optuna

    from stacker.recipe import Recipe

__all__ = ["SearchSpace", "TrialSettings", "CLASS_WEIGHT_RANGE", "TTA_POWER_RANGE", "KEEP_ALL"]

CLASS_WEIGHT_RANGE = (0.5, 2.0)
TTA_POWER_RANGE = (0.0, 3.0)
#: The choice value that keeps every choice of a choice parameter.
KEEP_ALL = "*"


@dataclass
class TrialSettings:
    """What one trial fits and scores: a recipe dict plus the blend-wide settings."""

    families: dict[str, dict[str, Any]]
    class_weight: dict[str, float] | None
    tta_power: float | None
    postprocess: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_members(self) -> int:
        return sum(int(body["count"]) for body in self.families.values())

    def recipe_dict(self, name: str, description: str = "") -> dict[str, Any]:
        """The recipe, as ``stacker fit --recipe`` reads it (see :class:`stacker.recipe.Recipe`)."""
        d: dict[str, Any] = {"name": name, "description": description}
        if self.class_weight is not None:
            d["class_weight"] = dict(self.class_weight)
        if self.tta_power is not None:
            d["tta_power"] = float(self.tta_power)
        d["postprocess"] = self.postprocess
        d["families"] = {f: dict(body) for f, body in self.families.items() if body["count"] > 0}
        return d


class SearchSpace:
    """The space a study searches, derived from a base recipe and the table.

    Parameters
    ----------
    recipe : Recipe
        The base recipe: its families, counts and ranges bound the search.
    classes : sequence of str
        The table's classes (one weight each).
    postprocess : sequence of str
        Post-processing choices; ``("none",)`` searches none.
    tta : bool
        Whether to search the TTA power-mean exponent.
    max_count : int, optional
        Upper bound of every family's count instead of its base count.
    class_weights : bool, default True
        Whether to search per-class weights.
    """

    def __init__(
        self,
        recipe: Recipe,
        classes: list[str] | tuple[str, ...],
        postprocess: tuple[str, ...] | list[str] = ("none",),
        *,
        tta: bool = False,
        max_count: int | None = None,
        class_weights: bool = True,
    ) -> None:
        self.recipe = recipe
        self.classes = tuple(classes)
        self.postprocess = tuple(postprocess)
        self.tta = bool(tta)
        self.max_count = max_count
        self.class_weights = bool(class_weights)
        if not self.postprocess:
            raise ConfigError("the post-processing choices are empty; give at least 'none'")
        if max_count is not None and int(max_count) < 1:
            raise ConfigError(f"max_count must be at least 1, got {max_count}")

    # ------------------------------------------------------------------ description
    def _count_high(self, count: int) -> int:
        return int(self.max_count) if self.max_count is not None else max(int(count), 1)

    @property
    def _count_low(self) -> int:
        # A lone family must keep a member; with several, a trial may drop any of them.
        return 1 if len(self.recipe.families) == 1 else 0

    def describe(self) -> dict[str, Any]:
        """Canonical JSON-able description: every parameter name with its distribution."""
        params: dict[str, Any] = {}
        for fam in self.recipe.families:
            params[f"{fam.family}.count"] = ["int", self._count_low, self._count_high(fam.count)]
            for name, spec in sorted(fam.params.items()):
                rng = parse_range(spec)
                if rng is not None:
                    if rng.low < rng.high:
                        params[f"{fam.family}.{name}.center"] = ["float", rng.low, rng.high, rng.log]
                        params[f"{fam.family}.{name}.width"] = ["float", 0.0, 1.0, False]
                    continue
                choices = parse_choices(spec)
                if choices is not None and len(choices) > 1:
                    params[f"{fam.family}.{name}"] = ["cat", [KEEP_ALL, *map(_jsonable_choice, choices)]]
                else:
                    params[f"{fam.family}.{name}"] = ["fixed", _jsonable_choice(spec)]
        if self.class_weights:
            for c in self.classes:
                params[f"class_weight.{c}"] = ["float", *CLASS_WEIGHT_RANGE, True]
        if self.tta:
            params["tta_power"] = ["float", *TTA_POWER_RANGE, False]
        params["postprocess"] = ["cat", list(self.postprocess)]
        return {"version": 1, "params": params}

    def fingerprint(self) -> str:
        """SHA-256 of :meth:`describe` (the space only, not the classes)."""
        text = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    # ------------------------------------------------------------------ sampling
    def suggest(self, trial: optuna.Trial) -> TrialSettings:
        """Draw a trial's settings (every parameter is suggested, so the space is static)."""
        families: dict[str, dict[str, Any]] = {}
        for fam in self.recipe.families:
            body: dict[str, Any] = {
                "count": trial.suggest_int(f"{fam.family}.count", self._count_low, self._count_high(fam.count))
            }
            for name, spec in fam.params.items():
                rng = parse_range(spec)
                if rng is not None:
                    body[name] = self._suggest_range(trial, f"{fam.family}.{name}", rng, spec)
                    continue
                choices = parse_choices(spec)
                if choices is not None and len(choices) > 1:
                    options = [KEEP_ALL, *map(_jsonable_choice, choices)]
                    pick = trial.suggest_categorical(f"{fam.family}.{name}", options)
                    body[name] = spec if pick == KEEP_ALL else choices[options.index(pick) - 1]
                else:
                    body[name] = spec
            families[fam.family] = body
        cw = None
        if self.class_weights:
            raw = {c: trial.suggest_float(f"class_weight.{c}", *CLASS_WEIGHT_RANGE, log=True) for c in self.classes}
            mean = sum(raw.values()) / len(raw)
            cw = {c: round(v / mean, 6) for c, v in raw.items()}
        power = trial.suggest_float("tta_power", *TTA_POWER_RANGE) if self.tta else None
        post = trial.suggest_categorical("postprocess", list(self.postprocess))
        return TrialSettings(families, cw, power, str(post), dict(trial.params))

    def settings_from_params(self, params: dict[str, Any]) -> TrialSettings:
        """Rebuild a finished trial's settings from its parameters (for the export)."""
        import optuna

        return self.suggest(optuna.trial.FixedTrial(params))  # type: ignore[arg-type]  # the same suggest_* API

    @staticmethod
    def _suggest_range(trial: optuna.Trial, name: str, rng: Range, spec: Any) -> Any:
        if rng.low >= rng.high:
            return spec
        center = trial.suggest_float(f"{name}.center", rng.low, rng.high, log=rng.log)
        width = trial.suggest_float(f"{name}.width", 0.0, 1.0)
        if rng.log:
            lo_t, hi_t, c_t = math.log(rng.low), math.log(rng.high), math.log(center)
        else:
            lo_t, hi_t, c_t = rng.low, rng.high, center
        half = width * (hi_t - lo_t) / 2
        lo, hi = max(lo_t, c_t - half), min(hi_t, c_t + half)
        if rng.log:
            lo, hi = math.exp(lo), math.exp(hi)
        lo, hi = max(rng.low, lo), min(rng.high, hi)  # exp(log(x)) may drift past the ends
        if rng.integer:
            lo, hi = int(round(lo)), int(round(hi))
            lo, hi = max(int(rng.low), min(lo, hi)), min(int(rng.high), max(lo, hi))
        else:
            lo, hi = float(f"{lo:.6g}"), float(f"{hi:.6g}")
            lo, hi = max(rng.low, min(lo, hi)), min(rng.high, max(lo, hi))
        if rng.form == "dict":
            out: dict[str, Any] = {"low": lo, "high": hi}
            if rng.log:
                out["log"] = True
            if rng.integer:
                out["int"] = True
            return out
        return [lo, hi]


def _jsonable_choice(v: Any) -> Any:
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    return json.dumps(v, sort_keys=True)
