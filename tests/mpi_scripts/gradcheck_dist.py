"""Gradient check of the GLOBAL cost under mpiexec: each rank holds its slice of the columns, the
cost and the gradient are allreduced sums (synchronized batch norm included). Prints
"GRADCHECK <difference> <max gap to the 1-rank gradient>" on rank 0 and exits 0."""
import sys

import numpy as np

from ddl.backend import get_backend
from ddl.data.shard import rank_slice
from ddl.parallel import get_comm, install_abort_handler
from ddl.nn import losses, model
from ddl.nn.gradcheck import cost_and_grad, gradient_check
from ddl.nn.init import init_params
from ddl.params import Flat

comm = get_comm("mpi")
install_abort_handler(comm)
be, xp = get_backend("numpy"), get_backend("numpy").xp
rng = np.random.default_rng(7)
M, LAM = 13, 0.7
spec = model.make_spec([4, 5, 3, 3], "tanh", "softmax", batchnorm=True)
X, y = rng.standard_normal((4, M)), rng.integers(0, 3, M)
params = init_params(spec, "xavier", seed=3)
lay = model.layout(spec)
theta = np.concatenate([params[n].reshape(-1) for n in lay.names])
a, b = rank_slice(M, comm.rank, comm.size)
Xl, Yl = X[:, a:b], losses.encode_targets(xp, y[a:b], "softmax", 3, xp.float64)
reduce = lambda arrs: comm.reduce_list(arrs, tag="bn")  # noqa: E731
mask = lay.mask(("W",))


def forward(t):
    p = Flat(lay, t.copy(), xp)
    ZL, caches, _ = model.forward(xp, p, Xl, spec, train=True, reduce=reduce)
    return ZL, caches


def cost(t):
    ZL, _ = forward(t)
    local = np.array([float(losses.loss_sum(xp, ZL, Yl, "softmax"))])
    w2 = float(np.sum(mask * t * t))
    return comm.allreduce_sum(local, tag="cost")[0] / M + LAM / (2 * M) * w2


def grad(t):
    ZL, caches = forward(t)
    g = model.backward(xp, losses.loss_grad(xp, ZL, Yl, "softmax"), caches, spec, reduce=reduce)
    flat = np.concatenate([g[n].reshape(-1) for n in lay.names])
    return comm.allreduce_sum(flat, tag="grad") / M + (LAM / M) * mask * t


diff = gradient_check(cost, grad, theta)
_, ref_grad, _ = cost_and_grad(spec, X, y, LAM, be, params=params)
gap = float(np.abs(grad(theta) - ref_grad(theta)).max())
if comm.rank == 0:
    print(f"GRADCHECK {diff:.3e} {gap:.3e}", flush=True)
sys.exit(0)
