"""Start-up checks of the launch against the scheduler, before any work: the classic mistakes
are `srun` without an MPI plugin (N separate 1-rank jobs, each training alone on all the data)
and more ranks on a node than it has GPUs."""
from __future__ import annotations

import os


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
