"""Launch checks against the scheduler's view (pure: the environment is passed in)."""
import pytest

from ddl.parallel.preflight import LaunchError, check_launch


def test_srun_without_mpi_plugin_is_refused_with_the_fix():
    env = {"SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "4"}
    with pytest.raises(LaunchError, match="srun --mpi=pmi2"):
        check_launch(size=1, local_size=1, gpus=0, backend="numpy", env=env)


def test_a_proper_launch_passes_quietly():
    env = {"SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "4"}
    assert check_launch(size=4, local_size=4, gpus=0, backend="auto", env=env) == []
    assert check_launch(size=1, local_size=1, gpus=0, backend="auto", env={}) == []


def test_more_ranks_than_gpus_on_a_node_warns():
    (w,) = check_launch(size=4, local_size=4, gpus=2, backend="auto", env={})
    assert "4 ranks on this node share 2 GPU" in w


def test_world_size_against_the_allocation_warns():
    (w,) = check_launch(size=2, local_size=2, gpus=0, backend="numpy", env={"SLURM_NTASKS": "4"})
    assert "4 tasks" in w and "2 ranks" in w


def test_cupy_without_gpu_is_refused():
    with pytest.raises(LaunchError, match="no visible GPU"):
        check_launch(size=1, local_size=1, gpus=0, backend="cupy", env={})


def test_nccl_with_more_ranks_than_gpus_is_refused_naming_rank_and_gpu():
    with pytest.raises(LaunchError, match=r"allreduce=nccl with 2 ranks on this node but 1 GPU.*rank 1 "
                                          r"would share GPU 0.*Duplicate GPU"):
        check_launch(size=2, local_size=2, gpus=1, backend="cupy", env={}, allreduce="nccl",
                     local_rank=1)
    # the testing aid (a distinct NCCL_HOSTID per rank) is let through, with the usual warning
    (w,) = check_launch(size=2, local_size=2, gpus=1, backend="cupy", env={"NCCL_HOSTID": "r1"},
                        allreduce="nccl", local_rank=1)
    assert "share 1 GPU" in w
    assert check_launch(size=2, local_size=2, gpus=2, backend="cupy", env={}, allreduce="nccl") == []


def test_cupy_without_gpu_names_the_cause():
    with pytest.raises(LaunchError, match=r"no visible GPU \(CuPy 14 found no usable device\)"):
        check_launch(size=1, local_size=1, gpus=0, backend="cupy", env={},
                     gpu_reason="CuPy 14 found no usable device")


def test_cupy_that_is_not_installed_names_the_package_to_install():
    from ddl.backend import NO_CUPY

    with pytest.raises(LaunchError, match=r"CuPy is not installed: pip install 'ddl\[gpu-cuda1"):
        check_launch(size=1, local_size=1, gpus=0, backend="cupy", env={}, gpu_reason=NO_CUPY)
