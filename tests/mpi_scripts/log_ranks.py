"""Each rank logs one INFO and one WARNING line through the "ddl" logger."""
import logging

from ddl.parallel import get_comm
from ddl.runner.logs import setup_logging


def main():
    comm = get_comm("auto")
    setup_logging(comm, "INFO")
    log = logging.getLogger("ddl.test")
    log.info("info from %d", comm.rank)
    log.warning("warning from %d", comm.rank)


if __name__ == "__main__":
    main()
