"""Chains of transforms: fit on a holdout, apply to a test table, save/load with checks."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from stacker.base import Transform, register
from stacker.chain import Chain
from stacker.equalize import GreedyEqualizer, HungarianEqualizer
from stacker.errors import BundleError, ConfigError
from stacker.transforms import PowerMean, PriorShift, SinkhornEqualizer, TemperatureScaling
from tests.conftest import make_table


def _chain():
    return Chain(
        [
            PowerMean(p=0.0, over="both"),
            TemperatureScaling(),
            PriorShift(prior="em", source_prior="labels"),
            HungarianEqualizer(by="manip"),
        ]
    )


def test_fit_on_holdout_apply_to_test():
    holdout = make_table(n_images=300, views=("identity", "flip"), seed=1)
    test = make_table(n_images=200, views=("identity", "flip"), seed=2, labels=False, n_folds=None)
    chain = _chain()
    fitted_out = chain.fit_transform(holdout)
    assert fitted_out.models == ("mean",) and len(fitted_out) == 300
    out = chain.transform(test)
    assert len(out) == 200 and out.models == ("mean",)
    eq = chain[-1]
    assert len(eq.assignment_) == 300  # the fit batch's assignment; transform changed nothing
    labels = chain.predict(test)
    assert (labels == np.asarray(out.classes, dtype=object)[out.probs[:, 0].argmax(1)]).all()
    for flag in (0, 1):
        codes = out.probs[out.manip == flag, 0].argmax(1)
        assert np.bincount(codes, minlength=10).tolist() == [10] * 10
    assert "temperature_" in vars(chain[1])


def test_save_load_round_trip(tmp_path):
    holdout = make_table(n_images=120, seed=3)
    test = make_table(n_images=100, seed=4, labels=False)
    chain = _chain()
    chain.fit(holdout)
    chain.save(tmp_path / "chain")
    doc = json.loads((tmp_path / "chain" / "manifest.json").read_text())
    assert doc["kind"] == "chain" and doc["format"] == "stacker-bundle"
    assert [s["kind"] for s in doc["state"]["steps"]] == ["power_mean", "temperature", "prior_shift", "hungarian"]
    assert doc["steps"] == ["power_mean", "temperature", "prior_shift", "hungarian"]
    assert (tmp_path / "chain" / "03-hungarian").is_dir()
    loaded = Chain.load(tmp_path / "chain")
    np.testing.assert_array_equal(loaded.transform(test).probs, chain.transform(test).probs)
    assert loaded[1].temperature_ == chain[1].temperature_
    # Saving again replaces the directory atomically.
    loaded.save(tmp_path / "chain")
    Chain.load(tmp_path / "chain")


@register("test_scale_native")
class _NativeStep(Transform):
    """A step with a native file, as the Blend has: checks files travel with the chain."""

    def __init__(self, power: float = 2.0) -> None:
        self.power = power

    def fit(self, table):
        self.table_mean_ = table.probs.mean(axis=(0, 1))
        return self

    def transform(self, table):
        p = table.probs**self.power
        return table.replace(probs=p / p.sum(axis=2, keepdims=True))

    def get_state(self, directory):
        np.save(directory / "mean.npy", self.table_mean_)
        return {"params": self.get_params(), "file": "mean.npy"}

    @classmethod
    def from_state(cls, state, directory):
        obj = cls(**state["params"])
        obj.table_mean_ = np.load(directory / state["file"])
        return obj


def test_native_files_and_tampering(tmp_path):
    table = make_table(n_images=60, seed=5)
    chain = Chain([_NativeStep(), GreedyEqualizer(method="topk"), SinkhornEqualizer()])
    chain.fit(table)
    path = chain.save(tmp_path / "c")
    loaded = Chain.load(path)
    np.testing.assert_array_equal(loaded[0].table_mean_, chain[0].table_mean_)
    # Tampered native file.
    np.save(path / "00-test_scale_native" / "mean.npy", np.zeros(10))
    with pytest.raises(BundleError, match="modified"):
        Chain.load(path)
    chain.save(path)
    (path / "00-test_scale_native" / "mean.npy").unlink()
    with pytest.raises(BundleError, match="missing"):
        Chain.load(path)
    # A listed file replaced by a symbolic link (to a file with the very same bytes) is refused.
    chain.save(path)
    native = path / "00-test_scale_native" / "mean.npy"
    outside = tmp_path / "outside.npy"
    outside.write_bytes(native.read_bytes())
    native.unlink()
    native.symlink_to(outside)
    with pytest.raises(BundleError, match="symbolic link"):
        Chain.load(path)


def resign(path, edit):
    """Edit a saved manifest and sign it again, as someone who read the format would."""
    doc = json.loads((path / "manifest.json").read_text())
    doc.pop("checksum")
    edit(doc)
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()
    doc["checksum"] = hashlib.sha256(canonical).hexdigest()
    (path / "manifest.json").write_text(json.dumps(doc))


def test_load_refuses_bad_bundles(tmp_path):
    table = make_table(n_images=60, seed=5)
    chain = Chain([HungarianEqualizer(quota=0.1)]).fit(table)
    path = chain.save(tmp_path / "c")
    with pytest.raises(BundleError, match="does not exist"):
        Chain.load(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(BundleError, match="no manifest.json"):
        Chain.load(tmp_path / "plain")
    manifest = path / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text.replace('"quota": 0.1', '"quota": 0.2'))
    with pytest.raises(BundleError, match="modified after it was written"):  # an edited chain no longer loads
        Chain.load(path)
    manifest.write_text(text)
    resign(path, lambda d: d["state"]["steps"][0].update(kind="magic"))
    with pytest.raises(BundleError, match="unknown transform kind 'magic'"):
        Chain.load(path)
    manifest.write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Chain.load(path)
    manifest.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="nested too deeply"):
        Chain.load(path)
    manifest.write_text(json.dumps({"format": "other"}))
    with pytest.raises(BundleError, match="not a 'stacker-bundle' manifest"):
        Chain.load(path)
    manifest.write_text(text)
    resign(path, lambda d: d.update(format_version=99))
    with pytest.raises(BundleError, match="version 99"):
        Chain.load(path)
    chain.save(path)
    resign(path, lambda d: d["state"]["steps"][0].update(dir="../elsewhere"))
    with pytest.raises(BundleError, match=r"steps\[0\].dir.*outside the bundle"):
        Chain.load(path)
    chain.save(path)
    resign(path, lambda d: d["files"].update({"../../etc/passwd": "0" * 64}))
    with pytest.raises(BundleError, match="outside the bundle"):
        Chain.load(path)
    # A chain saved in the old chain.json format (no checksum of its own) is refused with the reason.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "chain.json").write_text(json.dumps({"format": "stacker-chain", "version": 1}))
    with pytest.raises(BundleError, match="older stacker"):
        Chain.load(legacy)


def test_save_refuses_to_replace_a_folder_that_is_not_a_bundle(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    chain = Chain([PowerMean(over="models")])
    with pytest.raises(BundleError, match="not a stacker bundle; refusing"):
        chain.save(work)
    assert (work / "notes.txt").read_text() == "mine"
    chain.save(tmp_path / "empty")  # a new or empty directory is fine, and so is replacing a bundle
    chain.save(tmp_path / "empty")


def test_bad_steps():
    with pytest.raises(ConfigError, match="at least one step"):
        Chain([]).fit(make_table())
    with pytest.raises(ConfigError, match="not a registered"):
        Chain([object()]).transform(make_table())


def test_nested_chain_round_trip(tmp_path):
    table = make_table(n_images=50, seed=6)
    inner = Chain([PowerMean(over="models")])
    outer = Chain([inner, HungarianEqualizer(quota=0.1)])
    outer.fit(table)
    path = outer.save(tmp_path / "nested")
    loaded = Chain.load(path)
    assert isinstance(loaded[0], Chain) and isinstance(loaded[0][0], PowerMean)
    np.testing.assert_array_equal(loaded.transform(table).probs, outer.transform(table).probs)


@pytest.mark.slow
def test_power_mean_blend_hungarian_chain(tmp_path):
    """The issue's chain: power mean -> Blend -> HungarianEqualizer(by="manip"), saved and loaded."""
    blend_mod = pytest.importorskip("stacker.blend")
    holdout = make_table(n_images=200, views=("identity", "flip"), seed=11)
    test = make_table(n_images=100, views=("identity", "flip"), seed=12, labels=False, n_folds=None)
    chain = Chain(
        [PowerMean(p=0.0), blend_mod.Blend(recipe="fast", n_jobs=1, n_folds=3), HungarianEqualizer(by="manip")]
    )
    oof = chain.fit_transform(holdout)
    assert oof.models == ("blend",) and len(oof) == 200
    out = chain.transform(test)
    assert out.models == ("blend",)
    manip = out.manip
    for flag in (0, 1):
        assert np.bincount(out.probs[manip == flag, 0].argmax(1), minlength=10).tolist() == [5] * 10
    path = chain.save(tmp_path / "chain")
    loaded = Chain.load(path)
    np.testing.assert_allclose(loaded.transform(test).probs, out.probs, atol=1e-6)


def test_every_builtin_kind_resolves_in_a_fresh_process():
    # A loader may run before stacker.blend is imported (``import stacker`` keeps the Blend lazy).
    import subprocess
    import sys

    from stacker.base import KIND_MODULES

    code = (
        "from stacker.base import KIND_MODULES, get_transform_class\n"
        "for k in KIND_MODULES: assert get_transform_class(k).kind == k, k\n"
        "print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    assert "blend" in KIND_MODULES
