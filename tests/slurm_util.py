"""Helpers for tests on the real single-node SLURM (scripts/slurm_up.sh)."""
import re
import subprocess
import time

import pytest

TIMEOUT = 120.0  # seconds any one job may take, queueing and requeue delay included


def run(*cmd: str) -> str:
    """Run a SLURM client command; its stdout, raising with stderr on failure."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"{' '.join(cmd)} failed: {out.stderr.strip()}"
    return out.stdout


def cluster_up() -> None:
    """Fail (not skip) with a hint if sbatch exists but no controller or idle node answers."""
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    states = out.stdout.split()
    assert out.returncode == 0 and set(states) & {"idle", "mix", "alloc", "comp"}, (
        f"SLURM is not up (sinfo: {out.stderr.strip() or states}); run `bash scripts/slurm_up.sh`")


def wait_until(cond, what: str, job: str, timeout: float = TIMEOUT) -> None:
    """Poll cond() every 0.25 s; on timeout cancel `job` and fail naming `what`."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            subprocess.run(["scancel", job], timeout=30)
            pytest.fail(f"job {job}: {what} not seen within {timeout:.0f} s")
        time.sleep(0.25)


def gone(job: str) -> bool:
    """True once squeue no longer lists any part of the job (array tasks included)."""
    out = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:  # a purged job id is an error; anything else (controller busy) means "ask again"
        return "Invalid job id" in out.stderr
    return not out.stdout.strip()


def finished(job: str) -> list[dict[str, str]]:
    """Wait for the job to leave the queue; JobState/ExitCode/Restarts of each record (array tasks)."""
    wait_until(lambda: gone(job), "completion", job)
    records = run("scontrol", "-o", "show", "job", job).strip().splitlines()
    return [dict(re.findall(r"(JobState|ExitCode|Restarts)=(\S+)", rec)) for rec in records]
