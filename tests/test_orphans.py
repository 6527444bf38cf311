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
from stacker.threads import available_cores

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


def _alive_after(procs, seconds, step=0.1):
    """Those of ``procs`` still alive once they have all exited, or after ``seconds``."""
    deadline = time.monotonic() + seconds
    while _alive(procs) and time.monotonic() < deadline:
        time.sleep(step)
    return _alive(procs)


def _spawned_by_loky(since):
    """Loky's workers and resource trackers started since ``since`` (a ``create_time``), wherever they are now."""
    out = []
    for p in psutil.process_iter(["cmdline", "create_time"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if (p.info["create_time"] or 0) >= since and ("loky" in cmd or "resource_tracker" in cmd):
            out.append(p)
    return out


def _loky_workers(parent):
    return [c for c in parent.children(recursive=True) if "LokyProcess" in " ".join(c.cmdline())]


@pytest.mark.slow
@pytest.mark.skipif(available_cores() < 2, reason="one core: the fits run in-process, with no workers to orphan")
@pytest.mark.parametrize(
    "command, moment",
    [("fit", "running"), ("tune", "running"), ("fit", "starting")],
    ids=["fit-running", "tune-running", "fit-starting-unreaped"],
)
def test_kill_9_leaves_no_worker_behind(tmp_path, command, moment):
    """``running``: killed once both workers are fitting.  ``starting``: killed as soon as the first worker
    process exists, before it has run its initializer, and left an unreaped zombie for two seconds (as a
    parent that does not wait leaves it): the workers still start, see a parent pid that answers
    ``kill(pid, 0)``, and must not take it for alive."""
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
    want = 1 if moment == "starting" else 2
    workers = []
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and len(_loky_workers(parent)) < want:
            time.sleep(0.01 if moment == "starting" else 0.2)
        assert proc.poll() is None and len(_loky_workers(parent)) >= want, "the fit did not start its workers in time"
        if moment == "running":
            time.sleep(2.0)  # let the workers take their first tasks
        os.kill(proc.pid, signal.SIGKILL)
        if moment == "starting":
            time.sleep(2.0)  # the zombie stays unreaped while the workers finish starting
        workers = _spawned_by_loky(parent.create_time())  # re-parented by now: found by command line
        proc.wait(timeout=10)
        left = _alive_after(workers, 15, step=0.2)
        assert not left, f"{len(left)} worker(s) outlived the killed {command}: {[p.pid for p in left]}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in _alive(workers):  # a failed test must not leave them either
            p.kill()


_PARENT = """
import multiprocessing as mp, os, sys, time
from stacker.parallel import watch_parent

def child(parent, pidfd):
    if not pidfd:
        del os.pidfd_open  # as on a system without pidfds: the polling watcher
    watch_parent(parent, interval=0.1)
    print(os.getpid(), flush=True)  # watching now
    time.sleep(60)

if __name__ == "__main__":
    p = mp.get_context("spawn").Process(target=child, args=(os.getpid(), sys.argv[1] == "pidfd"))
    p.start()
    time.sleep(60)
"""


@pytest.mark.parametrize("watcher", ["pidfd", "poll"])
def test_watch_parent_exits_with_its_parent(tmp_path, watcher):
    if watcher == "pidfd" and not hasattr(os, "pidfd_open"):
        pytest.skip("no os.pidfd_open on this system")
    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    proc = subprocess.Popen([sys.executable, str(script), watcher], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = psutil.Process(int(proc.stdout.readline()))
        time.sleep(0.3)
        assert _alive([child]), "the child died with its parent still alive"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert not _alive_after([child], 10, step=0.05), (
            f"the {watcher} watcher left its child running after the parent's kill -9"
        )
    finally:
        proc.kill()
        if child is not None and _alive([child]):
            child.kill()


@pytest.mark.slow
def test_kill_9_of_level1_train_leaves_no_dataloader_worker(tmp_path):
    pytest.importorskip("timm")
    from test_level1 import TINY, _write_dataset

    root = _write_dataset(tmp_path / "d", per_class=6)
    cmd = [
        *(sys.executable, "-c", "import sys; from level1.cli import main; sys.exit(main())", "train"),
        *("--data", str(root), "-o", str(tmp_path / "run"), "--model", TINY, "--crop", "48", "--batch-size", "6"),
        *("--epochs", "20", "--steps-per-epoch", "500", "--workers", "1", "--folds", "2", "--fold", "0"),
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    workers = []
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not workers:
            workers = parent.children(recursive=True)
            time.sleep(0.05)
        assert proc.poll() is None and workers, "level1 train did not start its DataLoader worker in time"
        time.sleep(1.0)  # the worker is loading batches
        workers = parent.children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert not _alive_after(workers, 15), "a DataLoader worker outlived the killed level1 train"
        assert "Traceback" not in proc.stderr.read(), "the dying DataLoader worker printed a traceback"
    finally:
        proc.kill()
        for p in _alive(workers):
            p.kill()


@pytest.mark.parametrize("orphaned", [True, False])
def test_an_orphaned_worker_ends_silently_on_an_uncaught_exception(orphaned):
    """The broken pipe to a killed parent can reach a worker's thread before its watcher wakes: once the
    parent is gone the exception ends the worker without a traceback; otherwise it is reported as before."""
    code = (
        "import threading, time\n"
        "from stacker.parallel import _quiet_once_orphaned\n"
        f"_quiet_once_orphaned(lambda: {orphaned})\n"
        "def serve():\n"
        "    raise EOFError('the parent closed its end')\n"
        "threading.Thread(target=serve).start()\n"
        "time.sleep(0.5)\n"
        "print('still running')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    if orphaned:
        assert done.returncode == 1 and done.stderr == "" and done.stdout == ""
    else:
        assert "EOFError: the parent closed its end" in done.stderr and done.stdout == "still running\n"
