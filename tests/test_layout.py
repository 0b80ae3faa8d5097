"""The package's layout holds: its layers, no import circles, no private names across modules,
no module over 500 lines. Read from the source with ast, so it sees every import, also those made
inside functions (docs/architecture.md draws the layers)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "grader"
# Low to high: a package imports its own modules and those of the layers below it, never above
# nor beside it. The checker runs inside the trusted sandbox and imports grader.model only.
LAYERS = [["forkserver"], ["model"], ["data"], ["checker", "isolation"], ["store"], ["reports"],
          ["grading"], ["course"], ["cli"]]
ONLY = {"checker": {"model", "forkserver"}}
# grader/__init__.py names the public API lazily; __main__ starts the CLI; grader.checks is the
# name check authors import (an alias of grader.checker.checks); grader.forkserver, the one fork
# server of the zygote, the warm checker and the renderer, imports nothing else of grader.
TOP = {"grader": None, "grader.__main__": "cli", "grader.checks": "checker",
       "grader.forkserver": "forkserver"}
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))
           if "migrations" not in p.relative_to(PACKAGE).parts[:3] or p.name == "__init__.py"}


def _package(module: str) -> str | None:
    if module in TOP:
        return TOP[module]
    return module.split(".")[1]


def _layer(package: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if package in names)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported grader module, names taken from it, line) for each runtime import of MODULE."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: list[tuple[str, list[str], int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "grader")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                here = here[: len(here) - (node.level - 1)]
                base = ".".join([*here, base] if base else here)
            if base.split(".")[0] == "grader":
                for alias in node.names:
                    child = f"{base}.{alias.name}"
                    if child in MODULES:  # from grader.x import module
                        found.append((child, [], node.lineno))
                    else:
                        found.append((base, [alias.name], node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def test_every_import_follows_the_layers():
    wrong = []
    for module, imports in GRAPH.items():
        own = _package(module)
        if own is None:
            continue
        for target, _, line in imports:
            theirs = _package(target)
            if theirs is None or theirs == own or target == "grader.checks":
                if target == "grader" and own is not None:
                    wrong.append(f"{module}:{line} imports the lazy top-level grader; import the module")
                continue
            allowed = ONLY.get(own)
            if (allowed is not None and theirs not in allowed) or (
                    allowed is None and _layer(theirs) >= _layer(own)):
                wrong.append(f"{module}:{line} ({own}) imports {target} ({theirs})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    edges = {m: sorted({t for t, _, _ in imports if t in MODULES and t != m})
             for m, imports in GRAPH.items() if m != "grader"}
    # a package's __init__ is imported on the way to its modules: only its own imports count
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in edges.get(node, []):
            if state.get(target) == 1:
                cycles.append([*trail[trail.index(target):], target] if target in trail else [node, target])
            elif target not in state:
                walk(target, [*trail, target])
        state[node] = 2

    for start in edges:
        if start not in state:
            walk(start, [start])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_imports_a_private_name_of_another():
    wrong = [f"{module}:{line} takes {name} from {target}"
             for module, imports in GRAPH.items() for target, names, line in imports
             for name in names if name.startswith("_") and not name.startswith("__") and target != module]
    # and no module reads a private attribute of a grader module it imported (`pipeline._tail`)
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("grader"):
                for a in node.names:
                    if f"{node.module}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                wrong.append(f"{module}:{node.lineno} reads {node.value.id}.{node.attr}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_500_lines(module: str):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(PACKAGE.parent)} has {lines} lines"


def test_the_checker_is_a_package_that_imports_only_the_model():
    """What runs beside the student's kernel in the trusted sandbox: grader.checker and the model."""
    seen, todo = set(), ["grader.checker.plugin", "grader.checker.server", "grader.checks"]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(t for t, _, _ in GRAPH[module] if t in MODULES)
        todo.extend(p for p in (module.rsplit(".", 1)[0],) if p in MODULES and p != "grader")
    assert {_package(m) for m in seen} <= {"checker", "model", "forkserver"}, sorted(seen)
