"""Stop requests (ddl/parallel/signals.py) in this process: real signals sent to itself."""
from __future__ import annotations

import os
import signal

import pytest

from ddl.parallel import signals


@pytest.fixture(autouse=True)
def _handlers_back():
    kept = {s: signal.getsignal(s) for s in signals.STOP_SIGNALS}
    signals.forget_requests()
    yield
    for s, handler in kept.items():
        signal.signal(s, handler)
    signals.forget_requests()


def test_a_signal_asks_for_a_stop_and_names_itself():
    signals.install_signal_handlers()
    assert not signals.requested()
    os.kill(os.getpid(), signal.SIGTERM)
    assert signals.requested() and signals.stop_signal() == signal.SIGTERM


def test_a_request_between_two_sweep_points_reaches_the_next_point():
    signals.install_signal_handlers()            # the first point
    os.kill(os.getpid(), signal.SIGUSR1)         # after it ended, before the next one trains
    signals.install_signal_handlers()            # the next point: the request still stands
    assert signals.requested() and signals.stop_signal() == signal.SIGUSR1


def test_a_new_notebook_run_forgets_the_last_runs_interrupt():
    signals.install_signal_handlers()
    os.kill(os.getpid(), signal.SIGINT)
    signals.forget_requests()
    assert not signals.requested() and signals.stop_signal() is None


def test_a_signal_before_training_ends_the_process_with_one_line(capsys):
    from ddl.runner.startup import install_startup_handlers

    install_startup_handlers()
    with pytest.raises(SystemExit) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
    assert stop.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().out == "ddl: stopped by SIGTERM before training started; nothing to resume\n"


def test_sigterm_while_mpiexecs_ranks_start_is_one_line_and_143(tmp_path):
    """What a cancelled job does in its first second: every rank, still importing, stops with one
    line (from rank 0) and 128 + SIGTERM; no rank is killed mid-import (mpiexec's crash box)."""
    import subprocess
    import sys
    import time

    import psutil

    from helpers import clean_env, mpiexec

    proc = subprocess.Popen([mpiexec(), "-n", "2", sys.executable, "-m", "ddl", "train.epochs=50",
                             "tracking=off", f"out_dir={tmp_path / 'run'}"], cwd=tmp_path, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    def catches_sigterm(rank) -> bool:        # ddl's first handler is installed: SigCgt has SIGTERM
        try:
            with open(f"/proc/{rank.pid}/status") as f:
                mask = next(line for line in f if line.startswith("SigCgt:")).split()[1]
        except OSError:
            return False
        return bool(int(mask, 16) >> (signal.SIGTERM - 1) & 1)

    deadline, ranks = time.monotonic() + 60, []
    while not (len(ranks) == 2 and all(map(catches_sigterm, ranks))) and time.monotonic() < deadline:
        ranks = [p for p in psutil.Process(proc.pid).children(recursive=True)
                 if "-m" in p.cmdline() and "ddl" in p.cmdline()]
        time.sleep(0.005)
    assert len(ranks) == 2 and all(map(catches_sigterm, ranks)), "the ranks never installed ddl's handler"
    for rank in ranks:                                # still importing Hydra, NumPy, mpi4py
        rank.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, out
    assert out.count("ddl: stopped by SIGTERM before training started") == 1, out
    assert "BAD TERMINATION" not in out and not (tmp_path / "run" / "final.npz").exists(), out
