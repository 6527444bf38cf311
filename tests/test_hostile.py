"""Hostile and faulty inputs: a typed one-line error or a correct result, never a traceback or a silent answer."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import make_table
from stacker.apps.cli import main
from stacker.cv import grouped_folds
from stacker.equalize import HungarianEqualizer, solve_assignment
from stacker.errors import ConfigError, StackerError, TableError
from stacker.files import atomic_path
from stacker.table import read_table, write_table

ROOT = Path(__file__).resolve().parents[1]


def _parquet(table, path, metadata: dict[bytes, bytes] | None = None, frame: pd.DataFrame | None = None):
    arrow = pa.Table.from_pandas(table.to_frame() if frame is None else frame, preserve_index=False)
    if metadata is not None:
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **metadata})
    pq.write_table(arrow, path)
    return path


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
        (b'{"schema_version": 1, "classes": [1, 2], "models": ["m"]}', "list of names"),
        (b"{not json", "not valid JSON"),
    ],
)
def test_malformed_stacker_metadata_is_a_typed_error(tmp_path, raw, message):
    path = _parquet(make_table(n_images=10), tmp_path / "t.parquet", {b"stacker": raw})
    with pytest.raises(TableError, match=message):
        read_table(path)


def test_malformed_pandas_metadata_is_ignored_not_trusted(tmp_path):
    table = make_table(n_images=10)
    path = _parquet(table, tmp_path / "t.parquet", {b"pandas": b'{"index_columns": [{"kind": 5}], "columns": 7}'})
    np.testing.assert_array_equal(read_table(path).probs, table.probs)


@pytest.mark.parametrize("fold", [np.inf, 1e20, -1.0, 0.5])
def test_impossible_folds_are_refused(tmp_path, fold):
    frame = make_table(n_images=10).to_frame()
    frame["fold"] = frame["fold"].astype("float64")
    frame.loc[3, "fold"] = fold
    with pytest.raises(TableError, match="fold") as err:
        read_table(_parquet(None, tmp_path / "t.parquet", frame=frame))
    assert err.value.rows == [3]


def test_ids_that_are_lists_or_structs_are_refused(tmp_path):
    frame = make_table(n_images=6).to_frame()
    for value in ([1, 2], {"a": 1}):
        bad = frame.copy()
        bad["id"] = [value] * len(bad)
        with pytest.raises(TableError, match="id"):
            read_table(_parquet(None, tmp_path / "t.parquet", frame=bad))


def test_nan_atol_and_overflowing_renormalize(tmp_path):
    table = make_table(n_images=10)
    path = write_table(table, tmp_path / "t.parquet")
    with pytest.raises(ConfigError, match="atol"):
        read_table(path, atol=float("nan"))
    frame = table.to_frame()
    cols = [c for c in frame.columns if c.startswith("cnn-a/")]
    frame.loc[0, cols] = 1e308  # finite values whose row sum overflows
    out = read_table(_parquet(None, tmp_path / "big.parquet", frame=frame), renormalize=True)
    np.testing.assert_allclose(out.probs[0, 0], np.full(len(cols), 1 / len(cols)))


def test_write_table_refuses_what_read_table_would_refuse(tmp_path):
    table = make_table(n_images=10)
    bad = table.replace(
        probs=np.where(np.arange(table.probs.size).reshape(table.probs.shape) == 0, np.nan, table.probs)
    )
    with pytest.raises(TableError, match="not written") as err:
        write_table(bad, tmp_path / "bad.parquet")
    assert err.value.rows == [0] and not (tmp_path / "bad.parquet").exists()


def test_aggregate_with_a_very_negative_power_reads_back(tmp_path):
    table = make_table(n_images=20, views=("identity", "flip"))
    frame = table.to_frame()
    frame.loc[0, [c for c in frame.columns if c.startswith("cnn-a/")]] = [1.0] + [0.0] * 9
    write_table(read_table(_parquet(None, tmp_path / "t.parquet", frame=frame)), tmp_path / "in.parquet")
    assert main(["aggregate", str(tmp_path / "in.parquet"), "-p", "-25", "-o", str(tmp_path / "out.parquet")]) == 0
    assert np.isfinite(read_table(tmp_path / "out.parquet").probs).all()


# ---------------------------------------------------------------------- quotas
@pytest.mark.parametrize("quota", ["nan", "inf", "1e400", "abc", "HTC-1-M7=x", "-1"])
def test_bad_cli_quotas_are_one_line(tmp_path, capsys, quota):
    path = write_table(make_table(n_images=20), tmp_path / "t.parquet")
    assert main(["equalize", str(path), "--quota", quota, "-o", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err


@pytest.mark.parametrize("kw", [{"quota": 2**62}, {"lower": [0] * 10, "upper": [2**63] * 10}, {"quota": True}])
def test_huge_or_odd_quotas_in_the_api(kw):
    table = make_table(n_images=20)
    try:
        labels = HungarianEqualizer(**kw).fit_predict(table)
    except ConfigError:
        return
    assert len(labels) == 20  # the upper bounds are only bounds: clipped to the group size


# ---------------------------------------------------------------------- the equalizer's output
def test_output_probabilities_are_the_prices_reweighting_and_argmax_is_the_assignment():
    rng = np.random.default_rng(3)
    P = rng.dirichlet(np.ones(6) * 0.3, size=300)
    P[::7] = P[0]  # some exact ties between rows
    eq = HungarianEqualizer()
    out = eq.fit_transform(P)
    assign = eq.assignment_
    np.testing.assert_array_equal(np.argmax(out, axis=1), assign)
    prices = np.asarray(eq.prices_["all"])
    expected = P * np.exp(-prices)
    expected /= expected.sum(axis=1, keepdims=True)
    same = np.argmax(expected, axis=1) == assign  # rows not at a tie: exactly the reweighting
    np.testing.assert_allclose(out[same], expected[same], rtol=1e-12)
    flipped = P * np.exp(prices)  # the wrong sign would move rows away from their assignment
    flipped /= flipped.sum(axis=1, keepdims=True)
    assert not np.array_equal(np.argmax(flipped, axis=1), assign)
    a, _ = solve_assignment(P, np.full(6, 50))
    np.testing.assert_array_equal(a, assign)


# ---------------------------------------------------------------------- folds
def test_folds_change_with_the_seed_and_stay_grouped_and_stratified():
    rng = np.random.default_rng(0)
    n_images, k = 400, 4
    image_y = rng.integers(0, k, n_images)
    groups = np.repeat(np.arange(n_images), 3)  # three rows (views, manipulations) per image
    y = image_y[groups]
    a = grouped_folds(y, groups, 5, seed=1)
    b = grouped_folds(y, groups, 5, seed=2)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, grouped_folds(y, groups, 5, seed=1))
    for folds in (a, b):
        assert all(len(set(folds[groups == g])) == 1 for g in range(n_images))  # grouped
        for c in range(k):  # stratified: each class spread evenly (images of class c per fold differ by <= 1)
            per_fold = np.bincount(folds[::3][image_y == c], minlength=5)
            assert per_fold.max() - per_fold.min() <= 1


CIFAR = ROOT.parent / "shared" / "data" / "cifar10-5models" / "probs.parquet"


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR.is_file(), reason="../shared/data/cifar10-5models is absent")
def test_fast_blend_beats_the_best_model_and_the_geometric_mean_on_real_cifar_rows():
    from stacker import Blend, metrics
    from stacker.aggregate import aggregate_models

    table = read_table(CIFAR)
    sub = table.take(np.sort(np.random.default_rng(1).permutation(len(table))[:3000]))
    blend = Blend("fast", n_folds=5, n_jobs=2).fit(sub)
    y = sub.y
    oof = blend.oof_.probs[:, 0]
    best_single = max(metrics.accuracy(y, sub.probs[:, m]) for m in range(sub.n_models))
    best_single_ll = min(metrics.log_loss(y, sub.probs[:, m]) for m in range(sub.n_models))
    geo = aggregate_models(sub, 0.0)
    assert metrics.accuracy(y, oof) > max(best_single, metrics.accuracy(y, geo))
    assert metrics.log_loss(y, oof) < min(best_single_ll, metrics.log_loss(y, geo))


# ---------------------------------------------------------------------- files and the OS
def test_a_killed_writers_temp_file_is_removed_at_the_next_write(tmp_path):
    target = tmp_path / "out.parquet"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    # The names atomic writes give (mkstemp's 8 random characters): one of a dead writer, one of this process.
    leftover = tmp_path / f".out.parquet.{int(dead.stdout)}.abc123_x.tmp"
    leftover.write_bytes(b"half a table")
    live = tmp_path / f".out.parquet.{os.getpid()}.zzzzzzzz.tmp"  # a write in progress here: kept
    live.write_bytes(b"")
    write_table(make_table(n_images=5), target)
    assert not leftover.exists() and live.exists() and target.exists()


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_table(make_table(n_images=5), tmp_path / "t.parquet")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        with atomic_path(tmp_path / "private.txt") as tmp:
            tmp.write_text("x")
        assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600
    finally:
        os.umask(old)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_permission_denied_is_one_line(tmp_path, capsys):
    path = write_table(make_table(n_images=5), tmp_path / "t.parquet")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["aggregate", str(path), "-p", "1", "-o", str(locked / "o.parquet")]) == 2
        err = capsys.readouterr().err
        assert "Permission denied" in err and err.count("\n") == 1
    finally:
        locked.chmod(0o700)


def test_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    path = write_table(make_table(n_images=5), tmp_path / "t.parquet")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o.parquet"))

    monkeypatch.setattr(pq, "write_table", full)
    assert main(["aggregate", str(path), "-p", "1", "-o", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and err.count("\n") == 1
    assert not (tmp_path / "o.parquet").exists() and not list(tmp_path.glob(".o.parquet.*"))


def test_a_closed_pipe_ends_a_command_quietly():
    """`stacker inspect ... | head -1`: a command writing more than the pipe holds meets EPIPE."""
    code = (
        "import argparse, sys\n"
        "from stacker.console import run_command\n"
        "def func(args):\n"
        "    for i in range(200_000):\n"
        "        print(f'line {i} of a long report')\n"
        "sys.exit(run_command('stacker', argparse.Namespace(func=func, command='inspect')))\n"
    )
    res = subprocess.run(
        ["bash", "-c", f'{sys.executable} -c "$CODE" | head -1; echo rc=${{PIPESTATUS[0]}}'],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CODE": code},
    )
    assert res.stdout.startswith("line 0") and "rc=0" in res.stdout
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr


def test_every_error_of_a_fuzzed_table_is_typed(tmp_path):
    """Random byte and metadata mutations of a valid file: read_table answers or raises a StackerError."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    good = write_table(make_table(n_images=20), tmp_path / "good.parquet").read_bytes()
    meta = json.dumps(make_table(n_images=2).metadata()).encode()

    @hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
    @hypothesis.given(
        flips=st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)), max_size=8),
        cut=st.one_of(st.none(), st.integers(0, len(good))),
        raw=st.one_of(st.none(), st.binary(max_size=64), st.sampled_from([meta[:-3], meta.replace(b"1", b"-1")])),
    )
    def check(flips, cut, raw):
        data = bytearray(good)
        for i, v in flips:
            data[i] = v
        path = tmp_path / "fuzz.parquet"
        path.write_bytes(bytes(data[:cut] if cut is not None else data))
        if raw is not None:
            try:
                table = pq.read_table(path)
                pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), b"stacker": raw}), path)
            except Exception:
                pass
        try:
            read_table(path)
        except StackerError:
            pass

    check()


