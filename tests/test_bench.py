"""scripts/bench.py: its hand-written NumPy baseline computes the course's step (the same
gradients as ddl's backward), and the suite runs end to end (no timing is asserted)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import bench  # noqa: E402

from ddl.backend import get_backend  # noqa: E402
from ddl.nn import losses, model  # noqa: E402
from ddl.params import Flat  # noqa: E402


@pytest.mark.parametrize("sizes,output", [([2, 20, 7, 5, 1], "sigmoid"), ([6, 8, 4], "softmax")])
def test_hand_written_step_has_ddls_gradients(sizes, output):
    hand = bench.HandStep(sizes, batch=16, dtype=np.float64)
    L = hand.L
    params = {f"W{l + 1}": hand.W[l].copy() for l in range(L)}
    params.update({f"b{l + 1}": hand.b[l].copy() for l in range(L)})
    backend = get_backend("numpy")
    spec = model.make_spec(sizes, "relu", output)
    flat = Flat.from_numpy(model.layout(spec), params, backend, "float64")
    X, Y = hand.X[:, :16], hand.Y[:, :16]
    labels = Y.argmax(axis=0) if output == "softmax" else Y[0]
    xp = backend.xp
    ZL, caches, _ = model.forward(xp, flat, X, spec, train=True)
    T = losses.encode_targets(xp, labels, output, sizes[-1], ZL.dtype, check=False)
    grads = model.backward(xp, losses.loss_grad(xp, ZL, T, output), caches, spec)
    hand.step(0)                                    # its gradients are means over the batch
    for l in range(L):
        np.testing.assert_allclose(hand.grads[l] * 16, grads[f"W{l + 1}"], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(hand.grads[L + l] * 16, grads[f"b{l + 1}"], rtol=1e-12, atol=1e-14)


def test_suite_runs_and_prints_its_table():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--rounds", "1",
                          "--only", "small,update"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for text in ("[small]", "vs hand-written NumPy", "train.compiled_pass=off", "ddl-train's whole loop",
                 "[update]", "vs bandwidth bound", "ratio = baseline"):
        assert text in out.stdout, out.stdout


def test_unknown_section_is_refused():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--only", "gpu"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "unknown section(s) gpu" in out.stderr


def test_scaling_model_fits_a_ring_and_interpolates_compute():
    import scaling_model as sm

    alpha, bw = 5e-6, 4e9
    times = {s: sm.ring(2, s, alpha, bw) for s in (4096, 65536, 2**20, 2**24)}
    fitted = sm.fit(times)
    assert fitted == pytest.approx((alpha, bw), rel=1e-9)
    assert sm.ring(1, 2**20, alpha, bw) == 0.0
    assert sm.ring(8, 8e6, alpha, bw) == pytest.approx(14 * alpha + 1.75 * 8e6 / bw)
    table = {32: 1e-3, 256: 8e-3}
    assert sm.interpolate(table, 16) == 1e-3                      # fixed costs below the smallest
    assert sm.interpolate(table, 512) == pytest.approx(16e-3)     # proportional above the largest
    assert sm.interpolate(table, 64) == pytest.approx(2e-3)       # log-log in between (slope 1 here)


def test_the_hand_written_mpi_loop_runs_under_mpiexec():
    """bench.py's data-parallel baseline: 2 real ranks, one mpi4py Allreduce a step."""
    import json
    import shutil

    bench_py = str(ROOT / "scripts" / "bench.py")
    out = subprocess.run([shutil.which("mpiexec"), "-n", "2", sys.executable, bench_py,
                          "--mpi-hand-worker", "--batch", "64", "--steps", "2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["ranks"] == 2 and record["step_s"] > 0
