"""The floors of the code: ``envs`` and ``brims_rl`` (the libraries) never import ``agents`` (the
application on top), and no modules of the three packages import each other in a circle.

Read from the real import graph: every module is parsed with ``ast`` and every import counts,
at the top of a file or inside a function, under ``if TYPE_CHECKING`` too. Two names of the
library's public surface live in the application and are handed on lazily, on first use,
without being imported by any library code: ``brims_rl.load`` (it must know the
application's algorithms) and the ``brims_rl.cli`` entry point of older installs.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("envs", "brims_rl", "agents")
# What each package may import from the others: the libraries nothing, the application both.
MAY_IMPORT = {"envs": set(), "brims_rl": set(), "agents": {"brims_rl", "envs"}}
# The only upward imports: (importing module, imported module), each inside a function.
LAZY_RE_EXPORTS = {("brims_rl", "agents.loading"), ("brims_rl.cli", "agents.cli")}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def imports(path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """``(imported module, inside a function?)`` for every import of ours in the file.

    ``from a.b import c`` names the module ``a.b.c`` when that is one of ours, else ``a.b``;
    relative imports are resolved against the file's package."""
    found = []
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level == 0:
                    source = child.module
                else:
                    parts = package[: len(package) - (child.level - 1)]
                    source = ".".join([*parts, child.module] if child.module else parts)
                for alias in child.names:
                    sub = f"{source}.{alias.name}"
                    found.append((sub if sub in known else source, in_function))
            visit(child, nested)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return [(name, lazy) for name, lazy in dict.fromkeys(found) if name.split(".")[0] in PACKAGES]


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports, the lazy re-exports left out."""
    found = modules()
    graph = {}
    for name, path in found.items():
        graph[name] = {target for target, _ in imports(path, set(found)) if (name, target) not in LAZY_RE_EXPORTS}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or a module importing itself
    (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_libraries_never_import_the_application() -> None:
    found = modules()
    wrong = []
    for name, path in found.items():
        package = name.split(".")[0]
        for target, in_function in imports(path, set(found)):
            target_package = target.split(".")[0]
            if target_package == package or target_package in MAY_IMPORT[package]:
                continue
            if (name, target) in LAZY_RE_EXPORTS and in_function:
                continue
            wrong.append(f"{path.relative_to(ROOT)} imports {target}" + (" (in a function)" if in_function else ""))
    assert not wrong, "imports that look up a floor:\n" + "\n".join(wrong)


def test_no_module_imports_in_a_circle() -> None:
    found = cycles(import_graph())
    assert not found, "modules that import each other in a circle: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("module", ["brims_rl", "envs"])
def test_importing_a_library_loads_nothing_of_the_application(module: str) -> None:
    """Every module of the library imported in a fresh process leaves ``agents`` unloaded,
    and the lazy re-exports resolve to the application's objects."""
    names = sorted(name for name in modules() if name.split(".")[0] == module and name != "brims_rl.cli")
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'agents')\n"
        "assert not loaded, loaded\n"
        "import brims_rl, agents.loading\n"
        "assert brims_rl.load is agents.loading.load\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_the_old_cli_entry_point_runs_the_application_cli(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m brims_rl.cli`` and console scripts installed before the CLI moved to ``agents``."""
    import brims_rl.cli

    with pytest.raises(SystemExit) as exit_info:
        brims_rl.cli.main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("brims-rl ")
