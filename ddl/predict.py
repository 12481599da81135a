"""Use a trained model: `final.npz` (or a checkpoint) -> predictions on raw input rows.

    model = load("runs/.../final.npz")
    labels = model.predict(X_rows)          # (m,) class indices (threshold 0.5 / argmax) or values

The saved training-split normalization (`norm/mean`, `norm/std`) is applied first, exactly as in
training, and batch-norm layers use their running statistics.
"""
from __future__ import annotations

import numpy as np

from ddl import checkpoint as ckpt
from ddl.backend import get_backend
from ddl.data.normalize import Normalizer
from ddl.nn import losses, model


class Model:
    """A trained network with its input normalization."""

    def __init__(self, spec, params, bn_state, normalizer, backend, class_names=None):
        self.spec, self.params, self.bn_state = spec, params, bn_state
        self.normalizer, self.backend, self.class_names = normalizer, backend, class_names

    def logits(self, X_rows) -> np.ndarray:
        """ZL (n_out, m) for raw rows X (m, n_x)."""
        X = np.asarray(X_rows, dtype=np.float64).reshape(len(X_rows), -1)
        if self.normalizer is not None:
            X = self.normalizer.apply(X)
        cols = self.backend.asarray(np.ascontiguousarray(X.T), "float64")
        ZL, _, _ = model.forward(self.backend.xp, self.params, cols, self.spec, train=False,
                                 bn_state=self.bn_state)
        return self.backend.to_numpy(ZL)

    def predict(self, X_rows) -> np.ndarray:
        """Class indices (m,) (sigmoid: A > 0.5; softmax: argmax) or regression values (m, k)."""
        xp = self.backend.xp
        out = losses.predict_labels(xp, self.backend.asarray(self.logits(X_rows)), self.spec.output)
        out = self.backend.to_numpy(out)
        return out.T if self.spec.output == "linear" else out


def load(path, backend: str = "numpy") -> Model:
    """A Model from a final.npz written by ddl-train (float64 for prediction)."""
    arrays, meta = ckpt.load_npz(path)
    if "spec" not in meta:
        raise ckpt.CheckpointError(f"{path} has no model description (meta 'spec'): use the "
                                   f"run's final.npz")
    spec = model.Spec.from_dict(meta["spec"])
    be = get_backend(backend)
    params = ckpt.params_from(arrays, model.layout(spec), be, "float64", path=path)
    bn = ckpt.bn_from(arrays, model.bn_state_layout(spec), be, "float64")
    norm = Normalizer.from_dict(arrays) if "norm/mean" in arrays else None
    return Model(spec, params, bn, norm, be, meta.get("class_names"))
