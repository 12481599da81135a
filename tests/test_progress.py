"""Rank 0's progress: a bar in a terminal, plain log lines in batch logs (no carriage returns)."""
import io
import os
import pty
import subprocess
import sys

from ddl.run.progress import Progress

RECORD = {"epoch": 0, "lr": 0.01, "train_cost": 0.5, "dev_cost": 0.6, "train_error": 0.1,
          "dev_error": 0.2, "samples_per_s": 1234.0}


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_bar_in_a_terminal_and_lines_in_a_log(caplog):
    tty = Tty()
    bar = Progress(3, stream=tty)
    for e in range(3):
        bar({**RECORD, "epoch": e})
    assert tty.getvalue().count("\r[") == 3 and "3/3" in tty.getvalue() and "samples/s" in tty.getvalue()
    log = io.StringIO()
    quiet = Progress(3, stream=log)
    quiet(RECORD)
    assert log.getvalue() == "", "nothing is drawn when the stream is not a terminal"


def test_cli_draws_a_bar_only_on_a_terminal(tmp_path):
    args = [sys.executable, "-m", "ddl", "tracking=off", "train.epochs=30", "data=moons"]
    master, slave = pty.openpty()
    proc = subprocess.Popen(args + [f"out_dir={tmp_path / 'tty'}"], stdin=slave, stdout=slave,
                            stderr=slave, cwd=tmp_path, close_fds=True)
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
    assert proc.wait(timeout=120) == 0
    shown = b"".join(chunks).decode(errors="replace")
    assert "\r[" in shown and "30/30" in shown, shown
    batch = subprocess.run(args + [f"out_dir={tmp_path / 'batch'}"], capture_output=True, text=True,
                           cwd=tmp_path, timeout=120)
    assert batch.returncode == 0 and "\r" not in batch.stderr and "epoch 30/30" in batch.stderr
