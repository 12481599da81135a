"""The stall watch: a thread per rank that sleeps, wakes every few seconds, costs the step nothing,
and names the ranks a collective is waiting for, in every launch shape and with every transport.

Where a rank is: its `Beacon`, the number of collectives it has entered and since when it waits in
the current one (two stores around each collective, in Comm.timed and the other collectives). A
device collective that is only queued (NCCL) counts as waiting until its CUDA event completes, as
in PyTorch's NCCL watchdog. The collectives themselves are untouched: blocking stays blocking.

How rank 0 learns where the others are: every rank's watch sends rank 0 a heartbeat (its beacon,
host and pid) over UDP every `beat` seconds. The channel shares nothing with a stuck collective (not
MPI's progress engine, not NCCL's rings) and needs no collective once it is set up; a lost datagram
is only a late beat. It is one path for every shape: on one node the heartbeats go over loopback,
across nodes to the IPv4 addresses of rank 0's interfaces (the network MPI's own TCP connections
use), with a random token, broadcast at the start, that keeps out stray datagrams. Shared memory on
a node would need a second path across nodes, and the shared filesystem caches attributes for a
minute; UDP needs neither.

What rank 0 decides once it has waited `timeout` seconds in one collective (`verdict`): a rank whose
beacon is behind its own has not arrived; a rank whose heartbeats stopped (SIGSTOP, a hard hang, a
dead node) neither; when every rank has arrived, the transport itself is stuck. on_stall=wait: a
warning, again every timeout. on_stall=abort: the collective is held (a rank that completes it
after all parks before it touches any state) and the StalledError goes to whoever waits for it in
`ending()` (the runner, on a thread of its own: it writes the checkpoint of the state before the
stalled step and ends its run FAILED); then the job ends (MPI_Abort, from this thread: the main
thread may be inside a blocking MPI call). Nothing here calls up into the runner.
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

log = logging.getLogger("ddl")
LAST_WORDS_S = 60.0          # the most the runner's last words may take before the job ends anyway
_BEAT = struct.Struct("!16sIQdI")     # token, rank, collectives entered, seconds waiting (-1: not), pid
_SIOCGIFADDR = 0x8915


class StalledError(RuntimeError):
    """A collective did not complete within train.stall_timeout and train.on_stall=abort."""


class Beacon:
    """Where this rank is. Written by the main thread around each collective, read by the watch."""

    __slots__ = ("seq", "since", "held", "queued")

    def __init__(self) -> None:
        self.seq = 0              # collectives entered
        self.since = 0.0          # perf_counter() when this rank began waiting in collective `seq`; 0: not waiting
        self.held = False         # set by the watch ending the job: no rank leaves a collective after
        self.queued = None        # (seq, since, done) of the oldest device collective still queued

    def enter(self, now: float) -> None:
        self.seq += 1
        self.since = now

    def leave(self) -> None:
        self.since = 0.0
        if self.held:             # the job is ending with the state from before this collective
            threading.Event().wait()

    def queue(self, done: Callable[[], bool]) -> None:
        """The collective this rank is in was only queued on its device; `done()` says whether it
        has completed there."""
        if self.queued is None or self.queued[2]():
            self.queued = (self.seq, self.since, done)

    def waiting(self, now: float) -> Optional[tuple[int, float]]:
        """(the collective this rank waits in, seconds so far), or None."""
        if self.queued is not None:
            seq, since, done = self.queued
            if not done():
                return seq, now - since
            self.queued = None
        since = self.since
        return (self.seq, now - since) if since else None

    def hold(self, seq: int) -> bool:
        """Keep this rank from leaving collective `seq`; False (nothing held) if it already has."""
        self.held = True
        still = self.waiting(time.perf_counter())
        if still is None or still[0] != seq:
            self.held = False
            return False
        return True


@dataclass
class Beat:
    """The last heartbeat rank 0 has of a rank."""

    seq: int
    waiting: float            # seconds it had waited in collective `seq` (-1: not waiting)
    host: str
    pid: int
    heard: float              # rank 0's perf_counter() when it arrived


def verdict(seq: int, beats: dict, size: int, now: float, silent_s: float) -> dict:
    """Rank 0 waits in collective `seq`: which ranks have not arrived, and why, from `beats`
    ({rank: Beat}) -> {rank: reason}. Empty: every rank has arrived (the transport is stuck)."""
    missing = {}
    for r in range(1, size):
        b = beats.get(r)
        if b is None:
            missing[r] = "no heartbeat has reached rank 0 from it"
        elif now - b.heard > silent_s:
            missing[r] = (f"on {b.host} (pid {b.pid}): no heartbeat for {now - b.heard:.0f} s, "
                          "stopped or hung hard")
        elif b.seq < seq:
            missing[r] = f"on {b.host} (pid {b.pid}): still before this collective, alive"
    return missing


def silent_hosts(beats: dict, now: float, silent_s: float, own_host: str) -> list[str]:
    """The hosts (not rank 0's own) none of whose ranks has beaten for silent_s: the host, or its
    link, is down ('h2 (ranks 2-3)')."""
    from ddl.parallel.nodes import rank_list  # noqa: PLC0415

    by_host: dict = {}
    for r, b in beats.items():
        by_host.setdefault(b.host, []).append((r, now - b.heard > silent_s))
    return [f"{host} ({rank_list(sorted(r for r, _ in ranks))})" for host, ranks in sorted(by_host.items())
            if host != own_host and all(silent for _, silent in ranks)]


class Watch:
    """The watch thread of one rank of a run's communicator."""

    def __init__(self, rank: int, size: int, beacon: Beacon, policy, sock, targets: list, token: bytes,
                 abort: Callable[[int], None]):
        self.rank, self.size, self.beacon, self.policy = rank, size, beacon, policy
        self.sock, self.targets, self.token, self.abort = sock, targets, token, abort
        self.host = socket.gethostname()
        self.beat = min(max(policy.timeout / 4, 0.25), 2.0)
        self.silent_s = 4 * self.beat
        self.beats: dict[int, Beat] = {}
        self.stopped = threading.Event()
        self.decided, self.taken = threading.Event(), threading.Event()   # on_stall=abort's hand-over
        self.stalled: Optional[StalledError] = None
        self.thread = threading.Thread(target=self.run, name=f"ddl-stall-watch-{rank}", daemon=True)

    @classmethod
    def start(cls, mpi, rank: int, size: int, one_node: bool, beacon: Beacon, policy,
              abort: Callable[[int], None]) -> "Watch":
        """Collective over mpi4py communicator `mpi`: rank 0 opens the heartbeats' socket and every
        rank learns where it is."""
        sock, where = None, None
        if rank == 0:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1" if one_node else "0.0.0.0", 0))
            where = (["127.0.0.1"] if one_node else own_addresses(), sock.getsockname()[1], os.urandom(16))
        addresses, port, token = mpi.bcast(where, root=0)
        if rank != 0:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        watch = cls(rank, size, beacon, policy, sock, [(a, port) for a in addresses], token, abort)
        watch.thread.start()
        return watch

    def stop(self) -> None:
        """Local: the thread ends within a beat (never waits for other ranks)."""
        self.stopped.set()
        self.decided.set()                # whoever waits in `ending` gets None
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=2 * self.beat + 1)
        self.sock.close()

    def run(self) -> None:
        report_at, watched = None, None
        while not self.stopped.is_set():
            try:
                if self.rank != 0:
                    self.send()
                    self.stopped.wait(self.beat)
                    continue
                self.receive(self.beat)
            except OSError:               # the socket closed under us: the run is over
                return
            now = time.perf_counter()
            waiting = self.beacon.waiting(now)
            if waiting is None or waiting[1] < self.policy.timeout:
                continue
            if watched != waiting[0]:     # a new stall: report it now, then every timeout
                watched, report_at = waiting[0], now
            if now >= report_at:
                report_at = now + self.policy.timeout
                self.report(*waiting, now)

    def send(self) -> None:
        waiting = self.beacon.waiting(time.perf_counter())
        packet = _BEAT.pack(self.token, self.rank, self.beacon.seq, -1.0 if waiting is None else waiting[1],
                            os.getpid()) + self.host.encode()[:200]
        for target in self.targets:
            try:
                self.sock.sendto(packet, target)
            except OSError:                # an unreachable address of rank 0: the others may do
                pass

    def receive(self, timeout: float) -> None:
        """Rank 0: the heartbeats that arrive within `timeout` seconds."""
        end = time.perf_counter() + timeout
        while (left := end - time.perf_counter()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(512)
            except (socket.timeout, BlockingIOError):
                return
            if len(data) < _BEAT.size:
                continue
            token, rank, seq, waiting, pid = _BEAT.unpack_from(data)
            if token == self.token and 0 < rank < self.size:
                host = data[_BEAT.size:].decode(errors="replace")
                self.beats[rank] = Beat(seq, waiting, host, pid, time.perf_counter())

    def report(self, seq: int, waited: float, now: float) -> None:
        policy, where = self.policy, self.policy.position()
        missing = verdict(seq, self.beats, self.size, now, self.silent_s)
        here = sorted({self.host, *(b.host for b in self.beats.values())})
        if missing:
            why = "; ".join(f"rank {r} {reason}" for r, reason in missing.items())
            news = f"rank(s) {sorted(missing)} have not arrived ({why})"
            lost = silent_hosts(self.beats, now, self.silent_s, self.host)
            if lost:            # every rank of a host silent: the host or its link, not one process
                news = (f"host {', '.join(lost)} has gone silent, every rank there: the host or its "
                        f"network link is down; {news}")
        else:
            news = ("every rank has arrived, yet it has not completed: the transport itself is stuck "
                    "(NCCL, the network or the MPI library)")
        abort = policy.on_stall == "abort"
        log.warning("stalled: %s after %.0f s; %s. Hosts: %s. %s", where, waited, news, ", ".join(here),
                    "Ending the job with a checkpoint (train.on_stall=abort)." if abort
                    else "Still waiting (train.on_stall=wait); a stopped rank resumes where it was.")
        if abort and self.beacon.hold(seq):
            self.end(seq, where, waited, sorted(missing))

    def end(self, seq: int, where: str, waited: float, missing: list) -> None:
        """on_stall=abort: the StalledError goes to whoever waits for it (`ending`: the runner,
        which writes its checkpoint, ends its run and then the job), the collective held meanwhile;
        the job ends here if nobody takes it within a second, or takes longer than LAST_WORDS_S."""
        self.stalled = StalledError(
            f"{where} did not complete within {waited:.0f} s: rank(s) {missing or '?'} did not arrive "
            "(train.on_stall=abort; the last consistent state is checkpointed: resume with "
            "checkpoint.resume=auto)")
        self.decided.set()
        if self.taken.wait(1.0) and not self.stopped.wait(LAST_WORDS_S):
            log.error("the stalled job's checkpoint and tracking did not finish within %.0f s (a "
                      "device stuck under them?); ending the job without them", LAST_WORDS_S)
        self.abort(1)

    def ending(self) -> Optional[StalledError]:
        """Wait until this watch decides that a stall ends the job (on_stall=abort): its
        StalledError, the stalled collective held; None once the watch stops."""
        self.decided.wait()
        if self.stalled is not None:
            self.taken.set()
        return self.stalled


def own_addresses() -> list[str]:
    """This host's IPv4 addresses other hosts may reach (not loopback), from its interfaces."""
    found = []
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:           # an interface without an IPv4 address
                continue
            address = socket.inet_ntoa(raw[20:24])
            if not address.startswith("127.") and address not in found:
                found.append(address)
    finally:
        probe.close()
    return found or ["127.0.0.1"]
