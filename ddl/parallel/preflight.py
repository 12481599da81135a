"""Start-up checks of the launch against the scheduler, before any work: the classic mistakes
are `srun` without an MPI plugin (N separate 1-rank jobs, each training alone on all the data)
and more ranks on a node than it has GPUs."""
from __future__ import annotations

import os
from pathlib import Path


class LaunchError(RuntimeError):
    """The job was launched in a way that would silently train the wrong thing."""


def check_launch(size: int, local_size: int, gpus: int, backend: str, env=None,
                 allreduce: str = "auto", local_rank: int = 0, gpu_reason: str = "") -> list[str]:
    """Raise LaunchError for a fatal mismatch; return warnings (strings) for the rest.

    size/local_size/local_rank: MPI world size, ranks on this node and this one's place among
    them; gpus: visible GPUs on this node (gpu_reason: why none, if none); backend, allreduce: the
    configured names; env: the environment (default os.environ).
    """
    env = os.environ if env is None else env
    step_tasks = _int(env.get("SLURM_STEP_NUM_TASKS"))
    job_tasks = _int(env.get("SLURM_NTASKS"))
    if step_tasks and step_tasks > 1 and size == 1:
        raise LaunchError(
            f"SLURM started {step_tasks} tasks but each sees an MPI world of 1: srun launched "
            f"{step_tasks} separate 1-rank trainings. Use `srun --mpi=pmi2` (the pip mpich wheel "
            f"speaks PMI-2) or `mpiexec -n $SLURM_NTASKS` inside the allocation.")
    warnings = []
    if job_tasks and size not in (1, job_tasks) and not step_tasks:
        warnings.append(f"the SLURM allocation has {job_tasks} tasks but the MPI world has "
                        f"{size} ranks")
    if allreduce == "nccl" and gpus and local_size > gpus and not env.get("NCCL_HOSTID"):
        raise LaunchError(
            f"allreduce=nccl with {local_size} ranks on this node but {gpus} GPU(s): rank "
            f"{local_rank} would share GPU {local_rank % gpus} with another rank, and NCCL refuses "
            f"two ranks on one GPU (\"Duplicate GPU detected\"). Launch at most {gpus} rank(s) per "
            f"node (--gpus-per-task=1), or use allreduce=host.")
    if gpus and backend in ("auto", "cupy") and local_size > gpus:
        warnings.append(f"{local_size} ranks on this node share {gpus} GPU(s): ranks are bound "
                        f"to GPU local_rank % {gpus}; ask for --gpus-per-task=1 or fewer tasks")
    if backend == "cupy" and gpus == 0:
        from ddl.backend import NO_CUPY, cupy_package_hint  # noqa: PLC0415

        if gpu_reason == NO_CUPY:
            raise LaunchError(f"backend=cupy but CuPy is not installed: {cupy_package_hint()}; or "
                              "use backend=auto (NumPy where there is no GPU)")
        why = f" ({gpu_reason})" if gpu_reason else ""
        raise LaunchError(f"backend=cupy but this node has no visible GPU{why}: check "
                          f"--gpus-per-task and CUDA_VISIBLE_DEVICES, or use backend=auto")
    return warnings


def _int(v) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def code_fingerprint(root: Path = Path(__file__).resolve().parents[1]) -> str:
    """ddl as installed where this rank runs: its release (ddl/__init__.py's __version__) and a
    hash of its sources ('0.1.0 (sources 3f2a9c01d4)'): a host with another release, or a stale
    checkout of the same one, differs."""
    import hashlib  # noqa: PLC0415
    import re  # noqa: PLC0415

    release = re.search(r'^__version__ = "([^"]+)"', (root / "__init__.py").read_text(), re.M)
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return f"{release.group(1) if release else 'unknown'} (sources {h.hexdigest()[:10]})"


def file_fingerprint(path: str, edge: int = 1 << 20) -> str:
    """A cheap identity of a data file: its size and a hash of its first and last `edge` bytes
    (the same file copied to every host agrees; another version of it almost never does)."""
    import hashlib  # noqa: PLC0415

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(edge)
            f.seek(max(size - edge, 0))
            tail = f.read(edge)
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    return f"{size} bytes, {hashlib.sha256(head + tail).hexdigest()[:12]}"


def disagreements(facts: list, rank0_host: str) -> str:
    """What the hosts of a job disagree on: facts is [(rank, host, {name: value})] of every rank;
    each host whose ranks see another value than rank 0 is named with both values ('' when all
    agree). A host of another ddl release or data file trains another model, or fails later."""
    ref = next(f for r, _, f in facts if r == 0)
    seen: dict = {}
    for rank, host, fact in facts:
        for name, value in fact.items():
            if value != ref.get(name):
                seen.setdefault((host, name, value), []).append(rank)
    from ddl.parallel.nodes import rank_list  # noqa: PLC0415

    said = [f"{name} on host {host} ({rank_list(ranks)}) is {value}, on {rank0_host} (rank 0) "
            f"{ref.get(name)}" for (host, name, value), ranks in seen.items()]
    return "; ".join(said)


def check_hosts_agree(comm, data_where: str) -> None:
    """Collective where the job spans several hosts: every rank runs the same ddl on the same data
    file (`data_where`, when it is one), or all refuse before any work (a LaunchError naming the
    host that differs)."""
    if comm.nodes.count < 2:
        return
    facts = {"ddl": code_fingerprint()}
    if os.path.isfile(data_where):
        facts[f"the data file {data_where}"] = file_fingerprint(data_where)
    nodes = comm.nodes
    problem = disagreements(comm.allreduce_obj([(comm.rank, nodes.host_of[comm.rank], facts)], op="sum"),
                            nodes.host_of[0])
    if problem:
        raise LaunchError(f"the hosts of this job disagree: {problem}. Install the same ddl and "
                          "data on every host (or share them), then launch again")
