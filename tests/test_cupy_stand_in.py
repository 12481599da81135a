"""ddl's CuPy path on every commit, without a GPU. The stand-in CuPy of tests/stand_in runs ddl's
real CuPy branches (get_backend's binding, the backend's device edges, the host-staged and NCCL
transports, allreduce=auto's choice, evaluation, checkpoints and resume, gradient checking,
predict) over arrays on a device other than the CPU, which refuse every implicit host conversion:
a hidden np.asarray, float() or bool() of device data on that path fails these tests. Each result
is compared with NumPy's, in float64 (the counting twin, test_gpu_strategies.py, keeps the budget
of host waits)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import clean_env, load_final, mpiexec, run_cmd

STAND_IN = Path(__file__).resolve().parent / "stand_in"
MODEL = ["data=moons", "data.m=240", "data.normalize=true", "model.hidden=[8,6]", "model.batchnorm=true",
         "model.keep_prob=0.8", "model.l2=0.1", "optimizer=adam", "train.dtype=float64",
         "train.batch_size=32", "train.progress=false", "tracking=off"]


def stand_in_env(**extra) -> dict:
    path = os.pathsep.join(p for p in (str(STAND_IN), os.environ.get("PYTHONPATH")) if p)
    return clean_env(PYTHONPATH=path, **extra)


def train(tmp_path, name: str, *overrides, ranks: int = 0, **env):
    cmd = [sys.executable, "-m", "ddl", *MODEL, *overrides, f"out_dir={tmp_path / name}"]
    if ranks:
        cmd = [mpiexec(), "-n", ranks, *cmd]
    code, out, err = run_cmd(cmd, timeout=180, cwd=tmp_path, env=stand_in_env(**env))
    assert code == 0, out + err
    return out + err, load_final(tmp_path / name)[0]


def same(a: dict, b: dict, rtol: float) -> None:
    assert sorted(a) == sorted(b)
    for k in b:
        scale = max(float(np.max(np.abs(b[k]))), 1e-300)
        assert float(np.max(np.abs(a[k] - b[k]))) / scale <= rtol, k


def test_training_on_the_device_equals_numpy_and_resumes_from_its_checkpoints(tmp_path):
    _, numpy = train(tmp_path, "numpy", "train.epochs=4", "backend=numpy")
    said, device = train(tmp_path, "cupy", "train.epochs=4", "backend=cupy", "checkpoint.every=1")
    assert "backend cupy" in said and '"backend": "cupy"' in (tmp_path / "cupy" / "summary.json").read_text()
    same(device, numpy, 1e-12)
    train(tmp_path, "resumed", "train.epochs=2", "backend=cupy", "checkpoint.every=1")
    said, resumed = train(tmp_path, "resumed", "train.epochs=4", "backend=cupy", "checkpoint.every=1",
                          "checkpoint.resume=auto")
    assert "resuming from" in said
    same(resumed, device, 0.0)                              # bit-identical after a resume


@pytest.mark.mpi
@pytest.mark.parametrize("allreduce, gpus, said", [
    ("host", "1", None),
    ("auto", "2", "gradients summed by NCCL (allreduce=auto: every rank has a GPU of its own)"),
    ("auto", "1", "gradients staged through host memory (allreduce=auto: some node has more ranks"),
])
def test_two_ranks_on_the_device_equal_one_rank(tmp_path, allreduce, gpus, said):
    _, one = train(tmp_path, "one", "train.epochs=3", "backend=cupy")
    text, two = train(tmp_path, "two", "train.epochs=3", "backend=cupy", f"allreduce={allreduce}", ranks=2,
                      DDL_STAND_IN_GPUS=gpus)
    assert "world size 2" in text and (said is None or said in text), text
    same(two, one, 1e-10)


@pytest.mark.mpi
@pytest.mark.parametrize("allreduce, gpus", [("host", "1"), ("nccl", "2")])
def test_a_stalled_rank_is_named_on_the_device_transports(tmp_path, allreduce, gpus):
    """The stall watch on CuPy's host-staged and NCCL transports (the stand-in's NCCL sums through
    MPI; a real one is watched through the CUDA event after each allreduce, tests/test_stall_watch.py)."""
    text, _ = train(tmp_path, "two", "train.epochs=3", "backend=cupy", f"allreduce={allreduce}",
                    "train.stall_timeout=1", ranks=2, DDL_STAND_IN_GPUS=gpus,
                    DDL_FAULT="stall=4@rank=1,step=10")
    assert "stalled: epoch 1 step" in text and "rank(s) [1] have not arrived" in text, text


CHECK = """
import numpy as np
from ddl.backend import get_backend
from ddl.nn.gradcheck import check_model
from ddl.nn.model import make_spec
from ddl.predict import load

backend = get_backend("cupy")
assert backend.name == "cupy" and str(backend.xp.zeros(1).device) == "array_api_strict.Device('device1')"
rng = np.random.default_rng(0)
X, y = rng.standard_normal((3, 12)), rng.integers(0, 3, 12)
spec = make_spec([3, 5, 4, 3], "tanh", "softmax", batchnorm=True)
print("GRADCHECK", check_model(spec, X, y, lam=0.2, backend=backend))
model, host = load(sys.argv[1], backend="cupy"), load(sys.argv[1])
rows = rng.standard_normal((7, 2))
assert np.array_equal(model.predict(rows), host.predict(rows))
print("PREDICT", model.predict(rows).tolist())
"""


def test_gradient_check_and_predict_on_the_device(tmp_path):
    train(tmp_path, "run", "train.epochs=2", "backend=cupy")
    code, out, err = run_cmd([sys.executable, "-c", "import sys\n" + CHECK, tmp_path / "run" / "final.npz"],
                             timeout=120, env=stand_in_env())
    assert code == 0, out + err
    assert float(out.split("GRADCHECK ")[1].split()[0]) < 1e-7, out
    assert "PREDICT [" in out


def test_the_stand_in_refuses_a_hidden_host_conversion():
    code = ("from ddl.backend import get_backend\nbe = get_backend('cupy')\nx = be.xp.ones(3)\n"
            "assert be.to_numpy(x).sum() == 3\nfloat(be.xp.sum(x))\n")
    rc, out, err = run_cmd([sys.executable, "-c", code], timeout=60, env=stand_in_env())
    assert rc == 1 and "implicit host conversion of a device array (__float__)" in err, err
