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


def test_nodes_are_named_by_host_with_their_ranks():
    from ddl.parallel.nodes import Nodes

    two = Nodes((0, 0, 2, 2), ("h1", "h1", "h2", "h2"))
    assert two.count == 2 and two.leaders() == [0, 2] and not two.uneven()
    assert two.describe() == "2 hosts: h1 (ranks 0-1), h2 (ranks 2-3)"
    # a round-robin placement (mpiexec -ppn 1 twice) and a node of one rank
    odd = Nodes((0, 1, 0, 3), ("a", "b", "a", "c"))
    assert odd.describe() == "3 hosts: a (ranks 0,2), b (rank 1), c (rank 3)" and odd.uneven()


def test_hosts_that_disagree_are_named_with_both_values():
    from ddl.parallel.preflight import disagreements

    same = {"ddl": "0.1.0", "the data file d.mat": "6038 bytes, 1218828095bf"}
    other = {**same, "ddl": "0.0.9"}
    facts = [(0, "h1", same), (1, "h1", same), (2, "h2", other), (3, "h2", other)]
    assert disagreements(facts, "h1") == "ddl on host h2 (ranks 2-3) is 0.0.9, on h1 (rank 0) 0.1.0"
    assert disagreements([(r, h, same) for r, h, _ in facts], "h1") == ""


def test_node_aware_reduction_is_chosen_only_when_asked():
    from ddl.config import TrainConfig
    from ddl.parallel.nodes import Nodes
    from ddl.train.policy import node_aware

    two_by_two = Nodes((0, 0, 2, 2), ("h1", "h1", "h2", "h2"))
    one_each = Nodes((0, 1), ("h1", "h2"))
    one_node = Nodes((0, 0), ("h1", "h1"))
    auto = TrainConfig()
    # auto is flat: MPICH's allreduce is node-aware itself, and ddl's did not win (README)
    assert not any(node_aware(auto, "numpy", n) for n in (two_by_two, one_each, one_node))
    assert node_aware(TrainConfig(reduction="node"), "numpy", two_by_two)
    assert not node_aware(auto, "cupy", two_by_two)         # NCCL's or the host staging's own
    assert not node_aware(TrainConfig(reduction="flat"), "numpy", two_by_two)
    assert node_aware(TrainConfig(reduction="node"), "numpy", one_node)
    with pytest.raises(ValueError, match="train.reduction=node needs the NumPy backend"):
        node_aware(TrainConfig(reduction="node"), "cupy", two_by_two)


def test_the_code_and_data_fingerprints_tell_copies_apart(tmp_path):
    from ddl.parallel.preflight import code_fingerprint, file_fingerprint

    pkg = tmp_path / "ddl"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "1.2.3"\n')
    (pkg / "sub" / "m.py").write_text("x = 1\n")
    first = code_fingerprint(pkg)
    assert first.startswith("1.2.3 (sources ") and code_fingerprint(pkg) == first
    (pkg / "sub" / "m.py").write_text("x = 2\n")            # the same release, another source
    assert code_fingerprint(pkg) != first and code_fingerprint(pkg).startswith("1.2.3 ")
    data = tmp_path / "d.bin"
    data.write_bytes(bytes(range(256)) * 10000)
    same = tmp_path / "copy.bin"
    same.write_bytes(data.read_bytes())
    assert file_fingerprint(str(data)) == file_fingerprint(str(same)).replace("copy", "d")
    same.write_bytes(data.read_bytes()[:-1] + b"x")
    assert file_fingerprint(str(data)) != file_fingerprint(str(same))
    assert file_fingerprint(str(tmp_path / "absent")).startswith("unreadable")
