"""Predictions where they are: CSV and NumPy tables, and the submission file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import make_table
from stacker.apps.cli import main
from stacker.errors import DuplicateKeyError, ProbabilityError, SchemaError, TableReadError
from stacker.table import read_table, write_table


def _same(a, b):
    np.testing.assert_array_equal(a.probs, b.probs)
    assert a.classes == b.classes and a.models == b.models
    pd.testing.assert_frame_equal(a.meta, b.meta)


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz"])
def test_csv_round_trip_is_exact(tmp_path, name):
    table = make_table(n_images=40, views=("identity", "flip"), seed=2)
    _same(read_table(write_table(table, tmp_path / name)), table)


def test_csv_keeps_string_ids_and_class_names_that_look_like_missing_values(tmp_path):
    frame = pd.DataFrame({"id": ["007", "008"], "label": ["NA", "null"], "m/NA": [0.9, 0.2], "m/null": [0.1, 0.8]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    table = read_table(tmp_path / "t.csv")
    assert table.ids.tolist() == ["007", "008"] and table.classes == ("NA", "null")
    assert table.labels.tolist() == ["NA", "null"]


def test_csv_errors_are_the_parquet_errors(tmp_path):
    frame = make_table(n_images=20).to_frame()
    frame.iloc[4, frame.columns.get_loc("cnn-a/iPhone-4s")] = -0.5
    frame.to_csv(tmp_path / "bad.csv", index=False)
    frame.to_parquet(tmp_path / "bad.parquet", index=False)
    errors = []
    for path in (tmp_path / "bad.csv", tmp_path / "bad.parquet"):
        with pytest.raises(ProbabilityError) as err:
            read_table(path)
        errors.append(err.value)
    assert errors[0].reason == errors[1].reason and errors[0].rows == errors[1].rows == [4]
    assert errors[0].column == errors[1].column == "cnn-a/iPhone-4s" and "bad.csv" in str(errors[0])
    frame = make_table(n_images=20).to_frame()
    pd.concat([frame, frame.iloc[:1]]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(DuplicateKeyError):
        read_table(tmp_path / "dup.csv")
    frame.assign(**{"cnn-a/HTC-1-M7": "x"}).to_csv(tmp_path / "text.csv", index=False)
    with pytest.raises(SchemaError, match="non-numeric"):
        read_table(tmp_path / "text.csv")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x01id\n")
    with pytest.raises(TableReadError, match="not a readable CSV"):
        read_table(tmp_path / "binary.csv")


def test_npz_and_npy_tables(tmp_path):
    table = make_table(n_images=30, seed=4)
    np.savez(
        tmp_path / "t.npz",
        probs=table.probs,
        classes=np.array(table.classes),
        models=np.array(table.models),
        ids=table.ids.astype(str),
        labels=np.array([v or "" for v in table.labels]),
        folds=table.folds.astype(int),
        manip=table.manip,
    )
    back = read_table(tmp_path / "t.npz")
    np.testing.assert_array_equal(back.probs, table.probs)
    assert back.classes == table.classes and back.labels.tolist() == table.labels.tolist()
    assert back.folds.tolist() == table.folds.tolist() and back.manip.tolist() == table.manip.tolist()
    np.save(tmp_path / "one.npy", table.probs[:, 0])
    with pytest.raises(SchemaError, match="classes="):
        read_table(tmp_path / "one.npy")
    one = read_table(tmp_path / "one.npy", classes=table.classes)
    assert one.models == ("one",) and one.ids.tolist() == list(range(30))
    np.savez(tmp_path / "obj.npz", probs=table.probs, classes=np.array(list(table.classes), dtype=object))
    with pytest.raises(TableReadError, match="never unpickles"):
        read_table(tmp_path / "obj.npz")
    np.savez(tmp_path / "extra.npz", probs=table.probs, classes=np.array(table.classes), weights=np.ones(3))
    with pytest.raises(SchemaError, match="unknown arrays"):
        read_table(tmp_path / "extra.npz")
    bad = table.probs.copy()
    bad[2, 1, 3] = np.nan
    np.savez(tmp_path / "nan.npz", probs=bad, classes=np.array(table.classes))
    with pytest.raises(ProbabilityError, match="NaN") as err:
        read_table(tmp_path / "nan.npz")
    assert err.value.rows == [2]


def test_every_command_reads_csv(tmp_path, capsys):
    write_table(make_table(n_images=30), tmp_path / "t.csv")
    assert main(["inspect", str(tmp_path / "t.csv")]) == 0
    assert "cnn-a" in capsys.readouterr().out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from stacker import Blend

    root = tmp_path_factory.mktemp("bundle")
    recipe = {"name": "tiny", "families": {"pool": {"count": 1}}}
    Blend(recipe, n_folds=3, n_jobs=1).fit(make_table(n_images=120, seed=5)).save(root / "b")
    return root / "b"


def test_predict_writes_a_submission_per_id(bundle, tmp_path, capsys):
    test = make_table(n_images=40, seed=6, labels=False, n_folds=None)
    write_table(test, tmp_path / "test.csv")
    sub = tmp_path / "submission.csv"
    assert (
        main(
            [
                "predict",
                str(bundle),
                str(tmp_path / "test.csv"),
                "--submission",
                str(sub),
                "--post",
                "hungarian",
                "--submission-columns",
                "fname,camera",
            ]
        )
        == 0
    )
    assert "submission.csv" in capsys.readouterr().out
    frame = pd.read_csv(sub)
    assert list(frame.columns) == ["fname", "camera"] and frame["fname"].tolist() == test.ids.tolist()
    manip = test.manip
    for flag in (0, 1):  # 20 rows per half, 10 classes: the equalizer gives each 2
        assert frame["camera"][manip == flag].value_counts().tolist() == [2] * 10
    # The same answer as the table output's argmax.
    assert (
        main(
            [
                "predict",
                str(bundle),
                str(tmp_path / "test.csv"),
                "-o",
                str(tmp_path / "p.parquet"),
                "--post",
                "hungarian",
            ]
        )
        == 0
    )
    pred = read_table(tmp_path / "p.parquet")
    assert (np.asarray(pred.classes)[pred.probs[:, 0].argmax(1)] == frame["camera"].to_numpy()).all()


def test_predict_refuses_a_submission_with_repeated_ids_and_bad_columns(bundle, tmp_path, capsys):
    views = make_table(n_images=20, seed=7, views=("identity", "flip"), n_folds=None)
    write_table(views, tmp_path / "views.parquet")
    sub, out = tmp_path / "s.csv", tmp_path / "out.parquet"
    argv = ["predict", str(bundle), str(tmp_path / "views.parquet"), "--submission", str(sub), "-o", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "several views" in err and "--tta-power" in err
    assert not sub.exists() and not out.exists()  # a refused submission leaves no output table either
    assert (
        main(
            [
                "predict",
                str(bundle),
                str(tmp_path / "views.parquet"),
                "--submission",
                str(sub),
                "--submission-columns",
                "id",
            ]
        )
        == 2
    )
    assert "two different names" in capsys.readouterr().err
    assert main(["predict", str(bundle), str(tmp_path / "views.parquet")]) == 2
    assert "nothing to write" in capsys.readouterr().err


def test_predict_says_when_by_has_no_effect(bundle, tmp_path, capsys):
    table = make_table(n_images=20, seed=8, n_folds=None)
    write_table(table, tmp_path / "t.parquet")
    argv = ["predict", str(bundle), str(tmp_path / "t.parquet"), "-o", str(tmp_path / "p.parquet")]
    assert main([*argv, "--by", "manip", "--post", "none"]) == 0
    assert "--by manip has no effect without post-processing (--post none)" in capsys.readouterr().err
    assert main([*argv, "--by", "manip", "--post", "hungarian"]) == 0
    assert "no effect" not in capsys.readouterr().err


def test_predict_says_when_its_rows_are_the_ones_the_blend_was_fitted_on(bundle, tmp_path, capsys):
    fitted = make_table(n_images=120, seed=5)  # the bundle's own holdout
    write_table(fitted, tmp_path / "h.parquet")
    argv = ["predict", str(bundle), str(tmp_path / "h.parquet"), "-o", str(tmp_path / "p.parquet")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"{len(fitted)} of the {len(fitted)} rows have ids the Blend was fitted on" in err
    other = make_table(n_images=30, seed=9, n_folds=None)
    other = other.replace(meta=other.meta.assign(id=[f"new{i}" for i in range(len(other))]))
    write_table(other, tmp_path / "o.parquet")
    assert main(["predict", str(bundle), str(tmp_path / "o.parquet"), "-o", str(tmp_path / "q.parquet")]) == 0
    assert "fitted on" not in capsys.readouterr().err
