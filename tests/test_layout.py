"""The architecture, checked (STYLE.md, "When the house grows"): no import cycle among ddl's
modules (lazy and type-only imports count), dependencies pointing one way (the core never reaches
up; `parallel/` imports nothing above itself), a top shelf of at most TOP_SHELF modules, package
names that no build tool skips, and a packaging list that holds every package."""
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
TOP_SHELF = 11          # modules directly under ddl/, besides __init__ and __main__
# The edges: the entry points and the wings that face the user, the store and the scheduler.
# Everything else is the core, found from the tree (a new module is core unless it is put here).
EDGES = ("__init__", "__main__", "cli", "api", "sweep", "runner", "tracking", "search")
ABOVE_PARALLEL = ("ddl.train", "ddl.runner", "ddl.tracking", "ddl.cli", "ddl.api", "ddl.sweep",
                  "ddl.__main__")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


NAMES = {module_name(p): p for p in MODULES}


def imported_roots(path: Path) -> set[str]:
    """Top-level names of every module `path` imports (at any depth: lazy imports count too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def ddl_imports(path: Path) -> set[str]:
    """The ddl modules `path` imports, wherever the import stands (module level, in a function,
    under TYPE_CHECKING), relative imports resolved; `from pkg import name` counts as an import of
    the module pkg.name when there is one, else of pkg."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "ddl")
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + (node.module.split(".") if node.module else []))
            if module.split(".")[0] != "ddl":
                continue
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in NAMES else module)
    return {m for m in found if m in NAMES and m != module_name(path)}


def import_graph() -> dict[str, set[str]]:
    return {name: ddl_imports(path) for name, path in NAMES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def core_modules() -> list[Path]:
    return [p for p in MODULES if p.relative_to(DDL).with_suffix("").parts[0] not in EDGES]


def test_no_import_cycle_among_ddl_modules():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_lazy_and_type_only_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ddl.train import Setup\n"
           "def f():\n    from ddl.runner import job\n")
    tree = ast.parse(src)
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {"ddl.train", "ddl.runner"} <= imported       # ast.walk reaches into both


def test_every_import_of_a_ddl_name_resolves():
    """Lazy imports too (a function-level import of a moved name fails only when it runs)."""
    import importlib

    missing = []
    for path in MODULES + sorted((REPO / "tests").rglob("*.py")) + sorted((REPO / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "ddl":
                wanted = [(node.module, a.name) for a in node.names]
            elif isinstance(node, ast.Import):
                wanted = [(a.name, None) for a in node.names if a.name.split(".")[0] == "ddl"]
            else:
                continue
            for module, name in wanted:
                try:
                    found = importlib.import_module(module)
                    if name is not None and not hasattr(found, name):
                        importlib.import_module(f"{module}.{name}")
                except ModuleNotFoundError as err:
                    if (err.name or "").split(".")[0] == "ddl":
                        missing.append(f"{path.relative_to(REPO)}: {module} {name or ''}")
                except ImportError:
                    missing.append(f"{path.relative_to(REPO)}: {module} {name or ''}")
    assert missing == []


def test_parallel_imports_nothing_above_itself():
    for p in (DDL / "parallel").rglob("*.py"):
        up = {m for m in ddl_imports(p) if m.startswith(ABOVE_PARALLEL)}
        assert up == set(), f"{p.relative_to(REPO)} imports {sorted(up)}"


def test_the_top_shelf_holds_at_most_eleven_modules():
    top = sorted(p.stem for p in DDL.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(top) <= TOP_SHELF, f"{len(top)} modules on ddl/'s top shelf: {top}"


@pytest.mark.parametrize("root,allowed", [
    ("hydra", lambda p: p in ("ddl/cli.py", "ddl/search/sweeper.py")),     # the sweeper is a Hydra plugin
    ("omegaconf", lambda p: p in ("ddl/cli.py", "ddl/search/sweeper.py")),
    ("mlflow", lambda p: p.startswith("ddl/tracking/")),
    ("mpi4py", lambda p: p.startswith("ddl/parallel/")),
    ("optuna", lambda p: p.startswith("ddl/search/")),
])
def test_each_third_party_edge_has_one_home(root, allowed):
    offenders = sorted(p.relative_to(REPO).as_posix() for p in MODULES
                       if any(n == root or n.startswith(root + ".") for n in imported_roots(p))
                       and not allowed(p.relative_to(REPO).as_posix()))
    assert offenders == [], f"{root} imported outside its edge: {offenders}"


def test_config_imports_only_the_standard_library():
    outside = {n for n in imported_roots(DDL / "config.py")
               if n.split(".")[0] not in STDLIB and n != "__future__"}
    assert outside == set()


def test_the_core_never_reaches_up_to_run_tracking_or_cli():
    core = core_modules()
    assert len(core) > 40 and DDL / "backend.py" in core and DDL / "runner" / "experiment.py" not in core
    for p in core:
        up = {m for m in ddl_imports(p) if m.split(".")[1] in EDGES}
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
    moved = {".".join(Path(d).parts): name for name, d in tool["package-dir"].items() if d != "conf"}
    assert moved == {"ddl.search.plugin": "hydra_plugins.ddl_search"}     # Hydra's plugin namespace
    assert set(tool["packages"]) == {moved.get(p, p) for p in found} | {"ddl.conf"}
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
