"""Data-parallel training under real `mpiexec`: N ranks give the 1-rank model.

Tolerance: parameters and per-epoch costs of an N-rank run equal the 1-rank run's within 1e-10
relative (float64). They are not bit-identical because the allreduce sums in a different order.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

from helpers import clean_env, ddl_train, load_final, run_cmd

pytestmark = pytest.mark.mpi

COMMON = ["tracking=off", "data=synthetic", "data.m=301", "data.n_x=5", "data.classes=3",
          "model.hidden=[8,6]", "train.dtype=float64", "train.epochs=3", "train.batch_size=32",
          "train.progress=false"]
CASES = {
    "l2-momentum": ["optimizer=momentum", "model.l2=0.3"],
    "dropout-adam": ["optimizer=adam", "model.keep_prob=0.8"],
    "batchnorm-rmsprop": ["optimizer=rmsprop", "model.batchnorm=true", "data.normalize=true"],
    "compiled-pass-l2-adam-tanh": ["optimizer=adam", "model.l2=0.3", "model.activation=tanh",
                                   "train.compiled_pass=on"],
}
RTOL = 1e-10


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.mark.parametrize("case", sorted(CASES))
def test_n_ranks_equal_one_rank(case, tmp_path):
    runs = {}
    for n in (1, 2, 3, 4):
        out = tmp_path / f"n{n}"
        code, so, se = ddl_train(n, *COMMON, *CASES[case], f"out_dir={out}", cwd=tmp_path)
        assert code == 0, f"-n {n} failed:\n{so}\n{se}"
        compiled = "train.compiled_pass=on" in CASES[case]        # the run-directory line says which pass
        assert ("forward and backward in one compiled call" in so + se) == compiled, so + se
        runs[n] = load_final(out)
    ref, ref_meta = runs[1]
    assert len(ref_meta["history"]) == 3
    for n in (2, 3, 4):
        arrays, meta = runs[n]
        assert sorted(arrays) == sorted(ref)
        for k in ref:
            if not k.startswith("norm/"):
                assert rel_diff(arrays[k], ref[k]) < RTOL, f"{case}: {k} differs at -n {n}"
        for r, r1 in zip(meta["history"], ref_meta["history"]):
            for key in ("train_cost", "dev_cost", "train_error", "dev_error"):
                assert r[key] == pytest.approx(r1[key], rel=RTOL, abs=1e-12), (case, n, key)


FAULT = ["tracking=off", "data=synthetic", "data.m=3000", "data.n_x=5", "model.hidden=[8]",
         "train.epochs=5", "train.batch_size=60", "train.progress=false"]


def faulty(tmp_path, n, rank, call, kind, *extra, timeout=30):
    from helpers import SCRIPTS_DIR, mpiexec, run_cmd
    import sys

    cmd = [mpiexec(), "-n", n, sys.executable, SCRIPTS_DIR / "faulty_train.py", rank, call, kind,
           *FAULT, f"out_dir={tmp_path / 'run'}", *extra]
    return run_cmd(cmd, timeout=timeout, cwd=tmp_path)


def test_exception_on_one_rank_ends_the_job_promptly(tmp_path):
    import time

    t0 = time.monotonic()
    code, out, err = faulty(tmp_path, 3, 1, 30, "raise")
    assert time.monotonic() - t0 < 30
    assert code != 0
    text = out + err
    assert "[rank 1]" in text and "injected fault" in text, text


def test_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    code, out, err = faulty(tmp_path, 3, 2, 30, "nan")
    text = out + err
    assert code != 0
    assert "NonFiniteError" in text and "epoch 0, step 29" in text, text
    assert "Traceback" not in err, "the user sees one paragraph, the traceback goes to train.log"
    assert "Traceback" in (tmp_path / "run" / "train.log").read_text()


def test_nan_on_one_rank_is_skipped_everywhere_when_asked(tmp_path):
    code, out, err = faulty(tmp_path, 3, 2, 30, "nan", "train.on_nonfinite=skip")
    assert code == 0, out + err
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert '"skipped_steps": 1' in summary


def test_gradient_check_of_the_global_cost_under_three_ranks(tmp_path):
    import sys

    from helpers import SCRIPTS_DIR, mpiexec, run_cmd

    code, out, err = run_cmd([mpiexec(), "-n", 3, sys.executable, SCRIPTS_DIR / "gradcheck_dist.py"],
                             timeout=60, cwd=tmp_path)
    assert code == 0, out + err
    diff, gap = (float(v) for v in out.split("GRADCHECK")[1].split()[:2])
    assert diff < 1e-7, f"relative difference {diff}"
    assert gap < 1e-12, f"the 3-rank gradient differs from the 1-rank one by {gap}"


@pytest.mark.parametrize("n", [1, 2])
def test_one_gradient_allreduce_per_step(tmp_path, n):
    import json
    import sys

    from helpers import SCRIPTS_DIR, mpiexec, run_cmd

    code, out, err = run_cmd([mpiexec(), "-n", n, sys.executable, SCRIPTS_DIR / "count_allreduce.py"],
                             timeout=60, cwd=tmp_path)
    assert code == 0, out + err
    payload, steps = out.split("COUNTS ", 1)[1].strip().rsplit(" ", 1)
    counts = json.loads(payload)
    # 3 epochs x ceil(203 / 20) steps; a world of one calls no collective in the step
    assert int(steps) == 33 and counts.get("grad", 0) == (33 if n > 1 else 0), counts
    # Besides the gradient: one small reduction at the start (the parameter check, N > 1 only)
    # and one per evaluated split at the end (train; no dev split here).
    assert sum(counts.values()) == counts.get("grad", 0) + (n > 1) + 1, counts


# ---- the step's variants: the optimizer sharded across ranks ----------------------------------
# Sharded, the blocks are updated alone and allgathered (on one node: through shared memory,
# unless train.shared_memory=off). All differ from one rank only in the order of the gradient
# sums, as above: the same 1e-10 relative (float64), against a 1-rank unsharded run.
VARIANTS = {
    "sharded-adam-l2-dropout-portable": ["optimizer=adam", "model.l2=0.3", "model.keep_prob=0.8",
                                         "train.fused_update=off", "train.shard_optimizer=on"],
    "sharded-momentum-l2-batchnorm-fused": ["optimizer=momentum", "model.l2=0.3", "model.batchnorm=true",
                                            "data.normalize=true", "train.fused_update=on",
                                            "train.shard_optimizer=on"],
    "sharded-rmsprop-l2-through-mpi": ["optimizer=rmsprop", "model.l2=0.3", "train.shared_memory=off",
                                       "train.shard_optimizer=on"],
}


def assert_same_model(arrays, ref, what):
    assert sorted(arrays) == sorted(ref), what
    for k in ref:
        assert arrays[k].shape == ref[k].shape, f"{what}: {k} has shape {arrays[k].shape}"
        if not k.startswith("norm/"):
            assert rel_diff(arrays[k], ref[k]) < RTOL, f"{what}: {k} differs"


@pytest.mark.parametrize("case", sorted(VARIANTS))
def test_step_variants_at_n_ranks_equal_one_rank_without_them(case, tmp_path):
    # [5, 8, 6, 3] has 123 parameters: blocks of 32 (aligned to 16), at 4 ranks the last has 27
    extra = [*COMMON, *VARIANTS[case][:-1], "checkpoint.every=3"]
    code, so, se = ddl_train(1, *extra, "train.shard_optimizer=off", f"out_dir={tmp_path / 'ref'}",
                             cwd=tmp_path)
    assert code == 0, so + se
    ref, _ = load_final(tmp_path / "ref")
    ref_ckpt = dict(np.load(tmp_path / "ref" / "checkpoints" / "ckpt-e000003-s000000.npz"))
    ref_ckpt.pop("meta/json")
    for n in (1, 2, 3, 4):
        out = tmp_path / f"n{n}"
        code, so, se = ddl_train(n, *extra, VARIANTS[case][-1], f"out_dir={out}", cwd=tmp_path)
        assert code == 0, f"-n {n} failed:\n{so}\n{se}"
        said = {"sharded": f"optimizer sharded across {n} ranks"}
        assert (said[case.split("-")[0]] in so + se) == (n > 1), so + se    # the run-directory line
        shm = "through the node's shared memory" in so + se    # the sharded step without MPI's
        assert shm == (n > 1 and case.startswith("sharded") and "mpi" not in case), so + se
        assert_same_model(load_final(out)[0], ref, f"{case} at -n {n}")
        # the checkpoint holds the whole optimizer state (gathered from every rank's block)
        ckpt = dict(np.load(out / "checkpoints" / "ckpt-e000003-s000000.npz"))
        ckpt.pop("meta/json")
        assert_same_model(ckpt, ref_ckpt, f"{case} checkpoint at -n {n}")


def test_a_sharded_checkpoint_resumes_on_another_world_size(tmp_path):
    extra = [k for k in COMMON if not k.startswith("train.epochs=")] + [
        "optimizer=adam", "model.l2=0.3", "checkpoint.every=1", "train.shard_optimizer=on"]
    code, so, se = ddl_train(1, *extra, "train.epochs=4", "train.shard_optimizer=off",
                             f"out_dir={tmp_path / 'ref'}", cwd=tmp_path)
    assert code == 0, so + se
    run = f"out_dir={tmp_path / 'run'}"
    code, so, se = ddl_train(3, *extra, "train.epochs=2", run, cwd=tmp_path)      # 3 ranks: 2 epochs
    assert code == 0, so + se
    code, so, se = ddl_train(2, *extra, "train.epochs=4", "checkpoint.resume=auto", run, cwd=tmp_path)
    assert code == 0, so + se                                                    # 2 ranks: the rest
    assert "resuming from" in so + se and "epoch 2, step 0" in so + se, so + se
    assert_same_model(load_final(tmp_path / "run")[0], load_final(tmp_path / "ref")[0], "resumed")


@pytest.mark.parametrize("settings, says", [
    (["train.shard_optimizer=on", "train.on_stall=abort"], "on needs train.on_stall=wait"),
    (["train.shared_memory=on"], "train.shared_memory='on': must be auto or off"),
    (["train.compiled_pass=on", "model.keep_prob=0.8"], "on needs a plain dense network on the NumPy backend"),
])
def test_step_variants_that_cannot_work_are_refused_before_any_work(tmp_path, settings, says):
    out = tmp_path / "run"
    code, so, se = ddl_train(2, *COMMON, *settings, f"out_dir={out}", cwd=tmp_path)
    assert code != 0
    assert "bad config" in se and says in se, se
    assert "Traceback" not in se and not out.exists()


@pytest.mark.parametrize("kind, extra", [("nan", ["train.on_nonfinite=skip"]), ("nan", []), ("raise", [])])
def test_faults_on_one_rank_with_the_optimizer_sharded(tmp_path, kind, extra):
    # every rank learns the verdict from the reduce-scatter's tail and skips or stops at the same
    # step; a rank that raises ends the job (the others wait in a polled collective)
    code, out, err = faulty(tmp_path, 3, 2, 30, kind, "train.shard_optimizer=on", *extra)
    text = out + err
    if extra:
        assert code == 0, text
        assert '"skipped_steps": 1' in (tmp_path / "run" / "summary.json").read_text()
    elif kind == "nan":
        assert code != 0 and "NonFiniteError" in text and "epoch 0, step 29" in text, text
    else:
        assert code != 0 and "[rank 2]" in text and "injected fault" in text, text


def test_a_bad_value_in_one_point_of_a_two_rank_sweep_fails_that_point_only(tmp_path):
    # optimizer.lr=-1 is refused by the early config check on rank 0, before the point is sent to
    # the other ranks: every other point runs, and the table has all three
    code, so, se = ddl_train(2, "-m", "optimizer.lr=0.01,-1,0.05", "data=moons", "train.epochs=2",
                             "train.progress=false", "tracking=off", cwd=tmp_path)
    text = so + se
    assert code == 1 and "MPI_Abort" not in text and "Abort(" not in text, text
    assert "bad config: optimizer/schedule config (optimizer.name=adam, optimizer.lr=-1" in text, text
    assert "[3/3] done" in text and "1 sweep point(s) failed: optimizer.lr=-1" in text, text
    table = text[text.index("sweep results, best first"):]
    assert table.count("FINISHED") == 2 and table.count("FAILED") == 1, table


def test_a_node_without_room_for_the_shared_buffers_warns_once_and_reduces_through_mpi(tmp_path):
    """/dev/shm of 48 MiB (room for MPI's own 32 MiB, not for the 70 MB of a [784, 2048, 2048, 10]
    sharded step's buffers): one warning from rank 0 before the first step, then the run goes
    through MPI, sharded still, and ends as usual."""
    import shlex

    from helpers import mpiexec

    out = tmp_path / "run"
    ddl = shlex.join([mpiexec(), "-n", "2", sys.executable, "-m", "ddl", "data=synthetic", "data.m=256",
                      "data.n_x=784", "data.classes=10", "model.hidden=[2048,2048]", "train.epochs=1",
                      "train.batch_size=128", "train.progress=false", "tracking=off", f"out_dir={out}"])
    script = f"mount -t tmpfs -o size=48m tmpfs /dev/shm && exec {ddl}"
    code, so, se = run_cmd(["unshare", "-m", "sh", "-c", script], cwd=tmp_path, timeout=300, env=clean_env())
    text = so + se
    assert code == 0, text
    assert text.count("too little room for the sharded step's buffers") == 1, text
    assert "optimizer sharded across 2 ranks" in text and "through the node's shared memory" not in text, text
    assert (out / "final.npz").is_file()
