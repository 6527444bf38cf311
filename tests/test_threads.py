"""CPU threads and the OpenMP wait policy (stacker.threads); what they cost is benchmarks/bench_cpu_share.py's."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stacker.errors import ConfigError
from stacker.threads import SPLIT_FROM, cap_workers, check_threads, default_threads, passive_openmp


def test_default_threads_one_for_small_inputs_else_the_cores_the_workers_leave(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert default_threads() == 1 and default_threads(size=SPLIT_FROM - 2) == 1
    assert default_threads(size=SPLIT_FROM) == 8
    assert default_threads(workers=3, size=480) == 5
    assert default_threads(workers=20, size=480) == 1
    assert cap_workers(3) == 3 and cap_workers(20) == 7 and cap_workers(0) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert cap_workers(2) == 0 and default_threads(size=480) == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_thread_counts_are_config_errors_naming_the_option(bad):
    with pytest.raises(ConfigError, match="threads"):
        check_threads(bad)
    from level1 import Level1Config

    with pytest.raises(ConfigError, match="'threads'"):
        Level1Config(threads=bad).validate()


def test_passive_openmp_keeps_a_policy_the_user_chose(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    passive_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    passive_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_commands_set_the_policy_before_torch_loads():
    """run_command sets OMP_WAIT_POLICY before the command imports torch (the runtime reads it once, at load)."""
    code = (
        "import os, sys, argparse\n"
        "from stacker.console import run_command\n"
        "def cmd(args):\n"
        "    assert 'torch' not in sys.modules\n"
        "    import torch\n"
        "    print(os.environ['OMP_WAIT_POLICY'])\n"
        "run_command('stacker', argparse.Namespace(func=cmd, command='x'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "PASSIVE"


def test_level1_training_uses_the_threads_asked_for_and_caps_workers(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    from level1.config import Level1Config
    from level1.run import runtime_threads

    before = torch.get_num_threads()
    messages: list[str] = []
    try:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
        cfg = runtime_threads(Level1Config(crop=16, workers=5), torch.device("cpu"), messages.append)
        assert cfg.workers == 1 and torch.get_num_threads() == 1
        assert "5 DataLoader workers on 2 cores" in messages[0]
        cfg = runtime_threads(Level1Config(crop=16, threads=2), torch.device("cpu"), messages.append)
        assert torch.get_num_threads() == 2 and cfg.workers == 0 and len(messages) == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2, reason="needs 2 cores")
def test_blend_workers_never_outnumber_the_cores_of_the_affinity_mask():
    # taskset or a cpuset leaves the process fewer cores than the machine has: -j 2 must not start 2 workers on 1.
    code = (
        "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
        "from stacker.parallel import effective_n_jobs; print(effective_n_jobs(2), effective_n_jobs(-1))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "1"]
