"""Rank 0's progress: a bar in a terminal, plain log lines in batch logs (no carriage returns)."""
import io
import os
import pty
import signal
import subprocess
import sys

import fcntl
import re
import struct
import termios

import pytest

from ddl.runner.progress import Progress, bar_line, epoch_fields

RECORD = {"epoch": 0, "lr": 0.01, "train_cost": 0.5, "dev_cost": 0.6, "train_error": 0.1,
          "dev_error": 0.2, "samples_per_s": 1234.0}


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_bar_in_a_terminal_and_lines_in_a_log(caplog, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    tty = Tty()
    bar = Progress(3, stream=tty)
    for e in range(3):
        bar({**RECORD, "epoch": e})
    assert tty.getvalue().count("\r[") == 3 and "3/3" in tty.getvalue() and "samples/s" in tty.getvalue()
    log = io.StringIO()
    quiet = Progress(3, stream=log)
    quiet(RECORD)
    assert log.getvalue() == "", "nothing is drawn when the stream is not a terminal"


WIDE = {"epoch": 1233, "lr": 0.000123456, "train_cost": 0.123456789, "dev_cost": 12345.678,
        "train_error": 0.0123456, "dev_error": 0.987654, "samples_per_s": 123456789.0}


@pytest.mark.parametrize("columns", [20, 40, 60, 80, 100, 150, 200])
def test_the_bar_fits_the_terminal_dropping_the_least_important_fields_first(columns):
    fields = epoch_fields(WIDE, 10000)
    line = bar_line(1234, 10000, fields, columns)
    assert len(line) <= columns - 1, (columns, line)
    shown = [f for f in fields if f in line]
    assert shown == fields[:len(shown)] and shown, line       # a prefix of the priority order
    if columns >= 150:
        assert shown == fields, line                          # a wide terminal shows them all


def test_without_a_dev_split_the_bar_shows_the_test_split():
    r = {**RECORD, "dev_cost": float("nan"), "dev_error": float("nan"), "test_cost": 0.7,
         "test_error": 0.3}
    assert epoch_fields(r, 3)[1:3] == ["train err 0.1", "test err 0.3"]


def pty_run(args, cwd, columns=80, interrupt_at=None):
    """Run `args` on a pseudo-terminal `columns` wide; (status, everything it showed). With
    interrupt_at (bytes), Ctrl-C (SIGINT) once the output shows them."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
                            close_fds=True, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
        if interrupt_at is not None and interrupt_at in b"".join(chunks):
            proc.send_signal(signal.SIGINT)
            interrupt_at = None
    return proc.wait(timeout=120), b"".join(chunks).decode(errors="replace")


def test_at_80_columns_the_bar_never_wraps(tmp_path):
    code, shown = pty_run([sys.executable, "-m", "ddl", "tracking=off", "train.epochs=40",
                           "data=moons", f"out_dir={tmp_path / 'run'}"], tmp_path, columns=80)
    assert code == 0, shown
    bars = [seg for seg in re.split(r"[\r\n]", shown) if seg.startswith("[#") or seg.startswith("[.")]
    assert len(bars) >= 40, shown
    assert max(len(b.rstrip()) for b in bars) <= 79 and max(len(b) for b in bars) <= 79, \
        max(bars, key=len)
    assert all("train err" in b and "dev err" in b for b in bars), bars[-1]


def test_cli_draws_a_bar_only_on_a_terminal(tmp_path):
    args = [sys.executable, "-m", "ddl", "tracking=off", "train.epochs=30", "data=moons"]
    code, shown = pty_run(args + [f"out_dir={tmp_path / 'tty'}"], tmp_path)
    assert code == 0, shown
    assert "\r[" in shown and "30/30" in shown, shown
    batch = subprocess.run(args + [f"out_dir={tmp_path / 'batch'}"], capture_output=True, text=True,
                           cwd=tmp_path, timeout=120)
    assert batch.returncode == 0 and "\r" not in batch.stderr and "epoch 30/30" in batch.stderr


def test_ctrl_c_says_its_line_below_the_bar_not_glued_to_it(tmp_path):
    code, shown = pty_run([sys.executable, "-m", "ddl", "tracking=off", "train.epochs=200000",
                           "data=moons", f"out_dir={tmp_path / 'run'}"], tmp_path, interrupt_at=b"[#")
    assert code == 130, shown
    lines = shown.split("\n")
    said = [line for line in lines if " INFO " in line or " WARNING " in line]
    assert any("stopped by Ctrl-C" in line for line in said), shown[-2000:]
    glued = [line for line in said if "[#" in line or "[." in line]      # a bar before the text
    assert not glued, repr(glued)
    assert "\r\n\r\n" not in shown[-1000:], repr(shown[-1000:])           # nor a blank line
