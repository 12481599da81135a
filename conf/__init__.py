# Makes conf/ the package `ddl.conf` (see pyproject.toml), which Hydra reads as pkg://ddl.conf.