def test_fuzzed_command_lines_end_in_an_answer_or_one_error_line(tmp_path, capsys):
    """Random option values for the table commands: exit 0 or 2 (argparse's own errors too), never an exception."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    table = write_table(make_table(n_images=30, views=("identity", "flip")), tmp_path / "t.parquet")
    values = st.one_of(
        st.sampled_from(["nan", "inf", "-inf", "1e400", "-1", "0", "1", "2.5", "", "x", "1,2", "HTC-1-M7=3", "-25"]),
        st.text(max_size=8),
    )

    @hypothesis.settings(
        max_examples=80,
        deadline=None,
        derandomize=True,
        suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
    )
    @hypothesis.given(
        command=st.sampled_from(["aggregate", "equalize", "inspect"]),
        option=st.sampled_from(["-p", "--atol", "--quota", "--lower", "--upper", "--by", "--method", "--model"]),
        value=values,
        renormalize=st.booleans(),
    )
    def check(command, option, value, renormalize):
        argv = [command, str(table), option, value] + (["--renormalize"] if renormalize else [])
        if command != "inspect":
            argv += ["-o", str(tmp_path / "out.parquet")]
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse: an unknown option for this command, or a bad type
            rc = exc.code
        err = capsys.readouterr().err
        assert rc in (0, 2), (argv, rc, err)
        assert "Traceback" not in err

    check()


# ---------------------------------------------------------------------- an outside probe's findings
def _npz_variants(tmp_path):
    import zipfile

    table = make_table(n_images=20)
    np.savez(tmp_path / "ok.npz", probs=table.probs, classes=np.array(table.classes))
    good = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(good[: len(good) // 2])
    crc = bytearray(good)
    for i in range(200, min(2000, len(crc)), 13):
        crc[i] ^= 0x55
    (tmp_path / "crc.npz").write_bytes(bytes(crc))
    with zipfile.ZipFile(tmp_path / "junk.npz", "w") as z:
        z.writestr("probs.npy", b"not npy data")
        z.writestr("classes.npy", b"xx")
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000, 10), }"
    npy = (
        b"\x93NUMPY\x01\x00" + len(header.ljust(118) + "\n").to_bytes(2, "little") + (header.ljust(118) + "\n").encode()
    )
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z:
        z.writestr("probs.npy", npy + b"\0" * 80)
    return ["trunc.npz", "crc.npz", "junk.npz", "huge.npz"]


def test_broken_npz_files_are_typed_errors(tmp_path):
    for name in _npz_variants(tmp_path):
        with pytest.raises(TableError):
            read_table(tmp_path / name)


@pytest.mark.parametrize("ext", ["gz", "bz2", "xz"])
def test_truncated_compressed_csv_is_a_typed_error(tmp_path, ext):
    import bz2
    import gzip
    import lzma

    raw = write_table(make_table(n_images=200), tmp_path / "t.csv").read_bytes()
    packed = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[ext](raw)
    (tmp_path / f"trunc.csv.{ext}").write_bytes(packed[: len(packed) // 3])
    (tmp_path / f"garbage.csv.{ext}").write_bytes(os.urandom(300))
    for name in (f"trunc.csv.{ext}", f"garbage.csv.{ext}"):
        with pytest.raises(TableError):
            read_table(tmp_path / name)


def test_fit_options_an_outside_probe_broke(tmp_path, capsys):
    holdout = write_table(make_table(n_images=60), tmp_path / "h.parquet")
    base = ["fit", str(holdout), "-o", str(tmp_path / "b"), "-r", "fast", "-k", "3", "--no-progress"]
    for extra, message in (
        (["-j", "0"], "-j/--jobs"),
        (["-j", "1", "--class-weight", '{"HTC-1-M7": 1e308}'], "at most 1e12"),
        (["-j", "1", "--scheduler", "notaurl"], "Dask scheduler"),
    ):
        assert main(base + extra) == 2, extra
        assert message in capsys.readouterr().err
    partial = make_table(n_images=60)
    keep = partial.meta["label"] != "HTC-1-M7"
    write_table(partial.take(keep.to_numpy()), tmp_path / "p.parquet")
    assert (
        main(
            [
                "fit",
                str(tmp_path / "p.parquet"),
                "-o",
                str(tmp_path / "b"),
                "-r",
                "fast",
                "-k",
                "3",
                "-j",
                "1",
                "--no-progress",
            ]
        )
        == 2
    )
    assert "no labelled rows" in capsys.readouterr().err


def test_fit_messages_name_the_options_not_the_parameters(tmp_path, capsys):
    holdout = write_table(make_table(n_images=60), tmp_path / "h.parquet")
    base = ["fit", str(holdout), "-o", str(tmp_path / "b"), "-r", "fast", "-k", "3", "-j", "1", "--no-progress"]
    assert main(base + ["--class-weight", '{"nope": 3}']) == 2
    assert "--class-weight names unknown classes ['nope']; the table's: ['" in capsys.readouterr().err
    for atol in ("-1", "nan", "abc"):
        with pytest.raises(SystemExit) as exc:
            main(base + ["--atol", atol])
        assert exc.value.code == 2
        assert f"argument --atol: expected a finite number >= 0, got '{atol}'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("command", ["fit", "tune"])
@pytest.mark.parametrize("address", ["foo", "tcp://host", "host:port", " "])
def test_a_mistyped_scheduler_is_refused_before_the_table_is_read(tmp_path, capsys, command, address):
    # The table does not exist: the error must be the option's, found first, and nothing written.
    out = tmp_path / ("b" if command == "fit" else "best.toml")
    assert main([command, str(tmp_path / "missing.parquet"), "-o", str(out), "--scheduler", address]) == 2
    err = capsys.readouterr().err
    assert f"--scheduler must be a Dask scheduler address like tcp://host:port, got {address!r}" in err
    assert "missing.parquet" not in err and list(tmp_path.iterdir()) == []


def test_outputs_never_replace_their_inputs_or_special_files(tmp_path, capsys):
    from stacker import Blend

    table = make_table(n_images=40, seed=2)
    path = write_table(table, tmp_path / "t.parquet")
    Blend({"name": "p", "families": {"pool": {"count": 1}}}, n_folds=2, n_jobs=1).fit(table).save(tmp_path / "b")
    manifest = (tmp_path / "b" / "manifest.json").read_bytes()
    assert main(["predict", str(tmp_path / "b"), str(path), "-o", str(tmp_path / "b" / "manifest.json")]) == 2
    assert "inside the bundle" in capsys.readouterr().err
    assert (tmp_path / "b" / "manifest.json").read_bytes() == manifest
    assert main(["equalize", str(path), "-o", str(tmp_path / "x.csv"), "--submission", str(tmp_path / "x.csv")]) == 2
    assert "same file" in capsys.readouterr().err
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert main(["aggregate", str(path), "-p", "1", "-o", str(fifo)]) == 2
    assert "not a regular file" in capsys.readouterr().err and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_missing_extra_is_one_line_naming_it(capsys):
    import argparse

    from stacker.console import run_command

    def needs_optuna(args):
        raise ModuleNotFoundError("No module named 'optuna'", name="optuna")

    assert run_command("stacker", argparse.Namespace(func=needs_optuna, command="tune")) == 2
    err = capsys.readouterr().err
    assert "pip install 'stacker[tune]'" in err and err.count("\n") == 1

    def needs_numpy(args):  # a core module missing is a broken install: the traceback stays
        raise ModuleNotFoundError("No module named 'numpy'", name="numpy")

    with pytest.raises(ModuleNotFoundError):
        run_command("stacker", argparse.Namespace(func=needs_numpy, command="inspect"))


@pytest.mark.parametrize(
    "family, body, message",
    [
        ("xgboost", {"max_depth": -3}, "XGBoostError: value -3 for Parameter max_depth"),
        ("xgboost", {"n_estimators": 0}, "n_estimators must be at least 1, got 0"),
        ("lightgbm", {"num_leaves": -3}, "LightGBMError: Check failed: (num_leaves) > (1)"),
        ("lightgbm", {"n_estimators": 0}, "n_estimators must be at least 1, got 0"),
    ],
)
@pytest.mark.parametrize("jobs", [1, 2], ids=["in-process", "in-a-worker"])
def test_a_value_the_library_refuses_names_the_family_and_the_values(family, body, message, jobs):
    from stacker import Blend

    recipe = {"name": "bad", "families": {family: {"count": 1, **body}}}
    with pytest.raises(ConfigError) as exc:
        Blend(recipe, n_folds=2, n_jobs=jobs, time_limit=None).fit(make_table(n_images=40))
    text = str(exc.value)
    assert f"a {family!r} member with {body} could not be fitted; check the recipe's values" in text
    assert message in text
