"""Train 3 epochs under mpiexec and print the allreduce counts per tag: "COUNTS <json> <steps>"."""
import json

from ddl.config import Config
from ddl.config import DataConfig
from ddl.data.dataset import load_dataset
from ddl.data.shard import n_steps
from ddl.parallel import get_comm, install_abort_handler
from ddl.backend import get_backend
from ddl.runner.experiment import build_spec, initial_state, optimizer_hyper
from ddl.optim.optimizers import make_optimizer
from ddl.optim.schedules import make_schedule
from ddl.train import Setup, train

comm = get_comm("mpi")
install_abort_handler(comm)
cfg = Config(data=DataConfig(name="moons", m=203, dev_fraction=0.0))
cfg.model.hidden, cfg.model.l2 = [6], 0.1
cfg.train.epochs, cfg.train.batch_size, cfg.train.eval_every = 3, 20, 1000
backend = get_backend("numpy")
ds = load_dataset(cfg.data)
spec = build_spec(cfg, ds)
setup = Setup(backend, comm, spec, make_optimizer("adam", **optimizer_hyper(cfg)),
              make_schedule("constant", 0.01), cfg.train, cfg.model.l2)
state = initial_state(cfg, spec, backend, setup.opt)
comm.reset_counters()
train(ds, setup, state)
if comm.rank == 0:
    print("COUNTS", json.dumps(comm.counts), 3 * n_steps(ds.train.m, 20), flush=True)
