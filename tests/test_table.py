"""The prediction table: schema round trip and every kind of bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import CAMERAS, make_table
from stacker.errors import (
    DuplicateKeyError,
    EmptyTableError,
    LabelError,
    ProbabilityError,
    SchemaError,
    StackerError,
    TableReadError,
)
from stacker.table import (
    METADATA_KEY,
    SCHEMA_VERSION,
    PredictionTable,
    read_metadata,
    read_table,
    write_table,
)


def _write_frame(frame: pd.DataFrame, path, metadata: dict | None = None) -> None:
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata is not None:
        arrow = arrow.replace_schema_metadata(
            {**(arrow.schema.metadata or {}), METADATA_KEY: json.dumps(metadata).encode()}
        )
    pq.write_table(arrow, path)


@pytest.fixture
def frame():
    return make_table(n_images=40, views=("identity", "rot90")).to_frame()


# ------------------------------------------------------------------------ round trip
def test_round_trip_keeps_everything(tmp_path, small_table):
    path = write_table(small_table, tmp_path / "t.parquet")
    back = read_table(path)
    assert back.classes == small_table.classes
    assert back.models == small_table.models
    np.testing.assert_array_equal(back.probs, small_table.probs)
    pd.testing.assert_frame_equal(back.meta, small_table.meta)
    meta = read_metadata(path)
    assert meta == {"schema_version": SCHEMA_VERSION, "classes": CAMERAS, "models": ["cnn-a", "cnn-b"]}


def test_round_trip_float32_is_close(tmp_path, small_table):
    back = read_table(write_table(small_table, tmp_path / "t.parquet", dtype="float32"))
    np.testing.assert_allclose(back.probs, small_table.probs, atol=1e-6)


def test_metadata_fixes_class_order_independent_of_columns(tmp_path, small_table):
    frame = small_table.to_frame()
    cols = list(frame.columns)
    probs = [c for c in cols if "/" in c]
    frame = frame[[c for c in cols if "/" not in c] + probs[::-1]]  # scramble column order
    _write_frame(frame, tmp_path / "t.parquet", small_table.metadata())
    back = read_table(tmp_path / "t.parquet")
    assert back.classes == small_table.classes
    assert back.models == small_table.models
    np.testing.assert_array_equal(back.probs, small_table.probs)


def test_inference_without_metadata_follows_column_order(tmp_path, small_table):
    _write_frame(small_table.to_frame(), tmp_path / "t.parquet")
    assert read_metadata(tmp_path / "t.parquet") is None
    back = read_table(tmp_path / "t.parquet")
    assert back.classes == small_table.classes and back.models == small_table.models


def test_real_cifar_table_is_inferred(cifar_table):
    assert len(cifar_table) == 10_000
    assert cifar_table.n_models == 5 and cifar_table.n_classes == 10
    assert cifar_table.classes[0] == "airplane"
    assert cifar_table.models[0] == "densenet-bc-L190-k40"
    assert (np.bincount(cifar_table.y) == 1000).all()


def test_write_is_atomic_and_leaves_no_temp(tmp_path, small_table, monkeypatch):
    target = tmp_path / "out.parquet"
    write_table(small_table, target)
    before = target.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(RuntimeError):
        write_table(small_table, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]


def test_model_names_may_contain_slashes(tmp_path):
    t = PredictionTable.from_arrays(["a", "b"], {"run/fold0": np.eye(2)}, ["x", "y"], labels=["x", "y"])
    back = read_table(write_table(t, tmp_path / "t.parquet"))
    assert back.models == ("run/fold0",)


def test_unknown_labels_allowed_as_null(tmp_path):
    t = PredictionTable.from_arrays(["a", "b"], {"m": np.eye(2)}, ["x", "y"], labels=["x", None])
    assert list(t.y) == [0, -1]


# ------------------------------------------------------------------------ bad input
def _bad(frame, tmp_path, **kw):
    path = tmp_path / "bad.parquet"
    _write_frame(frame, path, kw.pop("metadata", None))
    return lambda: read_table(path, **kw)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused_naming_column_and_rows(frame, tmp_path, value):
    col = "cnn-b/iPhone-6"
    frame.loc[[3, 7], col] = value
    with pytest.raises(ProbabilityError) as err:
        _bad(frame, tmp_path)()
    assert err.value.column == col
    assert err.value.rows == [3, 7]
    assert "bad.parquet" in str(err.value) and col in str(err.value) and "img00001" in str(err.value)


def test_negative_values_are_refused(frame, tmp_path):
    frame.loc[5, "cnn-a/Sony-NEX-7"] = -0.01
    with pytest.raises(ProbabilityError, match="negative") as err:
        _bad(frame, tmp_path)()
    assert err.value.rows == [5] and err.value.column == "cnn-a/Sony-NEX-7"


def test_rows_not_summing_to_one_are_refused_or_renormalised(frame, tmp_path):
    cols = [c for c in frame.columns if c.startswith("cnn-a/")]
    frame.loc[[2, 9], cols] *= 1.5
    with pytest.raises(ProbabilityError, match="do not sum to 1") as err:
        _bad(frame, tmp_path)()
    assert err.value.rows == [2, 9] and err.value.column == "cnn-a/*"
    t = _bad(frame, tmp_path, renormalize=True)()
    np.testing.assert_allclose(t.probs.sum(axis=2), 1.0)


def test_tolerance_is_respected(frame, tmp_path):
    cols = [c for c in frame.columns if c.startswith("cnn-a/")]
    frame.loc[0, cols] *= 1 + 5e-4
    _bad(frame, tmp_path)()  # within the default 1e-3
    with pytest.raises(ProbabilityError):
        _bad(frame, tmp_path, atol=1e-5)()


def test_all_zero_row_cannot_be_renormalised(frame, tmp_path):
    cols = [c for c in frame.columns if c.startswith("cnn-b/")]
    frame.loc[4, cols] = 0.0
    with pytest.raises(ProbabilityError, match="all-zero") as err:
        _bad(frame, tmp_path, renormalize=True)()
    assert err.value.rows == [4]


def test_missing_class_column_names_model_and_column(frame, tmp_path):
    frame = frame.drop(columns=["cnn-b/Motorola-X"])
    with pytest.raises(SchemaError, match="missing classes") as err:
        _bad(frame, tmp_path)()
    assert err.value.column == "cnn-b/Motorola-X"


def test_missing_class_against_metadata(frame, tmp_path):
    meta = {"schema_version": 1, "classes": CAMERAS, "models": ["cnn-a", "cnn-b"]}
    frame = frame.drop(columns=[c for c in frame.columns if c.endswith("/Sony-NEX-7")])
    with pytest.raises(SchemaError, match="missing classes"):
        _bad(frame, tmp_path, metadata=meta)()


def test_extra_class_column_is_refused(frame, tmp_path):
    meta = {"schema_version": 1, "classes": CAMERAS, "models": ["cnn-a", "cnn-b"]}
    frame["cnn-a/Nokia-3310"] = 0.0
    with pytest.raises(SchemaError, match="extra class") as err:
        _bad(frame, tmp_path, metadata=meta)()
    assert err.value.column == "cnn-a/Nokia-3310"


def test_model_missing_from_columns_or_metadata(frame, tmp_path):
    meta = {"schema_version": 1, "classes": CAMERAS, "models": ["cnn-a", "cnn-b", "cnn-c"]}
    with pytest.raises(SchemaError, match="no columns"):
        _bad(frame, tmp_path, metadata=meta)()
    meta = {"schema_version": 1, "classes": CAMERAS, "models": ["cnn-a"]}
    with pytest.raises(SchemaError, match="does not list"):
        _bad(frame, tmp_path, metadata=meta)()


def test_unknown_plain_column_is_refused(frame, tmp_path):
    frame["weight"] = 1.0
    with pytest.raises(SchemaError, match="unknown column") as err:
        _bad(frame, tmp_path)()
    assert err.value.column == "weight"


def test_missing_id_column(frame, tmp_path):
    with pytest.raises(SchemaError, match="'id'"):
        _bad(frame.drop(columns=["id"]), tmp_path)()


def test_non_numeric_probability_column(frame, tmp_path):
    frame["cnn-a/HTC-1-M7"] = frame["cnn-a/HTC-1-M7"].astype(str)
    with pytest.raises(SchemaError, match="non-numeric") as err:
        _bad(frame, tmp_path)()
    assert err.value.column == "cnn-a/HTC-1-M7"


def test_duplicate_keys_are_refused(frame, tmp_path):
    frame.loc[6, ["id", "view", "manip"]] = frame.loc[0, ["id", "view", "manip"]].to_numpy()
    with pytest.raises(DuplicateKeyError) as err:
        _bad(frame, tmp_path)()
    assert err.value.rows == [0, 6]
    assert "img00000" in str(err.value)


def test_duplicate_ids_without_view_are_refused(tmp_path):
    frame = make_table(n_images=10, manip=False).to_frame().drop(columns=["view"])
    frame.loc[3, "id"] = frame.loc[1, "id"]
    with pytest.raises(DuplicateKeyError):
        _bad(frame, tmp_path)()


def test_same_id_different_view_or_manipulation_is_fine(frame, tmp_path):
    t = _bad(frame, tmp_path)()
    assert t.key_columns == ["id", "manip", "view"]
    assert len(t) == 80


def test_labels_outside_class_set(frame, tmp_path):
    frame.loc[[1, 12], "label"] = "Nokia-3310"
    with pytest.raises(LabelError, match="Nokia-3310") as err:
        _bad(frame, tmp_path)()
    assert err.value.rows == [1, 12] and err.value.column == "label"


def test_manip_flag_must_be_binary(frame, tmp_path):
    frame.loc[8, "manip"] = 2
    with pytest.raises(SchemaError, match="0 or 1") as err:
        _bad(frame, tmp_path)()
    assert err.value.rows == [8]


def test_fold_must_be_non_negative_integer(frame, tmp_path):
    frame["fold"] = frame["fold"].astype(float)
    frame.loc[2, "fold"] = 1.5
    with pytest.raises(SchemaError, match="fold") as err:
        _bad(frame, tmp_path)()
    assert err.value.rows == [2]


def test_empty_table(frame, tmp_path):
    with pytest.raises(EmptyTableError, match="no rows"):
        _bad(frame.iloc[:0], tmp_path)()


def test_no_probability_columns(frame, tmp_path):
    with pytest.raises(SchemaError, match="no '<model>/<class>'"):
        _bad(frame[["id", "label"]], tmp_path)()


def test_not_parquet(tmp_path):
    path = tmp_path / "probs.parquet"
    path.write_text("id,label\n1,cat\n")
    with pytest.raises(TableReadError, match="probs.parquet"):
        read_table(path)


def test_truncated_parquet(tmp_path, small_table):
    path = write_table(small_table, tmp_path / "t.parquet")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TableReadError, match="truncated"):
        read_table(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(TableReadError, match="no such file"):
        read_table(tmp_path / "nope.parquet")
    with pytest.raises(TableReadError, match="not a file"):
        read_table(tmp_path)


def test_future_schema_version_refused(frame, tmp_path):
    meta = {"schema_version": 99, "classes": CAMERAS, "models": ["cnn-a", "cnn-b"]}
    with pytest.raises(TableReadError, match="schema version"):
        _bad(frame, tmp_path, metadata=meta)()


def test_errors_are_value_errors_and_stacker_errors(frame, tmp_path):
    frame.loc[0, "cnn-a/HTC-1-M7"] = np.nan
    with pytest.raises(ValueError):
        _bad(frame, tmp_path)()
    with pytest.raises(StackerError):
        _bad(frame, tmp_path)()


def test_from_arrays_shape_errors():
    with pytest.raises(SchemaError, match="shape"):
        PredictionTable.from_arrays(["a"], np.ones((2, 1, 2)) / 2, ["x", "y"], models=["m"])
    with pytest.raises(SchemaError, match="at least 2 classes"):
        PredictionTable.from_frame(pd.DataFrame({"id": [1], "m/x": [1.0]}))


def test_take_and_select_models(small_table):
    sub = small_table.take(np.arange(10)).select_models(["cnn-b"])
    assert len(sub) == 10 and sub.models == ("cnn-b",)
    np.testing.assert_array_equal(sub.proba("cnn-b"), small_table.proba(1)[:10])
    with pytest.raises(SchemaError):
        small_table.select_models(["nope"])
