"""The stall watch (ddl/parallel/watchdog.py): its rule on heartbeats, the beacon a rank keeps, and
real `mpiexec` jobs with one rank SIGSTOPped in the launch shapes the old polled watch missed: more
ranks than cores (blocking collectives) and the shared-memory sharded step."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ddl.parallel.watchdog import Beacon, Beat, verdict
from helpers import clean_env, mpiexec, newest_run_status

CFG = ["data=synthetic", "data.m=3000", "data.n_x=20", "data.classes=3", "model.hidden=[32,16]",
       "train.epochs=150", "train.batch_size=50", "train.progress=false", "checkpoint.every=25"]
TIMEOUT = 2.0          # train.stall_timeout in the jobs below; the acceptance bound is TIMEOUT + 10 s


def beat(seq: int, heard: float, waiting: float = -1.0) -> Beat:
    return Beat(seq, waiting, "node-a", 4242, heard)


def test_a_rank_behind_or_silent_is_named_and_one_that_arrived_is_not():
    now = 100.0
    beats = {1: beat(7, now - 0.5), 2: beat(6, now - 0.5), 3: beat(7, now - 9.0, waiting=8.0)}
    missing = verdict(7, beats, 5, now, silent_s=2.0)
    assert sorted(missing) == [2, 3, 4]
    assert "still before this collective, alive" in missing[2]
    assert "no heartbeat for 9 s, stopped or hung hard" in missing[3]
    assert "no heartbeat has reached rank 0" in missing[4]
    assert verdict(7, {1: beat(7, now), 2: beat(8, now)}, 3, now, 2.0) == {}   # transport stuck


def test_the_beacon_says_where_its_rank_waits_and_a_queued_device_collective_counts():
    b = Beacon()
    assert b.waiting(10.0) is None
    b.enter(10.0)
    assert b.waiting(13.0) == (1, 3.0)
    b.leave()
    assert b.waiting(13.0) is None and b.seq == 1
    done = [False]
    b.enter(20.0)                     # NCCL: queued, the host leaves at once
    b.queue(lambda: done[0])
    b.leave()
    b.enter(21.0)                     # a later one queued behind it keeps the older one watched
    b.queue(lambda: done[0])
    b.leave()
    assert b.waiting(25.0) == (2, 5.0)
    done[0] = True
    assert b.waiting(25.0) is None


def test_a_held_beacon_keeps_its_rank_in_the_collective_and_a_finished_one_is_not_held():
    b = Beacon()
    assert not b.hold(1) and not b.held          # not waiting: nothing to hold
    b.enter(time.perf_counter())
    assert b.hold(1)
    left = threading.Event()

    def complete():
        b.leave()
        left.set()
    threading.Thread(target=complete, daemon=True).start()
    assert not left.wait(0.3)                   # parked: it never reaches the update


def launch(tmp_path, n: int, *extra: str):
    out = tmp_path / "run"
    cmd = [mpiexec(), "-n", str(n), sys.executable, "-m", "ddl", *CFG, f"train.stall_timeout={TIMEOUT}",
           f"out_dir={out}", *extra]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return proc, out


def stop_rank_when_training(proc, out, rank: int, n: int) -> tuple[int, float]:
    """SIGSTOP `rank` once rank 0 has logged its first epoch; (its pid, when it was stopped)."""
    from test_faults import rank_pids

    deadline, log = time.monotonic() + 90, out / "train.log"
    while not (log.exists() and "epoch 1/" in log.read_text() and len(rank_pids(out)) == n):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)
    pid = rank_pids(out)[rank]
    os.kill(pid, signal.SIGSTOP)
    return pid, time.monotonic()


def named_after(proc, out, stopped_at: float) -> float:
    """Seconds from the stop until rank 0's log names the stall."""
    log = out / "train.log"
    while "stalled:" not in log.read_text():
        assert time.monotonic() < stopped_at + TIMEOUT + 10, f"not named within {TIMEOUT} + 10 s"
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)
    return time.monotonic() - stopped_at


