"""`stacker demo`: the whole pipeline on scikit-learn's real digits (few training steps here)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from stacker.apps.cli import main
from stacker.apps.demo import CANVAS, make_digit_images
from stacker.table import read_table


def test_digit_images_are_balanced_and_half_manipulated(tmp_path):
    from PIL import Image

    from holdout.manipulate import MANIPULATIONS

    manifests = make_digit_images(tmp_path, seed=1)
    test, hold = manifests["test"], manifests["holdout"]
    assert len(test) == 500 and len(hold) == 1297
    assert (test["label"].value_counts() == 50).all()
    for m in (test, hold):
        kinds = m["manip_kind"]
        assert set(kinds) - {""} <= set(MANIPULATIONS)
        assert abs((kinds != "").mean() - 0.5) < 0.01
    assert (test.groupby("label")["manip_kind"].apply(lambda k: (k != "").sum()) == 25).all()
    img = np.asarray(Image.open(tmp_path / test["path"].iloc[0]))
    assert img.shape == (CANVAS, CANVAS, 3)
    again = make_digit_images(tmp_path / "again", seed=1)
    assert again["test"].equals(test)


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--epochs", "1", "--steps", "3"]) == 0
    text = capsys.readouterr().out
    for line in ("resnet10t", "regnety", "mobilenetv3", "mean of level-1", "Blend + equalization", "report:"):
        assert line in text
    # Progress a user can see: each stage with the elapsed time, every epoch of every fold of every CNN.
    assert re.search(r"^\[2/4\] level-1 CNNs \(2-fold on the CPU, 1 torch thread\)  \[\d+ s\]$", text, re.M)
    assert len(re.findall(r"^ +\d+\.\d s  fold[01] epoch 1/1 train_loss", text, re.M)) == 3 * 2
    assert "equalization picks the classes" in text  # why its log loss is higher
    holdout, test = read_table(out / "holdout.parquet"), read_table(out / "test.parquet")
    assert holdout.models == test.models == ("resnet10t", "regnety", "mobilenetv3")
    assert holdout.folds is not None and not holdout.meta["fold"].isna().any()
    assert len(test) == 500 and (np.bincount(test.y) == 50).all()
    eq = read_table(out / "equalized.parquet")
    labels = eq.probs[:, 0, :].argmax(1)
    for flag in (0, 1):  # exact equalization per manipulation group: 25 per class in each half
        assert (np.bincount(labels[eq.manip == flag], minlength=10) == 25).all()
    assert (out / "bundle" / "manifest.json").is_file() and (out / "report.html").stat().st_size > 50_000


@pytest.mark.parametrize("bad", [["--threads", "0"], ["--folds", "1"], ["--steps", "0"], ["--epochs", "0"]])
def test_demo_refuses_bad_options_before_writing_anything(tmp_path, capsys, bad):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), *bad]) == 2
    assert bad[0] in capsys.readouterr().err and not out.exists()
