"""stacker tune: out-of-fold scoring, resumable SQLite studies, shared studies (journal, PostgreSQL), Dask fan-out."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from conftest import make_table

optuna = pytest.importorskip("optuna")

from stacker.blend import Blend  # noqa: E402
from stacker.errors import ConfigError, LabelError, StudyError  # noqa: E402
from stacker.recipe import Recipe  # noqa: E402
from stacker.table import PredictionTable, write_table  # noqa: E402
from stacker.tune import (  # noqa: E402
    SearchSpace,
    available_postprocess,
    balanced_resamples,
    challenge_score,
    export_best,
    open_storage,
    tune,
)
from stacker.tune._scoring import resample_strata, score_oof  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: A few cheap members: a trial takes about a second on 200 images.
TINY = {
    "name": "tiny",
    "families": {
        "logistic": {"count": 1},
        "pool": {"count": 1},
        "lightgbm": {
            "count": 1,
            "num_leaves": [4, 8],
            "learning_rate": [0.1, 0.3],
            "min_data_in_leaf": [5, 20],
            "n_estimators": 20,
        },
    },
}
FAST = {"n_folds": 3, "n_jobs": 1, "n_resamples": 3}
DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _tiny() -> Recipe:
    return Recipe.from_dict(TINY)


@pytest.fixture(scope="module")
def table() -> PredictionTable:
    return make_table(n_images=200, seed=3)


@pytest.fixture
def files(tmp_path, table):
    """The holdout and the tiny recipe as files, for the CLI and worker processes."""
    import tomli_w

    holdout = tmp_path / "holdout.parquet"
    write_table(table, holdout)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(TINY))
    return holdout, recipe


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "stacker", "tune", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=kw.get("cwd"),
    )


def _worker_args(holdout, recipe, storage, study, trials, out) -> list[str]:
    return [
        str(holdout),
        "--trials",
        str(trials),
        "--storage",
        storage,
        "--study",
        study,
        "--recipe",
        str(recipe),
        "--folds",
        "3",
        "--n-jobs",
        "1",
        "--resamples",
        "3",
        "-q",
        "-o",
        str(out),
    ]


# ----------------------------------------------------------------------------- scoring


def test_balanced_resamples_are_balanced_and_reproducible():
    y = np.r_[np.zeros(50), np.ones(20), np.full(35, 2)].astype(int)
    a = balanced_resamples(y, 4, seed=7)
    b = balanced_resamples(y, 4, seed=7)
    assert len(a) == 4
    for rows, same in zip(a, b):
        np.testing.assert_array_equal(rows, same)
        assert len(np.unique(rows)) == len(rows)
        np.testing.assert_array_equal(np.bincount(y[rows]), [10, 10, 10])  # half the smallest class
    assert not all(np.array_equal(a[0], r) for r in a[1:])
    assert all(np.bincount(y[r]).tolist() == [5, 5, 5] for r in balanced_resamples(y, 2, 0, per_class=5))


def test_challenge_score_weights_manipulated_rows():
    y = np.array([0, 0, 1, 1])
    labels = np.array([0, 1, 1, 1])  # unaltered rows 0, 2 right; manipulated 1 wrong, 3 right
    manip = np.array([0, 1, 0, 1])
    assert challenge_score(y, labels) == 0.75
    assert challenge_score(y, labels, manip) == pytest.approx(0.7 * 1.0 + 0.3 * 0.5)


def _biased_oof(seed=0, k=4, n=400, manip=True):
    """A labelled one-model table whose probabilities lean towards class 0 (which balancing undoes)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n // k)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.5
    logits[:, 0] += 1.2
    flag = (np.arange(n) // 2) % 2 if manip else None
    if manip:
        logits[flag == 1, 1] += 1.5  # the manipulated half leans towards class 1 as well
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    classes = list("abcd")[:k]
    return PredictionTable.from_arrays(
        np.arange(n), p, classes, models=["blend"], labels=[classes[i] for i in y], manip=flag
    )


def test_equalizer_is_scored_on_balanced_resamples_and_helps_a_biased_model():
    table = _biased_oof(manip=False)
    res = balanced_resamples(table.y, 5, seed=1)
    none = score_oof(table, "none", res)
    for choice in set(available_postprocess()) - {"none"}:
        assert score_oof(table, choice, res) > none + 0.03, choice
    # Each resample's assignment meets the balanced quotas exactly.
    from stacker.postprocess import apply_postprocess

    _, labels = apply_postprocess("hungarian", table.take(res[0]))
    assert np.bincount(labels, minlength=4).tolist() == [len(res[0]) // 4] * 4


def test_tune_scores_what_predict_deploys_per_manipulation_group(tmp_path):
    """A study's score is the deployed chain's score on the same rows: the equalizer runs per manip group."""
    from stacker.equalize import HungarianEqualizer
    from stacker.tune._scoring import challenge_score, resample_strata

    table = _biased_oof(seed=3)
    res = balanced_resamples(table.y, 4, seed=2, strata=resample_strata(table))
    for rows in res:  # balanced within each (class, manip) cell, as the test set was
        sub = table.take(rows)
        assert len({tuple(np.bincount(sub.y[sub.manip == f], minlength=4)) for f in (0, 1)}) == 1
    deployed = []
    for rows in res:  # what `stacker predict --post hungarian` does to a table with a manip column
        sub = table.take(rows)
        chain_labels = HungarianEqualizer(by="manip").fit_predict(sub)
        codes = np.array([table.classes.index(c) for c in chain_labels])
        deployed.append(challenge_score(sub.y, codes, sub.manip))
    assert score_oof(table, "hungarian", res) == pytest.approx(float(np.mean(deployed)), abs=1e-12)
    # Grouping matters here: equalizing the whole resample at once scores differently.
    assert score_oof(table, "hungarian", res, by=None) != pytest.approx(float(np.mean(deployed)), abs=1e-6)


def test_search_space_suggests_within_the_base_ranges():
    base = Recipe.from_dict(
        {
            "name": "b",
            "families": {
                "lightgbm": {
                    "count": 3,
                    "num_leaves": [7, 63],
                    "learning_rate": {"low": 0.01, "high": 0.3, "log": True},
                    "n_estimators": 50,
                },
                "keras": {
                    "count": 2,
                    "activation": ["relu", "tanh"],
                    "units": {"low": 8, "high": 64, "int": True, "log": True},
                },
            },
        }
    )
    space = SearchSpace(base, ["a", "b", "c"], ("none", "greedy"), tta=True)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        s = space.suggest(trial)
        lgb = s.families["lightgbm"]
        assert 0 <= lgb["count"] <= 3 and lgb["n_estimators"] == 50
        lo, hi = lgb["num_leaves"]
        assert isinstance(lo, int) and 7 <= lo <= hi <= 63
        lr = lgb["learning_rate"]
        assert lr["log"] and 0.01 <= lr["low"] <= lr["high"] <= 0.3
        assert s.families["keras"]["activation"] in (["relu", "tanh"], "relu", "tanh")
        assert sum(s.class_weight.values()) == pytest.approx(3.0, abs=1e-4)
        assert 0.0 <= s.tta_power <= 3.0 and s.postprocess in ("none", "greedy")
        if s.n_members:
            Recipe.from_dict(s.recipe_dict("t"))  # a valid recipe whenever it has members
        study.tell(trial, 0.0)
    # The same space fingerprints the same; another post-processing set does not.
    assert space.fingerprint() == SearchSpace(base, ["a", "b", "c"], ("none", "greedy"), tta=True).fingerprint()
    assert space.fingerprint() != SearchSpace(base, ["a", "b", "c"], ("none",), tta=True).fingerprint()


# ----------------------------------------------------------------------------- the study


def test_tune_scores_out_of_fold_and_exports_a_recipe_fit_accepts(tmp_path, table, files):
    storage = str(tmp_path / "study.db")
    study = tune(
        table, n_trials=3, storage=storage, study_name="s", recipe=_tiny(), seed=5, sampler_seed=0, prune=False, **FAST
    )
    assert isinstance(study, optuna.Study)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert complete
    best = study.best_trial
    # The study's value is exactly the OOF score of a Blend refitted with the trial's settings.
    rec = Recipe.from_dict(best.user_attrs["recipe"])
    blend = Blend(recipe=rec, n_folds=3, seed=5, n_jobs=1).fit(table)
    res = balanced_resamples(table.y, 3, seed=5, strata=resample_strata(blend.oof_))
    expected = score_oof(blend.oof_, rec.postprocess, res)
    assert best.value == pytest.approx(expected, abs=1e-12)
    assert best.user_attrs["oof_accuracy"] == pytest.approx(blend.scores_["blend"]["all"]["accuracy"])

    out = export_best(study, tmp_path / "best.toml")
    loaded = Recipe.from_file(out)
    assert loaded.postprocess == rec.postprocess and loaded.class_weight == rec.class_weight
    assert {f.family: f.count for f in loaded.families} == {f.family: f.count for f in rec.families}
    # `stacker fit --recipe` reads the exported file unchanged.
    from stacker.apps.cli import main

    holdout, _ = files
    assert (
        main(
            [
                "fit",
                str(holdout),
                "--recipe",
                str(out),
                "-k",
                "3",
                "-j",
                "1",
                "--no-progress",
                "-o",
                str(tmp_path / "bundle"),
            ]
        )
        == 0
    )
    assert (tmp_path / "bundle").is_dir()


def test_scores_do_not_leak_on_noise():
    """Probabilities unrelated to the labels: out-of-fold scores stay near chance (in-sample would not)."""
    rng = np.random.default_rng(0)
    n, k = 300, 5
    classes = [f"c{i}" for i in range(k)]
    probs = {m: rng.dirichlet(np.ones(k), size=n) for m in ("a", "b")}
    labels = [classes[i] for i in rng.permutation(np.arange(n) % k)]
    noise = PredictionTable.from_arrays([f"i{i}" for i in range(n)], probs, classes, labels=labels)
    rec = {
        "name": "t",
        "families": {"lightgbm": {"count": 1, "num_leaves": 31, "min_data_in_leaf": 2, "n_estimators": 60}},
    }
    study = tune(
        noise, n_trials=2, storage=":memory:", recipe=rec, postprocess=["none"], prune=False, sampler_seed=0, **FAST
    )
    assert max(t.value for t in study.trials) < 0.35  # chance is 0.2; in-sample trees would be near 1


def test_pruning_reports_every_fold(table):
    study = tune(table, n_trials=4, storage=":memory:", recipe=_tiny(), sampler_seed=1, **FAST)
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert sorted(t.intermediate_values) == [0, 1, 2]
    assert len(study.trials) == 4


def _wait_until_stale(db, numbers, grace: float, timeout: float = 60.0) -> None:
    """Wait until the killed trials' last heartbeats are older than the grace period (twice the interval).

    The resumed worker fails exactly the trials Optuna finds stale; waiting on the recorded heartbeats,
    not on a fixed sleep, keeps the test right on a loaded machine.
    """
    import datetime

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            rows = con.execute(
                "SELECT t.number, h.heartbeat FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id"
            ).fetchall()
            (now,) = con.execute("SELECT CURRENT_TIMESTAMP").fetchone()  # the clock Optuna compares with
        beats = [datetime.datetime.fromisoformat(str(b)) for n, b in rows if n in numbers]
        now = datetime.datetime.fromisoformat(str(now))
        if all((now - b).total_seconds() > grace + 1.0 for b in beats):  # CURRENT_TIMESTAMP has whole seconds
            return
        time.sleep(0.2)
    pytest.fail("the killed trials' heartbeats did not go stale")


@pytest.mark.slow
def test_sqlite_study_survives_kill_9_and_resumes(tmp_path, files):
    holdout, recipe = files
    db = tmp_path / "killed.db"
    args = _worker_args(holdout, recipe, str(db), "k", 200, tmp_path / "k.toml") + ["--heartbeat", "1"]
    proc = _cli(*args)
    url = f"sqlite:///{db}"
    before: dict[int, float] = {}
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if proc.poll() is not None:
                pytest.fail(f"the tune process ended early: {proc.stderr.read()}")
            if not db.exists():
                continue
            # Poll with plain read-only SQLite: even with skip_table_creation, opening an Optuna
            # RDBStorage stamps its version tables, which races the worker doing the same.
            try:
                with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
                    states = [r[0] for r in con.execute("SELECT state FROM trials ORDER BY number")]
            except sqlite3.Error:  # the tables are not created yet, or the file is locked
                continue
            if states.count("COMPLETE") >= 2 and states[-1] == "RUNNING":
                os.kill(proc.pid, signal.SIGKILL)  # mid-trial
                break
        else:
            pytest.fail("no two finished trials within 90 s")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    trials = optuna.load_study(study_name="k", storage=url).get_trials()
    before = {t.number: t.value for t in trials if t.state in DONE}
    running = [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert len(before) >= 2
    _wait_until_stale(db, running, grace=2.0)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "stacker",
            "tune",
            *_worker_args(holdout, recipe, str(db), "k", 2, tmp_path / "k.toml"),
            "--heartbeat",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    after = optuna.load_study(study_name="k", storage=url).get_trials()
    numbers = [t.number for t in after]
    assert len(numbers) == len(set(numbers))
    kept = {t.number: t.value for t in after if t.number in before}
    assert kept == before  # no finished trial lost or changed
    states = {t.number: t.state for t in after}
    assert all(states[n] == optuna.trial.TrialState.FAIL for n in running)  # the killed trial was failed
    new_done = [t for t in after if t.state in DONE and t.number not in before]
    assert len(new_done) == 2  # the resumed run added its trials to the same study
    assert Recipe.from_file(tmp_path / "k.toml").families


def _run_workers(holdout, recipe, storage, study, tmp_path, n_workers=2, trials=2):
    procs = [
        _cli(*_worker_args(holdout, recipe, storage, study, trials, tmp_path / f"w{i}.toml")) for i in range(n_workers)
    ]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err


@pytest.mark.slow
def test_journal_storage_shared_by_two_processes(tmp_path, files):
    holdout, recipe = files
    storage = f"journal:{tmp_path / 'study.journal'}"
    _run_workers(holdout, recipe, storage, "j", tmp_path)
    trials = optuna.load_study(study_name="j", storage=open_storage(storage)).get_trials()
    numbers = sorted(t.number for t in trials)
    assert numbers == [0, 1, 2, 3]
    assert all(t.state in DONE for t in trials)


def _postgres_url() -> str:
    url = os.environ.get("STACKER_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("no PostgreSQL server: set STACKER_TEST_POSTGRES_URL (.ci/run starts one on localhost)")
    try:
        open_storage(url, heartbeat_interval=None)
    except StudyError as exc:
        pytest.skip(f"the PostgreSQL server in STACKER_TEST_POSTGRES_URL is not usable: {exc}")
    return url


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_study_shared_by_two_worker_processes(tmp_path, files):
    url = _postgres_url()
    holdout, recipe = files
    name = f"ci-{uuid.uuid4().hex[:12]}"  # a fresh study on every run against the same server
    _run_workers(holdout, recipe, url, name, tmp_path, n_workers=2, trials=2)
    storage = open_storage(url, heartbeat_interval=None)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    numbers = [t.number for t in trials]
    assert len(trials) == 4  # 2 workers x 2 trials: the count adds up
    assert sorted(numbers) == [0, 1, 2, 3]  # no duplicate trial numbers
    assert all(t.state in DONE for t in trials)
    assert Recipe.from_file(tmp_path / "w0.toml").families
    optuna.delete_study(study_name=name, storage=storage)


# ----------------------------------------------------------------------------- Dask fan-out


@pytest.mark.slow
def test_blend_on_a_local_dask_cluster_equals_the_local_run(tmp_path, table, files):
    distributed = pytest.importorskip("distributed")
    from stacker.apps.cli import main
    from stacker.table import read_table

    holdout, recipe = files
    local = Blend(recipe=_tiny(), n_folds=3, seed=11, n_jobs=1).fit(table)
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None, silence_logs=40
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://")
        remote = Blend(recipe=_tiny(), n_folds=3, seed=11, scheduler=address).fit(table)
        # The CLI route: `stacker fit --scheduler tcp://HOST:PORT`.
        oof = tmp_path / "oof.parquet"
        assert (
            main(
                [
                    "fit",
                    str(holdout),
                    "--recipe",
                    str(recipe),
                    "-k",
                    "3",
                    "--seed",
                    "11",
                    "--scheduler",
                    address,
                    "--oof",
                    str(oof),
                    "--no-progress",
                    "-o",
                    str(tmp_path / "bundle"),
                ]
            )
            == 0
        )
    np.testing.assert_allclose(read_table(oof).probs, local.oof_.probs, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(remote.folds_, local.folds_)
    np.testing.assert_allclose(remote.member_oof_, local.member_oof_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(remote.oof_.probs, local.oof_.probs, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(remote.weights_, local.weights_)
    np.testing.assert_allclose(remote.predict_proba(table), local.predict_proba(table), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- bad input


def test_unreachable_storage_fails_within_seconds(table):
    t0 = time.monotonic()
    with pytest.raises(StudyError, match=r"cannot reach the database server at 127\.0\.0\.1:1"):
        tune(table, n_trials=1, storage="postgresql://u:secret@127.0.0.1:1/db", recipe=_tiny(), **FAST)
    assert time.monotonic() - t0 < 10
    with pytest.raises(StudyError) as err:
        open_storage("postgresql://u:secret@127.0.0.1:1/db")
    assert "secret" not in str(err.value)  # the password is not shown


def test_bad_storage_strings_are_refused(tmp_path):
    with pytest.raises(StudyError, match="neither a URL"):
        open_storage("study.txt")
    with pytest.raises(StudyError, match="does not exist"):
        open_storage(str(tmp_path / "missing" / "s.db"))
    with pytest.raises(StudyError, match="does not exist"):
        open_storage(f"journal:{tmp_path / 'missing' / 's.journal'}")
    with pytest.raises(StudyError, match="not a valid database URL"):
        open_storage("postgresql://host:notaport/db")
    # A file that is not a journal is left as it was (Optuna appended to it, then failed to parse it).
    for name, data in (("notes.txt", b"my notes\n"), ("t.parquet", b"PAR1\x00\xff\xfe")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(StudyError, match="is not an Optuna journal"):
            open_storage(f"journal:{tmp_path / name}")
        assert (tmp_path / name).read_bytes() == data


def test_reusing_a_study_with_other_classes_or_space_is_refused(tmp_path, table):
    storage = str(tmp_path / "s.db")
    tune(table, n_trials=1, storage=storage, study_name="x", recipe=_tiny(), **FAST)
    other = make_table(n_images=200, seed=3, classes=[f"k{i}" for i in range(10)])
    with pytest.raises(StudyError, match="created for a table with classes"):
        tune(other, n_trials=1, storage=storage, study_name="x", recipe=_tiny(), **FAST)
    with pytest.raises(StudyError, match="different search space"):
        tune(table, n_trials=1, storage=storage, study_name="x", recipe="fast", **FAST)
    with pytest.raises(StudyError, match="different search space"):
        tune(table, n_trials=1, storage=storage, study_name="x", recipe=_tiny(), postprocess=["none"], **FAST)
    with pytest.raises(StudyError, match="same folds"):
        tune(table, n_trials=1, storage=storage, study_name="x", recipe=_tiny(), **{**FAST, "n_folds": 4})
    # The same settings resume.
    study = tune(table, n_trials=1, storage=storage, study_name="x", recipe=_tiny(), **FAST)
    assert len(study.trials) == 2


def test_bad_options_and_tables(tmp_path, table):
    with pytest.raises(ConfigError, match="n_trials"):
        tune(table, n_trials=0, storage=":memory:", recipe=_tiny())
    with pytest.raises(ConfigError, match="unknown post-processing"):
        tune(table, n_trials=1, storage=":memory:", recipe=_tiny(), postprocess=["magic"])
    unlabelled = make_table(n_images=60, labels=False)
    with pytest.raises(LabelError, match="labelled"):
        tune(unlabelled, n_trials=1, storage=":memory:", recipe=_tiny())
    empty = optuna.create_study(direction="maximize")
    with pytest.raises(StudyError, match="no finished trial"):
        export_best(empty, tmp_path / "x.toml")
    assert not (tmp_path / "x.toml").exists()


def test_cli_reports_bad_input_clearly(tmp_path, files, capsys):
    from stacker.apps.cli import main

    holdout, recipe = files
    rc = main(
        [
            "tune",
            str(holdout),
            "--trials",
            "1",
            "--storage",
            "postgresql://u:p@127.0.0.1:1/db",
            "-o",
            str(tmp_path / "b.toml"),
        ]
    )
    assert rc == 2
    assert "cannot reach the database server" in capsys.readouterr().err
    rc = main(["tune", str(holdout), "--trials", "1", "-o", str(tmp_path / "b.json")])
    assert rc == 2 and ".toml" in capsys.readouterr().err
    rc = main(["tune", str(tmp_path / "nope.parquet"), "--trials", "1", "-o", str(tmp_path / "b.toml")])
    assert rc == 2 and "nope.parquet" in capsys.readouterr().err


def test_tune_refuses_zero_trials_before_making_its_storage(tmp_path, capsys):
    from stacker.apps.cli import main

    assert main(["tune", str(tmp_path / "h.parquet"), "-o", str(tmp_path / "best.toml"), "--trials", "0"]) == 2
    assert "--trials must be at least 1" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
