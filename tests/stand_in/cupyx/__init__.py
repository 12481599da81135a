"""The stand-in's cupyx: pinned host memory (see cupy/__init__.py)."""
import numpy as np


def empty_pinned(shape, dtype):
    return np.empty(shape, dtype=getattr(dtype, "_np_dtype", dtype))
