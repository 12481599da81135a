"""ddl-train's entry point (ddl/__main__.py): a tracked run's MLflow worker starts before Hydra,
NumPy, mpi4py and the runner are imported, on rank 0 only."""
import subprocess
import sys

import pytest

from ddl.__main__ import first_rank

PROBE = """
import sys
from ddl.tracking import link as remote
class Link:                     # the tracking worker's link, saying when it starts
    @staticmethod
    def start():
        print("PREWARM", [m for m in ("hydra", "mpi4py", "numpy") if m in sys.modules])
remote.Link = Link
class Cli:                      # ddl.cli, saying when it is imported (its `main` taken)
    def __getattr__(self, name):
        if name != "main":
            raise AttributeError(name)
        print("CLI")
        return lambda link=None: None
sys.modules["ddl.cli"] = Cli()
sys.argv = ["ddl-train", *sys.argv[1:]]
import ddl.__main__ as entry
entry.main()
"""


@pytest.mark.parametrize("environ, first", [
    ({}, True), ({"PMI_RANK": "0"}, True), ({"PMI_RANK": "1"}, False),
    ({"OMPI_COMM_WORLD_RANK": "2"}, False), ({"PMIX_RANK": "0", "SLURM_PROCID": "3"}, False),
    ({"SLURM_PROCID": "0"}, True),
])
def test_first_rank_from_the_launchers_environment(environ, first):
    assert first_rank(environ) is first


@pytest.mark.parametrize("args, env, says", [
    (["out_dir=x"], {}, "PREWARM []\nCLI"),               # before ddl.cli, Hydra and mpi4py load
    (["tracking=off"], {}, "CLI"),                        # an untracked run starts no worker
    (["--help"], {}, "CLI"),
    (["out_dir=x"], {"PMI_RANK": "1"}, "CLI"),            # another rank: never
])
def test_the_worker_starts_first_and_only_where_it_is_needed(args, env, says, tmp_path):
    import os

    environ = {k: v for k, v in os.environ.items() if k not in ("PMI_RANK", "OMPI_COMM_WORLD_RANK",
                                                                "PMIX_RANK", "SLURM_PROCID")}
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                         env={**environ, **env}, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == says
