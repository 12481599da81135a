"""ddl: the Deep Learning Specialization's networks, trained data-parallel on MPI."""

__version__ = "0.1.0"
