"""How one step's gradients travel between ranks: a strategy object, built once per run (which one
is the loop's policy: ddl/train/policy.py) and owning the step's buffer [gradients | tail].

The step calls `reduce()` between backward and the update, and `gather(params)` after it, without
asking which kind it has:

    Local          a world of one: the buffer is the sum already; both calls do nothing
    Allreduce      ONE in-place sum of the whole buffer (CuPy arrays through the transport the
                   run's communicator picked: host staging, NCCL or CUDA-aware MPI)
    Sharded        the optimizer sharded across the ranks: a reduce-scatter gives this rank its
                   block of the summed gradients (and every rank the whole tail), the update
                   touches that block only, an allgather of the parameters ends the step
    SharedSharded  the same with every rank on one node, through the node's shared memory
                   (ddl/parallel/shared_memory.py): no gradient or parameter byte through MPI
    NodeAware      ranks on several nodes: the sum within each node, then between one leader per
                   node, then back within the node (ddl/parallel/nodes.py): each node sends its
                   buffer over the network once, not once per rank

`block(params, mask)` gives what this rank updates: the whole buffers, or its block of them. All
keep N ranks equal to one rank up to the order of the gradient sums. The block math: ddl/optim/shards.py.
"""
from __future__ import annotations

from ddl.optim import shards


class Local:
    """A world of one (or no MPI): nothing to send."""

    describe = ""

    def __init__(self, xp, dtype, size: int, tail: int, ext=None):
        self.xp, self.size = xp, size
        self.ext = xp.zeros((size + tail,), dtype=dtype) if ext is None else ext

    @property
    def grads(self):
        return self.ext[:self.size]

    @property
    def tail(self):
        return self.ext[self.size:]

    def block(self, params, mask):
        """(the parameters, the summed gradients, the L2 mask) this rank updates."""
        return params, self.grads, mask

    def reduce(self) -> None:
        return None

    def gather(self, params) -> None:
        return None

    def take(self, opt_state: dict) -> dict:
        """The optimizer state this rank keeps while training (its block when sharded)."""
        return opt_state

    def place(self, params):
        """The parameter buffer training uses (the node's shared one, when there is one)."""
        return params

    def whole(self, opt_state: dict) -> dict:
        """The whole optimizer state on every rank (collective when sharded: a checkpoint's)."""
        return opt_state

    def own(self, params):
        """Parameters of the caller's own (a copy of the node's shared ones, when shared)."""
        return params

    def free(self) -> None:
        """Collective: what the strategy holds beyond the run (the shared windows)."""


class Allreduce(Local):
    """One in-place allreduce of [gradients | tail] a step."""

    def __init__(self, comm, xp, dtype, size: int, tail: int, ext=None):
        super().__init__(xp, dtype, size, tail, ext)
        self.comm = comm

    def reduce(self) -> None:
        self.comm.allreduce_sum(self.ext, tag="grad")


class Sharded(Allreduce):
    """Reduce-scatter before the update of this rank's block, allgather of the parameters after."""

    def __init__(self, comm, xp, dtype, size: int, tail: int, ext=None):
        super().__init__(comm, xp, dtype, size, tail, ext)
        self.counts = shards.block_counts(size, comm.size)
        self.lo, self.hi = shards.bounds(self.counts, comm.rank)
        self.g = xp.zeros((self.hi - self.lo,), dtype=dtype)   # this rank's block of the sum
        if comm.size > 1:       # a world of one's block is the whole buffer: nothing to say
            self.describe = f"; optimizer sharded across {comm.size} ranks (train.shard_optimizer)"

    def block(self, params, mask):
        whole = mask is not None and mask.shape[0] == self.size    # else a placeholder (no L2)
        return params[self.lo:self.hi], self.g, mask[self.lo:self.hi] if whole else mask

    def reduce(self) -> None:
        self.comm.reduce_scatter_sum(self.grads, self.g, self.counts, tail=self.tail, tag="grad")

    def gather(self, params) -> None:
        self.comm.allgather(params, self.counts, tag="params")

    def take(self, opt_state: dict) -> dict:
        return shards.take(opt_state, self.lo, self.hi, lambda a: a.copy(), self.size)

    def whole(self, opt_state: dict) -> dict:
        """One allgather per state array."""
        out = {}
        for k, v in opt_state.items():
            if isinstance(v, (int, float)):
                out[k] = v
                continue
            full = self.xp.zeros((self.size,), dtype=v.dtype)
            full[self.lo:self.hi] = v
            out[k] = self.comm.allgather(full, self.counts, tag="state")
        return out


class SharedSharded(Sharded):
    """Sharded through the node's shared memory: the gradients are this rank's segment of a
    shared window, the parameters one shared buffer."""

    def __init__(self, comm, buffers, xp, dtype, size: int, tail: int):
        super().__init__(comm, xp, dtype, size, tail, ext=buffers.grads)
        self.buffers = buffers
        self.describe += ", through the node's shared memory (train.shared_memory)"

    def reduce(self) -> None:
        self.comm.timed("grad", self.buffers.reduce_scatter, self.lo, self.hi, self.g)

    def gather(self, params) -> None:
        self.comm.timed("params", self.buffers.barrier)

    def place(self, params):
        self.buffers.fill_params(params)
        return self.buffers.params

    def own(self, params):
        return params.copy() if self.buffers.holds_params(params) else params

    def free(self) -> None:
        self.buffers.free()


class NodeAware(Allreduce):
    """One sum of [gradients | tail] a step, in two levels: within each node, then between the
    nodes' leaders (NodeLevels)."""

    def __init__(self, comm, levels, xp, dtype, size: int, tail: int):
        super().__init__(comm, xp, dtype, size, tail)
        self.levels = levels
        self.describe = (f"; node-aware allreduce: within each of {comm.nodes.count} hosts, then "
                         "between one rank per host (train.reduction)")

    def reduce(self) -> None:
        self.comm.timed("grad", self.levels.allreduce_sum, self.ext)

    def free(self) -> None:
        self.levels.free()
