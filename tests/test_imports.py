"""The package's import rules, read from its source with ``ast`` and checked in a fresh
interpreter: imports go down only (experiments -> training -> the lecture's modules -> data
and the small helpers), nothing imports another module's private name, and ``import
resnet_lessons`` stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "resnet_lessons"

#: The floors, from the bottom up. A module may import from its own floor and the ones below.
FLOORS = {
    "base": 0,  # _checks, data, runtime: the floor everything stands on
    "lecture": 1,  # blocks, network, shapes, widgets, plots, exercises, ...: notebooks 01-05
    "training": 2,  # the trainer
    "experiments": 3,  # the Q&A notebooks 06-09
    "apps": 4,  # the command line and the doctor
}
BASE = {"resnet_lessons._checks", "resnet_lessons.data", "resnet_lessons.runtime"}
APPS = {"resnet_lessons.__main__", "resnet_lessons.doctor"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def floor(module: str) -> int:
    if module in BASE:
        return FLOORS["base"]
    if module in APPS:
        return FLOORS["apps"]
    for part in ("training", "experiments"):
        if module == f"resnet_lessons.{part}" or module.startswith(f"resnet_lessons.{part}."):
            return FLOORS[part]
    return FLOORS["lecture"]


def imports(module: str) -> list[tuple[str, list[str], int, bool]]:
    """``(imported module, names, line, at module level)`` for every import of the package's
    own modules in ``module``, function-level ones included."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if not target.startswith("resnet_lessons"):
                continue
            names = [alias.name for alias in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            for sub in submodules:  # `from . import depth`: the module depth
                found.append((sub, [], node.lineno, id(node) in top_level))
            rest = [n for n in names if f"{target}.{n}" not in MODULES]
            if rest or not submodules:
                found.append((target, rest, node.lineno, id(node) in top_level))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("resnet_lessons"):
                    found.append((alias.name, [], node.lineno, id(node) in top_level))
    return found


EDGES = [(m, *edge) for m in MODULES for edge in imports(m)]


def test_every_import_resolves_to_a_module_of_the_package():
    unknown = [f"{m}:{line} imports {t}" for m, t, _, line, _ in EDGES if t not in MODULES]
    assert not unknown, unknown


def test_no_module_imports_another_modules_private_name():
    private = [
        f"{m}:{line} imports {name} from {t}"
        for m, t, names, line, _ in EDGES
        for name in names
        if name.startswith("_") and t != m
    ]
    assert not private, (
        f"{private}: what two modules share is public (no leading underscore) in the lower one."
    )


def test_imports_go_down_only():
    """Function-level imports included: a lazy import that climbs back up is still a cycle."""
    upward = [
        f"{m}:{line} (floor {floor(m)}) imports {t} (floor {floor(t)})"
        for m, t, _, line, _ in EDGES
        if floor(t) > floor(m)
    ]
    assert not upward, upward


def test_the_trainer_imports_nothing_from_the_experiments():
    found = [
        f"{m}:{line} imports {t}"
        for m, t, _, line, _ in EDGES
        if floor(m) <= FLOORS["training"] and t.startswith("resnet_lessons.experiments")
    ]
    assert not found, found


def test_the_import_graph_has_no_cycle():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m, t, _, _, _ in EDGES:
        if t != m and not m.startswith(t + "."):  # a module's own package runs first anyway
            graph[m].add(t)
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            pytest.fail(f"import cycle: {' -> '.join(path[path.index(node) :] + [node])}")
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, [*path, node])
        done.add(node)

    for module in MODULES:
        visit(module, [])


def loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return set(result.stdout.split())


@pytest.mark.slow
def test_importing_the_package_is_light():
    """``import resnet_lessons`` (every notebook's first line) loads neither matplotlib nor
    the experiments; the trainer loads no experiment either."""
    loaded = loaded_after("import resnet_lessons")
    heavy = sorted(m for m in loaded if m == "matplotlib" or ".experiments" in m)
    assert not heavy, f"import resnet_lessons loaded {heavy}"
    loaded = loaded_after("import resnet_lessons.training")
    experiments = sorted(m for m in loaded if ".experiments" in m)
    assert not experiments, f"import resnet_lessons.training loaded {experiments}"


@pytest.mark.slow
def test_the_experiments_networks_still_come_from_the_top():
    """``from resnet_lessons import thin_resnet`` keeps working: loaded on first use."""
    loaded = loaded_after(
        "from resnet_lessons import ResidualMLP, thin_resnet\nimport resnet_lessons\n"
        "assert thin_resnet is resnet_lessons.experiments.depth.thin_resnet"
    )
    assert "resnet_lessons.experiments.depth" in loaded
