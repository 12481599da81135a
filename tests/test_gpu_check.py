"""scripts/gpu_check.sh --dry-run: the GPU check's every step, on NumPy, ends with its table."""
from __future__ import annotations

import re

from helpers import REPO, clean_env, run_cmd

STEPS = ("versions", "tests", "1gpu", "2rank-host", "2rank-nccl", "bench")


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
    assert (tmp_path / "2rank-nccl.log").read_text().count("done:") == 1   # rank 0's last line


def test_a_failing_step_is_a_fail_row_and_the_script_carries_on(tmp_path):
    # An interpreter that cannot run ddl: every step fails, the table still comes, status 1.
    code, out, err = run_cmd(["bash", REPO / "scripts" / "gpu_check.sh", "--dry-run", "--out",
                              tmp_path], timeout=120, env=clean_env(PYTHON="false"))
    assert code == 1, out + err
    assert re.search(r"^\| bench\s+\| FAIL", out, re.M) and re.search(r"^\| 1gpu\s+\| FAIL", out, re.M)
