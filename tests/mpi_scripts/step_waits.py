"""Count the host's waits for the "device" in training steps (NumPy twin of a GPU).

    python step_waits.py MODE BN           # one process (SerialComm), or under mpiexec -n N
prints "WAITS <json>" on rank 0: per-step waits and collectives, and per-evaluation-chunk reads.
MODE: host | cuda_aware | nccl (the strategy whose host-side logic runs); BN: 0 | 1.
"""
import json
import sys

from counting import WAITS, CountingDevice, counting_backend
from ddl.config import Config, DataConfig
from ddl.data.dataset import load_dataset
from ddl.data.shard import eval_shard, shard_batches
from ddl.train.evaluate import evaluate_split
from ddl.optim.optimizers import make_optimizer
from ddl.optim.schedules import make_schedule
from ddl.parallel import SerialComm, install_abort_handler, launcher_size
from ddl.runner.experiment import build_spec, initial_state, optimizer_hyper
from ddl.train import Setup, StepBuffers, sync_params, train_step

STEPS = 6


def make_comm(mode, device):
    if launcher_size() == 1 and "--mpi" not in sys.argv:
        return SerialComm()
    from ddl.parallel.mpi import MPIComm

    return MPIComm(allreduce=mode, device=device)


def main(mode, bn):
    device = CountingDevice()
    comm = make_comm(mode, device)
    install_abort_handler(comm)
    cfg = Config(data=DataConfig(name="moons", m=203, dev_fraction=0.2))
    cfg.model.hidden, cfg.model.l2, cfg.model.batchnorm = [6, 5], 0.1, bool(bn)
    cfg.model.keep_prob = 0.9
    cfg.train.batch_size, cfg.train.eval_batch = 20, 16
    backend = counting_backend()
    ds = load_dataset(cfg.data)
    spec = build_spec(cfg, ds)
    setup = Setup(backend, comm, spec, make_optimizer("adam", **optimizer_hyper(cfg)),
                  make_schedule("constant", 0.01), cfg.train, cfg.model.l2)
    state = initial_state(cfg, spec, backend, setup.opt)
    assert backend.is_array(state.params.buf) and device.owns(state.params.buf)
    sync_params(setup, state)
    bufs = StepBuffers.make(setup, state.params.layout)
    batches = shard_batches(ds.train.m, cfg.train.batch_size, 0, cfg.train.seed, comm.rank, comm.size)
    WAITS.clear()
    collectives = comm.allreduce_count
    for step in range(STEPS):
        X, y = setup.batch(ds.train, batches[step])
        count, _, bad, _ = train_step(setup, state, bufs, X, y, batches[step], 7 + step, 0.01)
        assert count == 20 and not bad
    step_waits, step_coll = dict(WAITS), comm.allreduce_count - collectives
    WAITS.clear()
    evaluate_split(setup, state, ds.dev)
    rows = len(eval_shard(ds.dev.m, comm.rank, comm.size))
    out = {"waits_per_step": sum(step_waits.values()) / STEPS, "kinds": step_waits,
           "collectives_per_step": step_coll / STEPS, "routed": dict(device.routed),
           "eval_waits": dict(WAITS), "eval_chunks": -(-rows // cfg.train.eval_batch),
           "size": comm.size}
    if comm.rank == 0:
        sys.stdout.write(f"WAITS {json.dumps(out)}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
