"""Installed as `hydra_plugins.ddl_search` (pyproject.toml's package-dir): Hydra instantiates a
sweeper only from the `hydra_plugins` namespace, and finds it there by scanning."""
