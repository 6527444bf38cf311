"""Recipes: parsing, sampling from a seed, shipped recipes, files."""

from __future__ import annotations

import numpy as np
import pytest

from stacker.errors import ConfigError
from stacker.recipe import DEFAULT_RECIPE, Recipe, get_recipe, list_recipes, sample_value


def test_shipped_recipes_load_and_the_1st_place_one_has_52_members():
    names = list_recipes()
    assert {"cmi-1st-place", "fast", DEFAULT_RECIPE} <= set(names)
    r = get_recipe("cmi-1st-place")
    counts = {f.family: f.count for f in r.families}
    assert counts == {"xgboost": 20, "lightgbm": 20, "keras": 12}
    members = r.sample(0)
    assert len(members) == 52
    for m in members:
        p = m.params
        if m.family == "xgboost":
            assert p["max_depth"] in (1, 2) and 0.1 <= p["learning_rate"] <= 0.3
            assert p["n_estimators"] == 1500 and p["early_stopping_rounds"] == 25
        elif m.family == "lightgbm":
            assert 31 <= p["num_leaves"] <= 63 and 0.01 <= p["learning_rate"] <= 0.05
            assert 128 <= p["min_data_in_leaf"] <= 256
        else:
            assert 1 <= len(p["hidden_layer_sizes"]) <= 2
            assert all(32 <= u <= 512 for u in p["hidden_layer_sizes"])
            assert p["optimizer"] in ("sgd", "adam") and 0 <= p["dropout"] <= 0.5
    for name in names:
        assert get_recipe(name).n_members > 0


def test_default_draws_its_trees_from_within_the_1st_place_ranges():
    """The default's 40 tree members are 1st-place members from a cheaper part of its ranges."""
    first = {f.family: f for f in get_recipe("cmi-1st-place").families}
    default = get_recipe(DEFAULT_RECIPE)
    counts = {f.family: f.count for f in default.families}
    assert counts == {"xgboost": 20, "lightgbm": 20, "keras": 12, "pool": 1, "selection": 1}
    for fam in default.families:
        if fam.family not in ("xgboost", "lightgbm"):
            continue
        for name, spec in fam.params.items():
            ref = first[fam.family].params.get(name)
            if isinstance(spec, list) and isinstance(ref, list):
                assert ref[0] <= spec[0] <= spec[1] <= ref[1], (fam.family, name, spec, ref)
            elif ref is not None:
                assert spec == ref, (fam.family, name)
    lr = [m.params["learning_rate"] for m in default.sample(0) if m.family == "lightgbm"]
    assert 0.03 <= min(lr) and max(lr) <= 0.05


def test_sampling_is_seeded_and_varies():
    r = get_recipe("cmi-1st-place")
    a, b, c = r.sample(1), r.sample(1), r.sample(2)
    assert a == b
    assert a != c
    depths = {m.params["max_depth"] for m in a if m.family == "xgboost"}
    assert depths == {1, 2}
    assert len({m.seed for m in a}) == len(a)


def test_sample_value_kinds():
    rng = np.random.default_rng(0)
    ints = {sample_value([1, 3], rng) for _ in range(200)}
    assert ints == {1, 2, 3}
    floats = [sample_value([0.1, 0.2], rng) for _ in range(50)]
    assert all(0.1 <= v <= 0.2 for v in floats) and len(set(floats)) == 50
    logs = [sample_value({"low": 1e-4, "high": 1e-1, "log": True}, rng) for _ in range(500)]
    assert min(logs) >= 1e-4 and max(logs) <= 1e-1 and np.median(logs) < 0.01
    li = {sample_value({"low": 32, "high": 40, "int": True, "log": True}, rng) for _ in range(500)}
    assert li <= set(range(32, 41)) and {32, 40} <= li
    assert sample_value({"choices": [1, 2]}, rng) in (1, 2)
    assert sample_value(["a", "b", "c"], rng) in ("a", "b", "c")
    assert sample_value(7, rng) == 7


def test_toml_round_trip_and_yaml(tmp_path):
    r = get_recipe("cmi-1st-place")
    path = tmp_path / "r.toml"
    path.write_text(r.to_toml())
    back = Recipe.from_file(path)
    assert back.to_dict() == r.to_dict()
    assert back.sample(3) == r.sample(3)
    y = tmp_path / "mine.yaml"
    y.write_text("families:\n  pool: {count: 2}\n  xgboost:\n    count: 1\n    max_depth: [1, 2]\n")
    ry = Recipe.from_file(y)
    assert ry.name == "mine" and ry.n_members == 3
    assert Recipe.coerce(str(y)).to_dict() == ry.to_dict()
    assert Recipe.coerce(None).name == DEFAULT_RECIPE


@pytest.mark.parametrize(
    "body, match",
    [
        ({"families": {}}, "non-empty"),
        ({"families": {"catboost": {"count": 1}}}, "unknown family"),
        ({"families": {"xgboost": {"count": -1}}}, "non-negative"),
        ({"families": {"xgboost": {"count": 0}}}, "count 0"),
        ({"families": {"xgboost": {"count": 1, "max_depth": [3, 1]}}}, "low > high"),
        ({"families": {"xgboost": {"count": 1, "learning_rate": {"low": 0, "high": 1, "log": True}}}}, "low > 0"),
        ({"families": {"xgboost": {"count": 1, "learning_rate": {"lo": 0}}}}, "range"),
        ({"families": {"xgboost": {"count": 1, "max_dept": 3}}}, "family 'xgboost' has no parameter 'max_dept'; its"),
        ({"families": {"lightgbm": {"count": 1, "random_state": 3}}}, "has no parameter 'random_state'"),
        ({"families": {"pool": {"count": 1, "tta_power": 0}}}, "family 'pool' has no parameter 'tta_power'"),
        (
            {"families": {"xgboost": {"count": 1, "learning_rate": "fast"}}},
            "'learning_rate': expects a number, got 'fast'",
        ),
        ({"families": {"keras": {"count": 1, "dropout": {"choices": [0.1, "x"]}}}}, "expects a number, got 'x'"),
        ({"families": {"xgboost": {"count": 1, "max_depth": True}}}, "expects a number, got True"),
        ({"families": {"pool": {"count": 1}}, "extra": 1}, "unknown keys"),
    ],
)
def test_bad_recipes_are_config_errors(body, match):
    with pytest.raises(ConfigError, match=match):
        Recipe.from_dict(body)


def test_bad_files_and_names(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Recipe.from_file(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("families = [")
    with pytest.raises(ConfigError, match="cannot be parsed"):
        Recipe.from_file(bad)
    with pytest.raises(ConfigError, match="no shipped recipe"):
        get_recipe("nonesuch")
    with pytest.raises(ConfigError, match="unknown recipe"):
        Recipe.coerce("nonesuch")
