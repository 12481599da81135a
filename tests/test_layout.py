"""The architecture, checked: import directions (STYLE.md §2), package names that no build tool
skips, and a packaging list that holds every package."""
from __future__ import annotations

import ast
import subprocess
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import pytest

from helpers import REPO

DDL = REPO / "ddl"
MODULES = sorted(DDL.rglob("*.py"))
STDLIB = sys.stdlib_module_names


def imported_roots(path: Path) -> set[str]:
    """Top-level names of every module `path` imports (at any depth: lazy imports count too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def importers_of(root: str) -> set[str]:
    return {p.relative_to(REPO).as_posix() for p in MODULES
            if any(n == root or n.startswith(root + ".") for n in imported_roots(p))}


@pytest.mark.parametrize("root,allowed", [
    ("hydra", lambda p: p == "ddl/cli.py"),
    ("omegaconf", lambda p: p == "ddl/cli.py"),
    ("mlflow", lambda p: p.startswith("ddl/tracking/")),
    ("mpi4py", lambda p: p.startswith("ddl/parallel/")),
])
def test_each_third_party_edge_has_one_home(root, allowed):
    offenders = sorted(p for p in importers_of(root) if not allowed(p))
    assert offenders == [], f"{root} imported outside its edge: {offenders}"


def test_config_imports_only_the_standard_library():
    outside = {n for n in imported_roots(DDL / "config.py")
               if n.split(".")[0] not in STDLIB and n != "__future__"}
    assert outside == set()


def test_the_core_never_reaches_up_to_run_tracking_or_cli():
    core = [p for p in MODULES if p.relative_to(DDL).parts[0] in
            ("backend.py", "params.py", "nn", "optim", "data", "parallel", "train.py",
             "evaluate.py", "checkpoint.py", "early_stopping.py")]
    assert len(core) > 20
    for p in core:
        up = {n for n in imported_roots(p) if n.startswith(("ddl.runner", "ddl.tracking", "ddl.cli"))}
        assert up == set(), f"{p.relative_to(REPO)} imports {sorted(up)}"


def test_importing_the_trainer_loads_no_tracking_and_no_hydra():
    code = ("import sys, ddl.train, ddl.config, ddl.runner.experiment\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'hydra', 'omegaconf')"
            " or m.startswith('ddl.tracking'))\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_package_is_named_like_a_build_output():
    dirs = [p.name for p in DDL.rglob("*") if p.is_dir() and p.name != "__pycache__"]
    assert not {"dist", "build"} & set(dirs)
    gitignore = (REPO / ".gitignore").read_text().splitlines()
    assert "dist/" not in gitignore and "build/" not in gitignore   # unanchored: matches ddl/dist
    assert {"/dist/", "/build/"} <= set(gitignore)


def test_pyproject_lists_every_package_and_ships_conf():
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.relative_to(REPO).parent.parts) for p in DDL.rglob("__init__.py")}
    assert set(tool["packages"]) == found | {"ddl.conf"}
    assert tool["package-dir"]["ddl.conf"] == "conf" and (REPO / "conf" / "__init__.py").is_file()
    depth = max(len(p.relative_to(REPO / "conf").parts) for p in (REPO / "conf").rglob("*.yaml"))
    patterns = tool["package-data"]["ddl.conf"]
    assert len(patterns) >= depth, "a YAML file sits deeper than package-data's patterns reach"


def test_mlflow_is_one_release_in_the_base_install_and_every_extra():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values()
                                      for r in extra]
    pins = {r.split("==")[1] for r in reqs if r.startswith(("mlflow==", "mlflow-skinny=="))}
    loose = [r for r in reqs if r.startswith("mlflow") and "==" not in r]
    assert len(pins) == 1 and loose == []
