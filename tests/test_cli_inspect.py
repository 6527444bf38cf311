"""The `stacker` command: --help, --version, inspect, merge, aggregate."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import make_table
from stacker import __version__
from stacker.apps.cli import main
from stacker.table import read_table, write_table


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "inspect" in out and "merge" in out and "aggregate" in out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "stacker", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_inspect_real_cifar_reports_known_accuracies(cifar_path, capsys):
    assert main(["inspect", str(cifar_path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["rows"] == 10_000 and s["images"] == 10_000 and len(s["models"]) == 5
    assert s["label_counts"]["cat"] == 1000
    sc = s["scores"]
    assert round(sc["densenet-bc-L190-k40"]["all"]["accuracy"], 4) == 0.9668
    assert round(sc["mean (p=1)"]["all"]["accuracy"], 4) == 0.9628
    assert round(sc["geometric mean (p=0)"]["all"]["accuracy"], 4) == 0.9636
    assert sc["densenet-bc-L190-k40"]["all"]["log_loss"] == pytest.approx(0.170, abs=5e-4)


def test_inspect_text_output(cifar_path, capsys):
    assert main(["inspect", str(cifar_path)]) == 0
    out = capsys.readouterr().out
    assert "densenet-bc-L190-k40" in out and "0.9668" in out and "0.9628" in out


def test_inspect_splits_by_manipulation_and_aggregates_views(tmp_path, capsys):
    t = make_table(n_images=40, views=("identity", "flip"))
    path = write_table(t, tmp_path / "t.parquet")
    assert main(["inspect", str(path), "--json", "-p", "0"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["rows"] == 80 and s["samples"] == 40 and s["views"] == ["flip", "identity"]
    sc = s["scores"]["cnn-a"]
    assert sc["all"]["n"] == 40 and sc["unaltered"]["n"] == 20 and sc["manipulated"]["n"] == 20
    assert "power mean" not in json.dumps(s["scores"])  # p=0 is the geometric line already


def test_inspect_bad_input_exits_nonzero_with_message(tmp_path, capsys):
    t = make_table(n_images=10)
    frame = t.to_frame()
    frame.loc[2, "cnn-a/iPhone-6"] = np.nan
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "bad.parquet")
    assert main(["inspect", str(tmp_path / "bad.parquet")]) == 2
    err = capsys.readouterr().err
    assert "bad.parquet" in err and "cnn-a/iPhone-6" in err and "NaN" in err
    assert main(["inspect", str(tmp_path / "missing.parquet")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_merge_and_aggregate_commands(tmp_path, capsys):
    t = make_table(n_images=20, models=("a", "b"), views=("identity", "flip"))
    pa_ = write_table(t.select_models(["a"]), tmp_path / "a.parquet")
    pb = write_table(t.select_models(["b"]), tmp_path / "b.parquet")
    out = tmp_path / "merged.parquet"
    assert main(["merge", str(pa_), str(pb), "-o", str(out)]) == 0
    merged = read_table(out)
    np.testing.assert_array_equal(merged.probs, t.probs)
    agg_path = tmp_path / "agg.parquet"
    assert main(["aggregate", str(out), "-p", "0", "-o", str(agg_path)]) == 0
    assert len(read_table(agg_path)) == 20
    # A failing merge leaves an existing output untouched.
    before = out.read_bytes()
    assert main(["merge", str(pa_), str(pa_), "-o", str(out)]) == 2
    assert out.read_bytes() == before
