"""The structure of the package (docs/layout.md): layers, no import cycles, imports at the top, one folder per method.

Fast (a few seconds, no training): the import graph is read from the source, not executed.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
import os
import subprocess
import sys
from pathlib import Path

import grimp  # comes with import-linter (the ``test`` extra)
import pytest
from importlinter.api import read_configuration  # its documented Python API: the configuration only

import cellmixer  # noqa: F401  (importing the package registers every method)
from cellmixer.cli._main import COMMANDS
from cellmixer.engine import METHODS, Method

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
SRC = ROOT / "src"
PACKAGE = SRC / "cellmixer"

# Imports inside functions are allowed only of these top-level third-party packages: optional
# dependencies, imported where they are needed so that the package works without them. Each entry says
# which feature needs it. (The napari plugin, cellmixer/napari, imports napari at its top: only napari
# imports that package.)
OPTIONAL_IMPORTS: dict[str, str] = {
    "bioio": "reading CZI, ND2, LIF and OME-Zarr (io/_read.py), the extra cellmixer[formats]",
    "bioimageio": "`cellmixer export --bioimageio` (bioimageio.spec; extra [bioimageio])",
    "napari": "`cellmixer view` (extra [napari])",
    "distributed": "--scheduler: a dask LocalCluster or a cluster's address (extra cellmixer[distributed])",
}
# Required, but imported on first use (in a function, or by ``cellmixer._lazy.lazy_import``): each costs
# start-up time that most commands never need.
DEFERRED_IMPORTS: dict[str, str] = {
    "dask": "over a second to import; only large images, plates and OME-Zarr use it",
    "zarr": "only OME-Zarr and chunked prediction use it",
    "matplotlib": "only the training curve's PNG (engine/_record.py)",
}


def _env() -> dict[str, str]:
    """The environment of a child process that analyses this checkout's ``src/cellmixer``."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(SRC) + (os.pathsep + path if path else "")}


# --- the import-linter contracts of pyproject.toml ------------------------------------------------------


def test_import_contracts_are_kept():
    """Every contract under ``[tool.importlinter]`` is kept (run ``lint-imports`` to see the report)."""
    contracts = read_configuration(str(PYPROJECT))["contracts_options"]
    assert contracts, "no import-linter contracts in pyproject.toml"
    # lint-imports reads setup.cfg or .importlinter before pyproject.toml: none may shadow it.
    assert not (ROOT / ".importlinter").exists(), ".importlinter would shadow pyproject.toml"
    setup_cfg = ROOT / "setup.cfg"
    assert not (setup_cfg.exists() and "[importlinter" in setup_cfg.read_text()), "setup.cfg would shadow it"
    # import-linter has no stable Python API for checking contracts: run its command (its declared entry
    # point, so that it does not matter where the script was installed), without writing a cache.
    command = ("import sys; from importlib.metadata import entry_points; "
               "(lint,) = entry_points(group='console_scripts', name='lint-imports'); sys.exit(lint.load()())")
    result = subprocess.run([sys.executable, "-c", command, "--no-cache"], cwd=ROOT, env=_env(),
                            capture_output=True, text=True, timeout=120, check=False)
    report = result.stdout + result.stderr
    report = report[report.find("---------\nContracts"):] if "---------\nContracts" in report else report  # no logo
    assert result.returncode == 0, f"import-linter contracts broken:\n{report}"
    assert f"{len(contracts)} kept, 0 broken" in report, report


