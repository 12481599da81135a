"""The nodes a job spans: which ranks share a host (MPI's COMM_TYPE_SHARED, what the launcher
placed together), the hosts' names, and the two levels of a node-aware reduction.

    Nodes       pure facts, gathered once as the process's communicator is built: for every rank
                its node (the world rank of that node's first rank) and the host's name
    NodeLevels  the node's communicator and, on each node's first rank (its leader), the leaders'
                one: a sum is reduced within the node, allreduced between the leaders (one
                buffer per node over the network, not one per rank), and broadcast back within
                the node, each level in a fixed order (what Horovod's hierarchical allreduce and
                NCCL's tree do). Within a node MPICH moves the bytes through shared memory.

Nodes is plain data (the serial communicator has one too); only NodeLevels touches mpi4py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Nodes:
    node_of: tuple[int, ...]      # per world rank: its node, named by the node's first world rank
    host_of: tuple[str, ...]      # per world rank: its host's name

    @property
    def count(self) -> int:
        return len(set(self.node_of))

    def leaders(self) -> list[int]:
        """Each node's first rank, in rank order."""
        return sorted(set(self.node_of))

    def ranks_on(self, leader: int) -> list[int]:
        return [r for r, n in enumerate(self.node_of) if n == leader]

    def host(self, leader: int) -> str:
        return self.host_of[leader]

    def uneven(self) -> bool:
        """Whether the nodes hold different numbers of ranks."""
        return len({len(self.ranks_on(n)) for n in self.leaders()}) > 1

    def describe(self) -> str:
        """'2 hosts: h1 (ranks 0-1), h2 (ranks 2-3)' (a rank list where ranks are not contiguous)."""
        parts = [f"{self.host(n)} ({rank_list(self.ranks_on(n))})" for n in self.leaders()]
        return f"{self.count} host{'s' * (self.count > 1)}: {', '.join(parts)}"


def rank_list(ranks: Sequence[int]) -> str:
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    if list(ranks) == list(range(ranks[0], ranks[-1] + 1)):
        return f"ranks {ranks[0]}-{ranks[-1]}"
    return "ranks " + ",".join(map(str, ranks))


def gather_nodes(world, node, hostname: str) -> Nodes:
    """Collective over `world` (an mpi4py communicator) and `node` (its COMM_TYPE_SHARED split)."""
    leader = node.bcast(world.Get_rank(), root=0)
    facts = world.allgather((leader, hostname))
    return Nodes(tuple(n for n, _ in facts), tuple(h for _, h in facts))


class NodeLevels:
    """The node-aware sum of a host NumPy buffer (collective over the world: every rank calls it)."""

    def __init__(self, world, wait):
        """world: the run's mpi4py communicator; wait: completes a list of requests (polled or
        blocking, as the communicator waits)."""
        from mpi4py import MPI  # noqa: PLC0415 - the serial communicator imports this module too

        self.node = world.Split_type(MPI.COMM_TYPE_SHARED, key=world.Get_rank())
        self.leader = self.node.Get_rank() == 0
        self.leaders = world.Split(0 if self.leader else MPI.UNDEFINED, key=world.Get_rank())
        self.wait = wait

    def allreduce_sum(self, buf) -> None:
        """IN PLACE buf <- the sum over every rank: within the node to its leader, between the
        leaders, back within the node."""
        from mpi4py import MPI  # noqa: PLC0415

        if self.leader:
            self.wait([self.node.Ireduce(MPI.IN_PLACE, buf, op=MPI.SUM, root=0)])
            self.wait([self.leaders.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM)])
        else:
            self.wait([self.node.Ireduce(buf, None, op=MPI.SUM, root=0)])
        self.wait([self.node.Ibcast(buf, root=0)])

    def free(self) -> None:
        from mpi4py import MPI  # noqa: PLC0415

        if self.leaders != MPI.COMM_NULL:
            self.leaders.Free()
        self.node.Free()
