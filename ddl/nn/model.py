"""The L-layer network of courses 1-2: [dense -> (batchnorm) -> activation -> (dropout)] x (L-1)
-> dense, returning the output pre-activation ZL (the losses work from logits).

`forward` / `backward` are pure: parameters and batch-norm running statistics come in as named
arrays (a `Flat` or a dict) and new statistics go out; caches hold only what backward needs.
Shapes follow the course: W{l} (n_l, n_{l-1}), b{l} (n_l, 1), X (n_x, b) one column per example.
"""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass
from functools import lru_cache

from ..backend import make_key
from ..params import Layout
from .activations import get_activation
from .batchnorm import bn_backward, bn_forward, bn_infer, update_running
from .dropout import dropout_backward, dropout_forward, dropout_mask
from .layers import dense_backward, dense_forward
from .losses import LOSSES, correct_count, encode_targets, loss_sum, predict_labels

HIDDEN = ("sigmoid", "tanh", "relu", "leaky_relu", "linear")
OUTPUTS = tuple(LOSSES)                         # sigmoid, softmax, linear


@dataclass(frozen=True)
class Spec:
    """Architecture: sizes [n_x, hidden..., n_out], activations, dropout and batch norm.

    keep_prob has one entry per hidden layer (empty: no dropout); `output` is already resolved
    (see `resolve_output`). Validated on construction.
    """

    sizes: tuple[int, ...]
    hidden: str = "relu"
    output: str = "sigmoid"
    slope: float = 0.01
    keep_prob: tuple[float, ...] = ()
    batchnorm: bool = False
    bn_eps: float = 1e-5
    bn_momentum: float = 0.9

    def __post_init__(self):
        for i, n in enumerate(self.sizes):               # NumPy integers welcome, bools not
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
                raise ValueError(f"layer sizes must be integers >= 1, got {n!r} at position {i}")
        object.__setattr__(self, "sizes", tuple(int(n) for n in self.sizes))  # hashable tuples
        object.__setattr__(self, "keep_prob", tuple(float(k) for k in self.keep_prob))
        _validate(self)

    def to_dict(self) -> dict:
        """Plain JSON-ready fields (tuples as lists): what final.npz stores as meta "spec"."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Spec":
        """Inverse of `to_dict` (an empty keep_prob means no dropout)."""
        return make_spec(d["sizes"], d["hidden"], d["output"], d["slope"],
                         list(d["keep_prob"]) or 1.0, d["batchnorm"], d["bn_eps"], d["bn_momentum"])

    @property
    def n_layers(self) -> int:
        """L, the number of weight layers."""
        return len(self.sizes) - 1


def _validate(s: Spec) -> None:
    if len(s.sizes) < 2:
        raise ValueError(f"sizes must list at least [n_x, n_out], got {list(s.sizes)}")
    if s.hidden not in HIDDEN:
        raise ValueError(f"unknown hidden activation {s.hidden!r}; choose one of {list(HIDDEN)}")
    if s.output not in OUTPUTS:
        hint = " (resolve 'auto' first with resolve_output)" if s.output == "auto" else ""
        raise ValueError(f"unknown output activation {s.output!r}; choose one of {list(OUTPUTS)}"
                         + hint)
    n_out = s.sizes[-1]
    if s.output == "sigmoid" and n_out != 1:
        raise ValueError(f"a sigmoid output has 1 unit (2 classes), got n_out={n_out}; use softmax")
    if s.output == "softmax" and n_out < 2:
        raise ValueError(f"a softmax output needs n_out >= 2 classes, got n_out={n_out}")
    _validate_keep_prob(s.keep_prob, len(s.sizes) - 2)
    if not s.bn_eps > 0:
        raise ValueError(f"bn_eps must be > 0, got {s.bn_eps}")
    if not 0.0 <= s.bn_momentum <= 1.0:
        raise ValueError(f"bn_momentum must be in [0, 1], got {s.bn_momentum}")


def _validate_keep_prob(keep_prob: tuple[float, ...], n_hidden: int) -> None:
    if keep_prob and len(keep_prob) != n_hidden:
        raise ValueError(
            f"keep_prob needs one value per hidden layer ({n_hidden}), got {list(keep_prob)}"
        )
    for l, k in enumerate(keep_prob, start=1):
        if not 0.0 < k <= 1.0:
            raise ValueError(f"keep_prob must be in (0, 1], got {k} for hidden layer {l}")


def make_spec(sizes, hidden="relu", output="sigmoid", slope=0.01, keep_prob=1.0,
              batchnorm=False, bn_eps=1e-5, bn_momentum=0.9) -> Spec:
    """Build a validated Spec; a scalar keep_prob is used for every hidden layer."""
    sizes = tuple(sizes)
    if isinstance(keep_prob, numbers.Real):
        keep_prob = (float(keep_prob),) * max(len(sizes) - 2, 0)
    return Spec(sizes, hidden, output, float(slope), tuple(keep_prob), bool(batchnorm),
                float(bn_eps), float(bn_momentum))


def resolve_output(output: str, n_classes: int, n_targets: int = 1) -> tuple[str, int]:
    """(output name, n_out). n_classes == 0 means regression with n_targets values per example.

    "auto": sigmoid (1 unit) for 2 classes, softmax (C units) for C > 2, linear for regression.
    """
    choices = ("auto",) + OUTPUTS
    if output not in choices:
        raise ValueError(f"unknown output {output!r}; choose one of {list(choices)}")
    if n_classes == 0:
        if output not in ("auto", "linear"):
            raise ValueError(f"output {output!r} needs class labels, but the data is regression")
        return "linear", int(n_targets)
    if n_classes < 2:
        raise ValueError(f"classification needs at least 2 classes, got n_classes={n_classes}")
    if output == "auto":
        output = "sigmoid" if n_classes == 2 else "softmax"
    if output == "linear":
        raise ValueError(f"output 'linear' is for regression, got {n_classes} classes")
    if output == "sigmoid" and n_classes != 2:
        raise ValueError(f"a sigmoid output is for 2 classes, got {n_classes}; use softmax")
    return output, 1 if output == "sigmoid" else int(n_classes)


def _bn_layer(spec: Spec, l: int) -> bool:
    return spec.batchnorm and l < spec.n_layers             # the output layer is never normalized


@lru_cache(maxsize=256)
def layout(spec: Spec) -> Layout:
    """W1, (b1 | gamma1, beta1), W2, ..., WL, bL in this fixed order (computed once per spec)."""
    entries = []
    for l in range(1, spec.n_layers + 1):
        n, n_prev = spec.sizes[l], spec.sizes[l - 1]
        entries.append((f"W{l}", (n, n_prev)))
        names = (f"gamma{l}", f"beta{l}") if _bn_layer(spec, l) else (f"b{l}",)
        entries += [(name, (n, 1)) for name in names]
    return Layout(tuple(entries))


def bn_state_layout(spec: Spec) -> Layout:
    """mean{l}, var{l} (n_l, 1) for each batch-normalized layer (empty without batch norm)."""
    layers = [l for l in range(1, spec.n_layers) if _bn_layer(spec, l)]
    return Layout(tuple((f"{k}{l}", (spec.sizes[l], 1)) for l in layers for k in ("mean", "var")))


def _check_forward(X, spec: Spec, train: bool, bn_state, key, idx) -> None:
    if X.ndim != 2 or X.shape[0] != spec.sizes[0]:
        raise ValueError(
            f"X has shape {tuple(X.shape)}; the network expects (n_x={spec.sizes[0]}, batch), "
            "one column per example"
        )
    if train and any(k < 1.0 for k in spec.keep_prob) and (key is None or idx is None):
        raise ValueError("training with dropout needs key (int) and idx (global example indices)")
    if not train and spec.batchnorm and bn_state is None:
        raise ValueError("evaluation with batch norm needs bn_state (the running mean/var)")


def _batchnorm(xp, params, l, Z, spec, train, bn_state, new_state, reduce):
    """Normalize Z of layer l; in training also store the updated running statistics."""
    gamma, beta = params[f"gamma{l}"], params[f"beta{l}"]
    mean_k, var_k = f"mean{l}", f"var{l}"
    if not train:
        return bn_infer(xp, Z, gamma, beta, bn_state[mean_k], bn_state[var_k], spec.bn_eps), None
    Zt, cache, mean, var = bn_forward(xp, Z, gamma, beta, spec.bn_eps, reduce)
    old = (0.0, 1.0) if bn_state is None else (bn_state[mean_k], bn_state[var_k])
    new_state[mean_k], new_state[var_k] = update_running(*old, mean, var, spec.bn_momentum)
    return Zt, cache


def forward(xp, params, X, spec: Spec, *, train: bool, bn_state=None, key=None, idx=None,
            reduce=None):
    """-> (ZL (n_out, b), caches, new_bn_state).

    train=True: inverted dropout with per-layer keys make_key(key, l) over global example indices
    idx, batch-norm batch statistics (summed across ranks by `reduce`) and running statistics
    updated from bn_state (None: the initial mean 0, var 1). train=False: no dropout, batch norm
    with bn_state; caches is then None (no backward in eval mode) and bn_state is returned as is.
    caches[l-1] = (A_prev, W, Z, A, D, bn_cache): Z only for relu/leaky_relu, A (before dropout)
    only for sigmoid/tanh, D the dropout multiplier or None; the output layer keeps (A_prev, W).
    """
    _check_forward(X, spec, train, bn_state, key, idx)
    act, _ = get_activation(spec.hidden)
    keep_Z = spec.hidden in ("relu", "leaky_relu")          # backward reads Z ...
    keep_A = spec.hidden in ("sigmoid", "tanh")             # ... or A, never both
    caches = [] if train else None
    new_state = {} if train and spec.batchnorm else bn_state
    A = X
    for l in range(1, spec.n_layers):
        W, bn_cache = params[f"W{l}"], None
        if _bn_layer(spec, l):
            Z, bn_cache = _batchnorm(xp, params, l, xp.matmul(W, A), spec, train, bn_state,
                                     new_state, reduce)
        else:
            Z = dense_forward(xp, W, params[f"b{l}"], A)
        H = act(xp, Z, spec.slope)
        D = None
        if train and spec.keep_prob and spec.keep_prob[l - 1] < 1.0:
            D = dropout_mask(xp, make_key(key, l), spec.sizes[l], idx, spec.keep_prob[l - 1],
                             H.dtype)
        if train:
            caches.append((A, W, Z if keep_Z else None, H if keep_A else None, D, bn_cache))
        if D is not None:                                # the cached H must stay undropped
            H = dropout_forward(H, D, in_place=not keep_A)
        A = H
    L = spec.n_layers
    ZL = dense_forward(xp, params[f"W{L}"], params[f"b{L}"], A)
    if train:
        caches.append((A, params[f"W{L}"], None, None, None, None))
    return ZL, caches, new_state if spec.batchnorm else None


def backward(xp, dZL, caches, spec: Spec, *, reduce=None, out=None) -> dict:
    """Gradients of the SUM loss for every name of layout(spec), from dZL = d loss_sum / d ZL.

    Batch-norm gradients reduce their batch sums across ranks through `reduce`; the returned
    arrays are this rank's local sums (no 1/m: the trainer divides after the allreduce).
    `out` (NumPy only: its `out=`): a Flat of the layout whose views receive dW and db directly,
    with no copy; the batch-norm gradients are copied in. The returned arrays are then its views.
    """
    _, act_backward = get_activation(spec.hidden)
    grads, dZ, dA = {}, dZL, None   # dA: from the layer above, set before it is read
    for l in range(spec.n_layers, 0, -1):
        A_prev, W, Z, H, D, bn_cache = caches[l - 1]
        if l < spec.n_layers:
            if D is not None:
                dA = dropout_backward(dA, D)
            dZ = act_backward(xp, dA, Z, H, spec.slope)
            if bn_cache is not None:
                dZ, grads[f"gamma{l}"], grads[f"beta{l}"] = bn_backward(xp, dZ, bn_cache, reduce)
        views = (None, None) if out is None else (out[f"W{l}"], None if bn_cache else out[f"b{l}"])
        dA, grads[f"W{l}"], db = dense_backward(xp, dZ, W, A_prev, need_dA=l > 1,
                                                need_db=bn_cache is None, out=views)
        if db is not None:
            grads[f"b{l}"] = db
    if out is None:
        return {name: grads[name] for name in layout(spec).names}
    for name in layout(spec).names:
        if grads[name] is not out[name]:          # batch norm's gamma/beta: computed, copied in
            out[name][...] = grads[name]
    return {name: out[name] for name in layout(spec).names}


def _weight_names(spec_or_layout) -> list[str]:
    lay = layout(spec_or_layout) if isinstance(spec_or_layout, Spec) else spec_or_layout
    return [n for n in lay.names if n[0] == "W" and n[1:].isdigit()]


def l2_cost(xp, params, spec_or_layout, lam: float, m: int):
    """0-d array: lam / (2 m) * sum_l ||W_l||_F^2 (weights only, not biases or gamma/beta)."""
    names = _weight_names(spec_or_layout)
    total = xp.zeros((), dtype=params[names[0]].dtype)
    if lam:
        for n in names:
            total = total + xp.sum(params[n] * params[n])
    return xp.asarray(total * (lam / (2.0 * m)))


def evaluate(xp, params, X, y, spec: Spec, bn_state=None, *, check: bool = True):
    """Eval mode -> (loss_sum, correct, count), each a 0-d array of the parameters' dtype.

    `check=False` skips the label check (labels checked at load time; it costs a device sync)."""
    ZL, _, _ = forward(xp, params, X, spec, train=False, bn_state=bn_state)
    Y = encode_targets(xp, y, spec.output, spec.sizes[-1], ZL.dtype, check=check)
    count = xp.full((), X.shape[1], dtype=ZL.dtype)
    return loss_sum(xp, ZL, Y, spec.output), correct_count(xp, ZL, y, spec.output), count


def predict(xp, params, X, spec: Spec, bn_state=None):
    """Eval mode -> (b,) int64 labels for classification, ZL (k, b) values for regression."""
    ZL, _, _ = forward(xp, params, X, spec, train=False, bn_state=bn_state)
    return predict_labels(xp, ZL, spec.output)
