"""The "host" GPU strategy's logic without a GPU: a stand-in `cupy` module and device array.

Checks that CuPy-like buffers (anything with __cuda_array_interface__) are routed to the GPU
strategy, that the stream is synchronized BEFORE the device->host copy, and the sums are right.
"""
import sys
import types

import numpy as np

EVENTS = []


class FakeStream:
    ptr = 0

    def synchronize(self):
        EVENTS.append("sync")


class DeviceArray:
    """Stands in for cupy.ndarray: only what the host strategy touches."""

    def __init__(self, host):
        self.host = host
        self.ndim, self.shape, self.dtype = host.ndim, host.shape, host.dtype

    # Present (so ddl.parallel routes it to the GPU strategy) but unusable: if the host strategy
    # handed this object to MPI, mpi4py would fail on it.
    __cuda_array_interface__ = None

    def get(self):
        EVENTS.append("get")
        return self.host.copy()

    def set(self, host):
        EVENTS.append("set")
        self.host[...] = host


def main():
    sys.modules["cupy"] = types.SimpleNamespace(
        cuda=types.SimpleNamespace(get_current_stream=lambda: FakeStream()))
    from ddl.parallel import get_comm, install_abort_handler

    comm = get_comm("mpi", allreduce="host")
    install_abort_handler(comm)
    r, n = comm.rank, comm.size
    buf = DeviceArray(np.arange(6, dtype=np.float64) * (r + 1))
    assert comm.allreduce_sum(buf) is buf
    np.testing.assert_array_equal(buf.host, np.arange(6) * n * (n + 1) / 2)
    assert EVENTS == ["sync", "get", "set"], EVENTS
    arr = DeviceArray(np.full(3, float(r), dtype=np.float32))
    comm.bcast_array(arr, root=n - 1)
    np.testing.assert_array_equal(arr.host, np.full(3, float(n - 1)))
    assert EVENTS[3:] == ["sync", "get", "set"], EVENTS
    print(f"OK rank {r} of {n} fake-device", flush=True)


if __name__ == "__main__":
    main()
