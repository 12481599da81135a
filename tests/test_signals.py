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
    signals.install_startup_handlers()
    with pytest.raises(SystemExit) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
    assert stop.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().out == "ddl: stopped by SIGTERM before training started; nothing to resume\n"