@pytest.mark.mpi
@pytest.mark.parametrize("n, extra, shape", [
    (3, ["train.shard_optimizer=off"], "3 ranks on 2 cores: blocking allreduce"),
    (2, ["train.shard_optimizer=on"], "2 ranks, the shared-memory sharded step"),
])
def test_a_sigstopped_rank_is_named_in_every_shape_and_the_run_goes_on_when_it_resumes(tmp_path, n, extra, shape):
    if n > len(os.sched_getaffinity(0)) and "blocking" not in shape:
        pytest.skip("needs as many cores as ranks")
    proc, out = launch(tmp_path, n, "tracking=off", *extra)
    pid = None
    try:
        pid, stopped_at = stop_rank_when_training(proc, out, n - 1, n)
        seconds = named_after(proc, out, stopped_at)
        print(f"{shape}: rank {n - 1} SIGSTOPped, named after {seconds:.1f} s (stall_timeout {TIMEOUT} s)")
        os.kill(pid, signal.SIGCONT)
        text = proc.communicate(timeout=180)[0]
    finally:
        if pid is not None and proc.poll() is None:
            os.kill(pid, signal.SIGCONT)
            proc.kill()
    log = (out / "train.log").read_text()
    assert proc.returncode == 0, text
    assert f"rank(s) [{n - 1}] have not arrived" in log and "train.on_stall=wait" in log, log
    assert ("through the node's shared memory" in log) == ("shared-memory" in shape), log


@pytest.mark.mpi
def test_on_stall_abort_ends_an_oversubscribed_job_failed_with_the_checkpoint_before_the_stall(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc, out = launch(tmp_path, 3, "train.on_stall=abort", f"tracking.uri={uri}")
    pid = None
    try:
        pid, stopped_at = stop_rank_when_training(proc, out, 2, 3)
        text = proc.communicate(timeout=TIMEOUT + 60)[0]
        ended = time.monotonic() - stopped_at
    finally:
        if pid is not None:
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
    print(f"on_stall=abort, 3 ranks on 2 cores: job ended {ended:.1f} s after the stop, exit {proc.returncode}")
    log = (out / "train.log").read_text()
    assert proc.returncode == 1 and ended < TIMEOUT + 10 + 5, text
    assert "StalledError" in text and "rank(s) [2] did not arrive" in text, text
    assert "checkpoint (stall) written" in log, log
    assert "Abort(" not in text, text                                # ddl's paragraph, not MPICH's
    deadline = time.monotonic() + 30          # the tracking worker ends the run just after the job
    while newest_run_status(tmp_path / "mlflow.db") in (None, "RUNNING") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert newest_run_status(tmp_path / "mlflow.db") == "FAILED"
    resumed = subprocess.run([sys.executable, "-m", "ddl", *CFG, "tracking=off", f"out_dir={out}",
                              "checkpoint.resume=auto"], cwd=tmp_path, env=clean_env(),
                             capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from" in (out / "train.log").read_text()


def test_a_stall_that_ends_the_job_goes_to_whoever_waits_for_it_else_the_watch_ends_the_job():
    import socket

    from ddl.parallel import StallPolicy
    from ddl.parallel.watchdog import StalledError, Watch

    def watch(aborted: list) -> Watch:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return Watch(0, 2, Beacon(), StallPolicy(1.0, "abort"), sock, [], b"t" * 16, aborted.append)

    alone, aborted = watch([]), []                 # nobody waits in ending(): the watch ends the job
    alone.abort = aborted.append
    alone.end(7, "epoch 1 step 3", 1.0, [1])
    assert aborted == [1] and isinstance(alone.stalled, StalledError)
    assert "epoch 1 step 3 did not complete within 1 s: rank(s) [1] did not arrive" in str(alone.stalled)

    taken, aborted = watch([]), []
    taken.abort = aborted.append
    got = []
    waiter = threading.Thread(target=lambda: got.append(taken.ending()))
    waiter.start()
    ender = threading.Thread(target=taken.end, args=(7, "epoch 1 step 3", 1.0, [1]), daemon=True)
    ender.start()
    waiter.join(5)
    assert isinstance(got[0], StalledError) and aborted == []     # the taker ends the job itself
    taken.stop()                                                   # here: it ended its run instead
    ender.join(5)
    stopped = watch([])
    stopped.stop()
    assert stopped.ending() is None                                # a watch that stops: None at once


def test_a_host_whose_every_rank_is_silent_is_named_as_a_host():
    from ddl.parallel.watchdog import Beat, silent_hosts

    beats = {1: Beat(5, False, "h1", 11, 99.0), 2: Beat(5, False, "h2", 12, 90.0),
             3: Beat(5, False, "h2", 13, 91.0), 4: Beat(5, False, "h3", 14, 91.0),
             5: Beat(5, False, "h3", 15, 99.5)}
    # h2: both ranks silent for 9-10 s; h3: one of its two still beating; h1 is rank 0's own
    assert silent_hosts(beats, 100.0, 4.0, "h1") == ["h2 (ranks 2-3)"]
    assert silent_hosts(beats, 100.0, 4.0, "h2") == []
