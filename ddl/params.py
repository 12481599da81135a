"""Named arrays over one contiguous buffer.

Parameters, gradients and optimizer moments each live in ONE flat 1-D buffer per kind; `Flat`
exposes it as views keyed by the course's names (`W1`, `b1`, `gamma1`, ...), always in the same
order on every rank. The optimizer and the allreduce see only `.buf`; layers see only the views.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Layout:
    """An ordered list of (name, shape); the order fixes offsets in every flat buffer."""

    entries: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.entries]

    @property
    def size(self) -> int:
        return sum(math.prod(s) for _, s in self.entries)

    def offsets(self) -> dict[str, tuple[int, int, tuple[int, ...]]]:
        """name -> (start, stop, shape) in the flat buffer."""
        out, o = {}, 0
        for name, shape in self.entries:
            n = math.prod(shape)
            out[name] = (o, o + n, shape)
            o += n
        return out

    def mask(self, prefixes: tuple[str, ...] = ("W",)) -> np.ndarray:
        """Host 0/1 vector marking entries whose name starts with a prefix followed by a digit
        (e.g. the weights `W1..WL` that L2 applies to; biases, gamma, beta excluded)."""
        m = np.zeros(self.size)
        for name, (a, b, _) in self.offsets().items():
            head = name.rstrip("0123456789")
            if head in prefixes and head != name:
                m[a:b] = 1.0
        return m


class Flat:
    """A flat buffer `buf` plus named views into it (writes through a view change `buf`)."""

    def __init__(self, layout: Layout, buf, xp):
        if buf.shape != (layout.size,):
            raise ValueError(f"flat buffer has shape {buf.shape}, layout needs ({layout.size},)")
        self.layout, self.buf, self.xp = layout, buf, xp
        self._views = {
            name: xp.reshape(buf[a:b], shape) for name, (a, b, shape) in layout.offsets().items()
        }

    @classmethod
    def zeros(cls, layout: Layout, xp, dtype) -> Flat:
        return cls(layout, xp.zeros((layout.size,), dtype=dtype), xp)

    def __getitem__(self, name: str):
        return self._views[name]

    def __contains__(self, name: str) -> bool:
        return name in self._views

    def keys(self) -> list[str]:
        return self.layout.names

    def items(self):
        return ((n, self._views[n]) for n in self.layout.names)

    def assign(self, arrays: dict) -> Flat:
        """Copy `arrays[name]` into each named view (every name of the layout must be given)."""
        missing = [n for n in self.layout.names if n not in arrays]
        if missing:
            raise KeyError(f"missing arrays for {missing}")
        for name, view in self._views.items():
            a = arrays[name]
            if tuple(a.shape) != tuple(view.shape):
                raise ValueError(f"{name} has shape {tuple(a.shape)}, expected {tuple(view.shape)}")
            view[...] = a
        return self

    def copy(self) -> Flat:
        return Flat(self.layout, self.xp.asarray(self.buf, copy=True), self.xp)

    def to_numpy(self, to_host) -> dict[str, np.ndarray]:
        """Host copies keyed by name, in the course shapes (`to_host` = Backend.to_numpy)."""
        host = to_host(self.buf)
        return {n: host[a:b].reshape(s).copy() for n, (a, b, s) in self.layout.offsets().items()}

    @classmethod
    def from_numpy(cls, layout: Layout, arrays: dict, backend, dtype: str) -> Flat:
        """Build from host arrays keyed by name (shapes checked against the layout)."""
        host = np.zeros(layout.size, dtype=dtype)
        for name, (a, b, shape) in layout.offsets().items():
            if name not in arrays:
                raise KeyError(f"missing array {name!r}")
            arr = np.asarray(arrays[name])
            if arr.shape != shape:
                raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")
            host[a:b] = arr.reshape(-1)
        return cls(layout, backend.asarray(host), backend.xp)
