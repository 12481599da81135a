"""Use a trained model: `final.npz` (or a checkpoint) -> predictions on raw input rows.

    model = load("runs/.../final.npz")
    labels = model.predict(X_rows)          # (m,) class indices (threshold 0.5 / argmax) or values

X_rows are the inputs as the training file stored them, one example per row (course images may
keep their (m, 64, 64, 3) shape). Every transformation the loader applied is applied again, in
the same order: the scaling of the stored values (the course files' uint8 pixels / 255, saved as
meta "input_divisor"), then the training-split normalization (`norm/mean`, `norm/std`); batch-norm
layers use their running statistics.
"""
from __future__ import annotations

import warnings

import numpy as np

from ddl import checkpoint as ckpt
from ddl.backend import get_backend
from ddl.data.normalize import Normalizer
from ddl.nn import losses, model


class Model:
    """A trained network with its input normalization."""

    def __init__(self, spec, params, bn_state, normalizer, backend, class_names=None,
                 input_divisor: float = 1.0):
        self.spec, self.params, self.bn_state = spec, params, bn_state
        self.normalizer, self.backend, self.class_names = normalizer, backend, class_names
        self.input_divisor = float(input_divisor)

    def logits(self, X_rows) -> np.ndarray:
        """ZL (n_out, m) for raw rows X (m, n_x) (or (m, h, w, c) images)."""
        X = self.features(X_rows)
        if self.normalizer is not None:
            X = self.normalizer.apply(X)
        cols = self.backend.asarray(np.ascontiguousarray(X.T), "float64")
        ZL, _, _ = model.forward(self.backend.xp, self.params, cols, self.spec, train=False,
                                 bn_state=self.bn_state)
        return self.backend.to_numpy(ZL)

    def features(self, X_rows) -> np.ndarray:
        """Raw rows -> the network's input features, before normalization (scaled as trained).
        Rows that look divided already (all in [0, 1] for a model trained on pixels / 255) are
        said to be, in a warning: dividing them again gives a network nearly black images."""
        X = _rows(X_rows, self.spec.sizes[0])
        if self.input_divisor == 1.0:
            return X
        if self.input_divisor > 1.0 and X.size and 0.0 <= X.min() and X.max() <= 1.0:
            warnings.warn(f"these rows look scaled already (every value in [0, 1]), but this model "
                          f"takes the values as its training file stored them and divides them by "
                          f"{self.input_divisor:g} itself (the file's uint8 pixels): they are divided "
                          f"again. Pass the rows unscaled (0 to {self.input_divisor:g}).", UserWarning,
                          stacklevel=3)
        return X / self.input_divisor

    def predict(self, X_rows) -> np.ndarray:
        """Class indices (m,) (sigmoid: A > 0.5; softmax: argmax) or regression values (m, k)."""
        xp = self.backend.xp
        out = losses.predict_labels(xp, self.backend.asarray(self.logits(X_rows)), self.spec.output)
        out = self.backend.to_numpy(out)
        return out.T if self.spec.output == "linear" else out


def _rows(X_rows, n_x: int) -> np.ndarray:
    """(m, ...) rows -> (m, n_x) float64, or a ValueError that speaks in rows. Rows on a GPU (a
    CuPy array) are copied to the host first: CuPy refuses an implicit conversion."""
    if hasattr(X_rows, "__cuda_array_interface__"):
        X_rows = X_rows.get()
    X = np.asarray(X_rows)
    if X.ndim == 1 and X.size == n_x:
        X = X[None, :]                                  # one example
    width = int(np.prod(X.shape[1:], dtype=np.int64)) if X.ndim >= 2 else None
    if width != n_x:
        raise ValueError(f"predict takes rows, one example per row: an array (m, {n_x}) (or "
                         f"(m, ...) that flattens to {n_x} features per row), got shape "
                         f"{X.shape}" + ("; transposed? (the course's column layout is (n_x, m))"
                                         if X.ndim == 2 and X.shape[0] == n_x else ""))
    return X.reshape(len(X), n_x).astype(np.float64)


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
    return Model(spec, params, bn, norm, be, meta.get("class_names"), meta.get("input_divisor", 1.0))
