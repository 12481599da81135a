"""Smoke tests of the real single-node SLURM started by `bash scripts/slurm_up.sh`.

They check what the ddl batch scripts rely on: one MPI world across `srun --mpi=pmi2` tasks,
job arrays, and the requeue paths used for checkpoint-and-resume (SLURM_RESTART_COUNT increments).
Skipped when `sbatch` is not on PATH; fail with a hint when sbatch exists but the cluster is down.
"""
import shutil
import sys

import pytest

from slurm_util import TIMEOUT, cluster_up, finished, gone, run, wait_until  # noqa: F401

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(shutil.which("sbatch") is None,
                       reason="sbatch not on PATH (run `bash scripts/slurm_up.sh` to get a SLURM)"),
]

# Training stand-in for the srun tasks, written by the batch script: on SIGUSR1 it "checkpoints", exits 75.
STEP_PY = """cat > step.py <<'PY'
import os, signal, sys, time
rank = os.environ["SLURM_PROCID"]
def on_usr1(signum, frame):
    with open("runs.txt", "a") as f:
        f.write(f"checkpoint {rank}\\n")
    sys.exit(75)
signal.signal(signal.SIGUSR1, on_usr1)
with open("ready.txt", "a") as f:
    f.write(rank + " ")
time.sleep(300)
PY
"""
RESUME = 'echo "run ${SLURM_RESTART_COUNT:-0}" >> runs.txt\n[ "${SLURM_RESTART_COUNT:-0}" -ge 1 ] && exit 0\n'


@pytest.fixture(scope="module", autouse=True)
def _cluster():
    cluster_up()


def submit(tmp_path, body: str, *opts: str) -> str:
    """Write `body` as a batch script in tmp_path, submit it from there; the job id.
    Jobs run as the submitting user, so they can write to pytest's tmp_path."""
    script = tmp_path / "job.sbatch"
    script.write_text("#!/bin/bash\nset -u\n" + body)
    return run("sbatch", "--parsable", f"--chdir={tmp_path}", "--output=slurm-%j.out",
               *opts, str(script)).strip().split(";")[0]


def test_srun_pmi2_gives_one_mpi_world_of_two(tmp_path):
    code = ("from mpi4py import MPI; c = MPI.COMM_WORLD; "
            "print(c.rank, c.size, c.allreduce(c.rank + 1), MPI.Get_library_version()[:5])")
    job = submit(tmp_path, f'srun --mpi=pmi2 {sys.executable} -c "{code}" > ranks.txt\n', "-n", "2")
    assert finished(job) == [{"JobState": "COMPLETED", "ExitCode": "0:0", "Restarts": "0"}]
    lines = sorted((tmp_path / "ranks.txt").read_text().splitlines())
    # one world: ranks 0 and 1, both size 2, and the allreduce saw both (1 + 2 = 3)
    assert lines == ["0 2 3 MPICH", "1 2 3 MPICH"], lines


def test_array_of_three_tasks_completes(tmp_path):
    job = submit(tmp_path, 'echo "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT" > task-$SLURM_ARRAY_TASK_ID.txt\n',
                 "--array=0-2")
    states = finished(job)
    assert [s["JobState"] for s in states] == ["COMPLETED"] * 3, states
    assert sorted(p.read_text().strip() for p in tmp_path.glob("task-*.txt")) == ["0/3", "1/3", "2/3"]


def runs(folder) -> list[str]:
    path = folder / "runs.txt"
    return path.read_text().splitlines() if path.exists() else []


def ready_tasks(folder) -> int:
    path = folder / "ready.txt"
    return len(path.read_text().split()) if path.exists() else 0


# The three requeue paths: name -> (batch-script body, sbatch options, trigger command, srun tasks that
# must have reported ready before triggering). Each body writes "run N" (N = SLURM_RESTART_COUNT) to
# runs.txt and finishes at once on its second run.
REQUEUE_JOBS = {
    # requeued from outside: the running job is killed (SIGTERM, SIGKILL after KillWait) and queued again
    "scontrol": (RESUME + "sleep 300\n", ["--requeue"], ["scontrol", "requeue"], 0),
    # USR1 to the batch shell (what --signal=B:USR1@N sends): its trap checkpoints and requeues the job.
    # The trap is set before "run 0" is written so the signal cannot arrive first; the work runs in the
    # background because bash runs a trap only once the foreground command returns.
    "batch_usr1": ("trap 'echo checkpoint >> runs.txt; kill $child; scontrol requeue $SLURM_JOB_ID; exit 0' USR1\n"
                   + RESUME + "sleep 300 & child=$!\nwait $child\n", ["--requeue"],
                   ["scancel", "--batch", "--signal=USR1"], 0),
    # USR1 to the srun tasks (what --signal=USR1@N sends): they checkpoint and exit 75, srun returns 75,
    # so does the script, and RequeueExit=75 in slurm.conf puts the job back in the queue.
    "step_usr1": (STEP_PY + RESUME + f"srun {sys.executable} step.py\n", ["-n", "2"],
                  ["scancel", "--signal=USR1"], 2),
}


@pytest.fixture(scope="module")
def requeued(tmp_path_factory) -> dict:
    """Submit the three requeue jobs together (they overlap, so the module waits about one requeue
    delay, AuthInfo=cred_expire=10 s), then requeue or signal each during its first run; name -> (job, dir)."""
    jobs = {}
    for name, (body, opts, _, _) in REQUEUE_JOBS.items():
        folder = tmp_path_factory.mktemp(name)
        jobs[name] = (submit(folder, body, *opts), folder)
    for name, (job, folder) in jobs.items():
        trigger, tasks = REQUEUE_JOBS[name][2:]
        wait_until(lambda: runs(folder) == ["run 0"] and ready_tasks(folder) == tasks, "first run", job)
        run(*trigger, job)
    return jobs


@pytest.mark.parametrize("name, expected", [
    ("scontrol", ["run 0", "run 1"]),
    ("batch_usr1", ["run 0", "checkpoint", "run 1"]),
    ("step_usr1", ["run 0", "checkpoint 0", "checkpoint 1", "run 1"]),
])
def test_requeued_job_runs_again_with_restart_count_1(requeued, name, expected):
    job, folder = requeued[name]
    assert finished(job) == [{"JobState": "COMPLETED", "ExitCode": "0:0", "Restarts": "1"}]
    lines = runs(folder)
    assert lines[:1] + sorted(lines[1:-1]) + lines[-1:] == expected, lines
