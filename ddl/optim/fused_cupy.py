"""CuPy elementwise kernels of `ddl.optim.fused`: per element, the Numba loops' operations in their
order and precision (fused_kernels.py), compiled with `--fmad=false` so NVRTC may not contract a
multiply and an add into an FMA. Division and sqrt are IEEE-rounded (NVRTC's defaults), as in
CuPy's own one-operation kernels that the portable update runs, so the result is meant to be
bit-identical to it; tests/test_fused.py checks that on a GPU (scripts/gpu_check.sh runs it).

Each kernel: `kernel(p, g, mask, count, coef, l2, state, k)`, the Numba kernels' signature.
"""
from __future__ import annotations

import cupy

# the gradient as the trainer forms it: g / count (+ coef * (mask * p) with L2)
_GRADIENT = "T gi = g / count; if (l2) { gi = gi + coef * (mask * p); } "
_KERNELS = {       # name: (its scalars, its outputs: p and the state arrays, the update)
    "gd": ("T lr", "T p", "p -= lr * gi;"),
    "momentum": ("T beta, T one_beta, T lr", "T p, T v",
                 "T vi = v * beta; vi += one_beta * gi; v = vi; p -= vi * lr;"),
    "rmsprop": ("T beta2, T one_beta2, T eps, T lr", "T p, T s",
                "T gg = gi * gi; gg *= one_beta2; T si = s * beta2 + gg; s = si; "
                "p -= (gi * lr) / (sqrt(si) + eps);"),
    "adam": ("T beta1, T one_beta1, T beta2, T one_beta2, T eps_root, T c", "T p, T v, T s",
             "T vi = v * beta1; vi += one_beta1 * gi; v = vi; "
             "T gg = gi * gi; gg *= one_beta2; T si = s * beta2 + gg; s = si; "
             "p -= (vi * c) / (sqrt(si) + eps_root);"),
}


def _kernel(name: str):
    scalars, outputs, update = _KERNELS[name]
    compiled = cupy.ElementwiseKernel(f"T g, T mask, T count, T coef, bool l2, {scalars}", outputs,
                                      _GRADIENT + update, f"ddl_fused_{name}", options=("--fmad=false",),
                                      no_return=True)
    n_state = outputs.count(",")          # the outputs after p

    def kernel(p, g, mask, count, coef, l2, state, k):
        # without L2 the mask is never read: p stands in (an empty placeholder would not broadcast)
        compiled(g, mask if l2 else p, count, coef, bool(l2), *k, p, *state[:n_state])
    return kernel


KERNELS = {name: _kernel(name) for name in _KERNELS}