# --- no import cycles ----------------------------------------------------------------------------------


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` (Tarjan's algorithm, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        work = [(start, iter(sorted(graph[start])))]
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def _describe_cycle(graph: grimp.ImportGraph, component: list[str]) -> str:
    """One cycle through ``component``, import by import, with the line of each."""
    first = component[0]
    members = set(component)
    back = next(m for m in sorted(graph.find_modules_that_directly_import(first)) if m in members)
    chain = graph.find_shortest_chain(importer=first, imported=back) or (first,)
    steps = [*chain, first]
    lines = []
    for importer, imported in itertools.pairwise(steps):
        details = graph.get_import_details(importer=importer, imported=imported)
        where = ", ".join(f"line {d['line_number']}: {d['line_contents']}" for d in details)
        lines.append(f"  {importer} -> {imported} ({where})")
    return f"cycle among {', '.join(component)}:\n" + "\n".join(lines)


def test_no_import_cycles():
    """No two modules of the package import each other, directly or through others.

    All imports count, package ``__init__`` modules included: they only re-export their own private
    modules, and the modules import each other's private modules or the ``__init__`` of another package,
    never that of their own, so no exclusion is needed. (Function-local and ``TYPE_CHECKING`` imports
    count too.)
    """
    graph = grimp.build_graph("cellmixer", cache_dir=None)
    edges = {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}
    cycles = [c for c in _strongly_connected(edges) if len(c) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(_describe_cycle(graph, c) for c in cycles)


def test_strongly_connected_finds_cycles():
    """The cycle search itself: a 3-cycle and a 2-cycle found, a chain and a self-import not."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"f", "a"}, "g": set()}
    assert sorted(c for c in _strongly_connected(graph) if len(c) > 1) == [["a", "b", "c"], ["d", "e"]]


# --- imports at the top ------------------------------------------------------------------------------


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _local_imports(tree: ast.AST):
    """(line, module imported, level) of every import inside a function, ``importlib.import_module`` too,
    and of every ``lazy_import`` (wherever it is: it imports on first use)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "lazy_import":
            name = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else "?"
            yield node.lineno, str(name), 0
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield node.lineno, alias.name, 0
            elif isinstance(node, ast.ImportFrom):
                yield node.lineno, node.module or "", node.level
            elif (isinstance(node, ast.Call) and ast.unparse(node.func) in ("importlib.import_module", "import_module",
                                                                            "__import__")):
                name = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else "?"
                yield node.lineno, str(name), 0


def test_function_imports_are_optional_dependencies_only():
    """Imports inside functions only of :data:`OPTIONAL_IMPORTS` and :data:`DEFERRED_IMPORTS` (never of the
    package: that hides a cycle)."""
    assert _modules(), f"no modules under {PACKAGE}"
    offending = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, module, level in _local_imports(tree):
            top = module.split(".")[0]
            if path.name == "_lazy.py" and module == "?":  # lazy_import itself: its callers are checked
                continue
            if level or top not in OPTIONAL_IMPORTS | DEFERRED_IMPORTS:
                offending.append(f"{path.relative_to(ROOT)}:{line}: {'.' * level}{module}")
    # Each function's imports appear once per enclosing function: report each line once.
    offending = sorted(set(offending))
    assert not offending, ("imports inside functions (move them to the top of the module, or add an optional "
                           "dependency to OPTIONAL_IMPORTS or DEFERRED_IMPORTS with the reason):\n" + "\n".join(offending))


# --- one folder per method ------------------------------------------------------------------------------


def _method_folders() -> list[str]:
    """The sub-packages of ``cellmixer/methods`` (every folder there that holds Python files)."""
    folders = []
    for folder in sorted((PACKAGE / "methods").iterdir()):
        if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py")):
            assert (folder / "__init__.py").is_file(), f"{folder.relative_to(ROOT)} has no __init__.py"
            folders.append(folder.name)
    return folders


def test_method_folders_are_found():
    assert {"cellmixer", "nuclei", "centroids", "typed"} <= set(_method_folders())


@pytest.mark.parametrize("name", _method_folders())
def test_each_method_folder_registers_its_method(name):
    """``methods/<name>/_method.py`` defines one registered :class:`~cellmixer.engine.Method` named ``name``."""
    assert (PACKAGE / "methods" / name / "_method.py").is_file(), f"methods/{name}/ has no _method.py"
    module = importlib.import_module(f"cellmixer.methods.{name}._method")
    defined = [obj for _, obj in inspect.getmembers(module, inspect.isclass)
               if obj.__module__ == module.__name__ and issubclass(obj, Method) and obj is not Method]
    assert len(defined) == 1, f"{module.__name__} defines {len(defined)} Method subclasses: {defined}"
    (method,) = defined
    assert method.name == name, f"{method.__qualname__}.name is {method.name!r}, not the folder name {name!r}"
    assert METHODS.get(name) is method, f"{method.__qualname__} is not registered (@register_method)"


def test_registry_holds_exactly_the_method_folders():
    assert sorted(METHODS) == _method_folders()


def test_each_method_has_one_command_module():
    """``cli/_<name>.py`` per method, each once in ``COMMANDS`` of ``cli/_main.py``, and nothing else there."""
    names = _method_folders()
    assert sorted(module.__name__ for module in COMMANDS) == [f"cellmixer.cli._{name}" for name in names]
