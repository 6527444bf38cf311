"""``stacker equalize``: quotas, groups, outputs, submission CSV, bad input; and the real CIFAR-10 table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stacker.apps.cli import main
from stacker.apps.cli._equalize import parse_quota
from stacker.errors import ConfigError
from stacker.table import PredictionTable, read_table, write_table
from tests.conftest import make_table


@pytest.fixture
def table_path(tmp_path):
    path = tmp_path / "pred.parquet"
    write_table(make_table(n_images=200, seed=7), path)
    return path


def test_parse_quota():
    assert parse_quota("264") == 264
    assert parse_quota("0.1") == 0.1
    assert parse_quota("3, 4,5") == [3, 4, 5]
    assert parse_quota("a=3,b=4") == {"a": 3, "b": 4}
    for bad, match in [("x", "not a number"), ("a=3,4", "lacks '='"), ("a=1,a=2", "twice"), ("", "empty")]:
        with pytest.raises(ConfigError, match=match):
            parse_quota(bad)


def test_equalize_by_manip_writes_table_and_submission(tmp_path, table_path, capsys):
    out, sub = tmp_path / "eq.parquet", tmp_path / "sub.csv"
    # make_table ids are unique per image, so the submission is well-formed.
    rc = main(["equalize", str(table_path), "--by", "manip", "--quota", "10", "-o", str(out), "--submission", str(sub)])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "accuracy on 200 labelled rows" in text
    eq = read_table(out)
    assert eq.models == ("mean",) and len(eq) == 200
    frame = pd.read_csv(sub)
    assert list(frame.columns) == ["fname", "camera"] and len(frame) == 200
    src = read_table(table_path)
    for flag in (0, 1):
        counts = frame["camera"][src.manip == flag].value_counts()
        assert counts.tolist() == [10] * 10
    assert np.array_equal(np.asarray(eq.classes)[np.argmax(eq.probs[:, 0, :], axis=1)], frame["camera"].to_numpy())
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporaries


@pytest.mark.parametrize("method", ["iterative", "topk", "sinkhorn"])
def test_other_methods(tmp_path, table_path, method):
    out = tmp_path / f"{method}.parquet"
    assert main(["equalize", str(table_path), "--method", method, "--model", "cnn-b", "-o", str(out)]) == 0
    t = read_table(out)
    assert t.models == ("cnn-b",)
    if method == "sinkhorn":
        np.testing.assert_allclose(t.probs[:, 0, :].sum(axis=0), 20.0, atol=1e-4)
    else:
        assert np.bincount(np.argmax(t.probs[:, 0, :], axis=1), minlength=10).tolist() == [20] * 10


def test_bad_input_messages(tmp_path, table_path, capsys):
    out = str(tmp_path / "o.parquet")
    cases = [
        (["--quota", "7"], "quotas sum to 70 but the group"),
        (["--by", "camera"], "no group column 'camera'"),
        (["--quota", "HTC-1-M7=200"], "lacks classes"),
        (["--lower", "-1"], "negative"),
        (["--upper", "5"], "at most 50"),
    ]
    for extra, match in cases:
        assert main(["equalize", str(table_path), "-o", out, *extra]) == 2
        assert match in capsys.readouterr().err
    assert main(["equalize", str(table_path)]) == 2
    assert "nothing to write" in capsys.readouterr().err
    assert main(["equalize", str(tmp_path / "missing.parquet"), "-o", out]) == 2
    assert "no such file" in capsys.readouterr().err


def test_submission_needs_one_row_per_id(tmp_path, capsys):
    t = make_table(n_images=20, views=("identity", "flip"))
    path = tmp_path / "views.parquet"
    write_table(t, path)
    assert main(["equalize", str(path), "--submission", str(tmp_path / "s.csv")]) == 2
    assert "aggregate them first" in capsys.readouterr().err
    ids = ["same"] * 2 + [f"x{i}" for i in range(8)]
    dup = PredictionTable.from_arrays(ids, np.full((10, 2), 0.5), ["a", "b"], models=["m"], manip=[0, 1] + [0] * 8)
    write_table(dup, tmp_path / "dup.parquet")
    assert main(["equalize", str(tmp_path / "dup.parquet"), "--submission", str(tmp_path / "s.csv")]) == 2
    assert "appear on several rows" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.shared_data
def test_cifar_equalization_keeps_accuracy(cifar_table):
    from stacker.equalize import GreedyEqualizer, HungarianEqualizer

    y = cifar_table.y
    mean = cifar_table.probs.mean(axis=1)
    before = float(np.mean(np.argmax(mean, axis=1) == y))
    exact = HungarianEqualizer()
    exact.fit(cifar_table)
    assert np.bincount(exact.assignment_).tolist() == [1000] * 10
    after = float(np.mean(exact.assignment_ == y))
    greedy = GreedyEqualizer()
    greedy.fit(cifar_table)
    # The test set is balanced: forcing the quotas must not cost more than a hair of accuracy.
    assert after >= before - 0.002
    assert float(np.mean(greedy.assignment_ == y)) >= before - 0.01


def test_by_auto_is_manip_when_the_table_has_it(tmp_path, table_path):
    outs = {}
    for by in ("auto", "manip"):
        outs[by] = tmp_path / f"{by}.parquet"
        assert main(["equalize", str(table_path), "--by", by, "-o", str(outs[by])]) == 0
    a, m = read_table(outs["auto"]), read_table(outs["manip"])
    np.testing.assert_array_equal(a.probs, m.probs)
    assert main(["equalize", str(table_path), "-o", str(tmp_path / "all.parquet")]) == 0
    assert not np.array_equal(read_table(tmp_path / "all.parquet").probs, a.probs)
