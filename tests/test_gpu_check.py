"""scripts/gpu_check.sh --dry-run: the GPU check's every step, on NumPy, ends with its table; --out
gets two files (the table and a tarball of the logs), and the budget bounds the whole script.
CI also runs it with --wheels in a fresh venv like the GPU machines' (.ci/run)."""
from __future__ import annotations

import re
import tarfile

from helpers import REPO, clean_env, run_cmd

STEPS = ("versions", "tests", "1gpu", "bench", "2rank-host", "2rank-nccl")


def test_the_gpu_check_dry_run_passes_every_step_and_prints_the_table(tmp_path):
    code, out, err = run_cmd(["bash", REPO / "scripts" / "gpu_check.sh", "--dry-run", "--out",
                              tmp_path], timeout=300, env=clean_env(PYTHON=__import__("sys").executable))
    assert code == 0, out + err
    table = out[out.index("ddl GPU check (dry run on NumPy)"):]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| (\S+)\s+\| (\w+)\s+\|", table, re.M)}
    assert [s for s in rows if s != "step"] == list(STEPS), table
    assert all(rows[s] in ("PASS", "SKIP") for s in STEPS), table
    for step in ("1gpu", "2rank-host", "2rank-nccl"):   # each compared its final parameters
        line = next(x for x in table.splitlines() if x.startswith(f"| {step} "))
        assert float(line.split("max relative difference ")[1].split()[0]) <= 1e-9, line
    assert (tmp_path / "table.md").read_text() in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-check-logs.tar.gz", "table.md"]
    with tarfile.open(tmp_path / "gpu-check-logs.tar.gz") as logs:
        nccl = logs.extractfile("logs/2rank-nccl.log").read().decode()
    assert nccl.count("done:") == 1                     # rank 0's last line: one world of 2


def test_the_budget_bounds_the_whole_check(tmp_path):
    # 25 s leaves less than a step's 20 s minimum once the 15 s reserved for the table are set
    # aside: every step is skipped, saying why, and the table still comes
    code, out, err = run_cmd(["bash", REPO / "scripts" / "gpu_check.sh", "--dry-run", "--budget", "25",
                              "--out", tmp_path], timeout=60, env=clean_env(PYTHON=__import__("sys").executable))
    assert code == 0, out + err
    table = out[out.index("ddl GPU check (dry run on NumPy)"):]
    rows = re.findall(r"^\| (\S+)\s+\| (\w+)\s+\|\s+\d+ \| (.*)$", table, re.M)
    assert [r[0] for r in rows] == list(STEPS), table
    assert all(r[1] == "SKIP" and "the budget of 25 s is spent" in r[2] for r in rows), table


def test_a_failing_step_is_a_fail_row_and_the_script_carries_on(tmp_path):
    # An interpreter that cannot run ddl: every step fails, the table still comes, status 1.
    code, out, err = run_cmd(["bash", REPO / "scripts" / "gpu_check.sh", "--dry-run", "--out",
                              tmp_path], timeout=120, env=clean_env(PYTHON="false"))
    assert code == 1, out + err
    assert re.search(r"^\| bench\s+\| FAIL", out, re.M) and re.search(r"^\| 1gpu\s+\| FAIL", out, re.M)
