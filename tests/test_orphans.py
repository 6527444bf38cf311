"""Workers die with their parent: no joblib/loky worker of ``stacker fit`` or ``tune`` outlives a ``kill -9`` of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import make_table
from stacker.recipe import Recipe
from stacker.table import write_table

psutil = pytest.importorskip("psutil")

# Enough XGBoost work on two workers to still be running when the parent is killed.
SLOW = {
    "name": "slow",
    "families": {"xgboost": {"count": 6, "max_depth": 6, "n_estimators": 4000, "early_stopping_rounds": 4000}},
}


def _alive(procs):
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: the fits run in-process, with no workers to orphan")
@pytest.mark.parametrize("command", ["fit", "tune"])
def test_kill_9_leaves_no_worker_behind(tmp_path, command):
    holdout = write_table(make_table(n_images=1500, seed=1), tmp_path / "holdout.parquet")
    recipe = tmp_path / "slow.toml"
    recipe.write_text(Recipe.from_dict(SLOW).to_toml())
    if command == "fit":
        args = ["-o", str(tmp_path / "b"), "-r", str(recipe), "-j", "2", "--time-limit", "none", "--no-progress"]
    else:
        study = f"sqlite:///{tmp_path / 'study.db'}"
        args = [
            "--trials",
            "3",
            "--recipe",
            str(recipe),
            "--folds",
            "3",
            "--n-jobs",
            "2",
            "--no-prune",
            "--storage",
            study,
            "-o",
            str(tmp_path / "best.toml"),
        ]
    cmd = [sys.executable, "-m", "stacker", command, str(holdout), *args]
    proc = subprocess.Popen(
        cmd, env={**os.environ, "KERAS_BACKEND": "torch"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    workers = []
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            workers = [c for c in parent.children(recursive=True) if "python" in c.name().lower()]
            if len(workers) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None and len(workers) >= 2, "the fit did not start its workers in time"
        time.sleep(1.0)  # let the workers take their first tasks
        workers = parent.children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while _alive(workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _alive(workers)
        assert not left, f"{len(left)} worker(s) outlived the killed {command}: {[p.pid for p in left]}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in _alive(workers):  # a failed test must not leave them either
            p.kill()
