"""One experiment from the job dict to summary.json: the rank protocol, the run's phases, its
edges (progress, hooks, plots, summary) and sweeps."""
