"""The layers of ARCHITECTURE.md, enforced (issue 12): the import contract in pyproject.toml
holds, it has no exceptions, and it breaks on an upward import such as records -> monitoring."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def _lint(cwd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": cwd}
    return subprocess.run([LINT, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_import_contract_holds():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 1 kept, 0 broken." in result.stdout


def test_the_contract_has_no_exceptions_and_names_every_package():
    config = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))["tool"]["importlinter"]
    for contract in config["contracts"]:
        assert not contract.get("ignore_imports"), contract["name"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")
    assert layers["exhaustive"] is True  # a new package must be given its layer
    named = {name.strip() for row in layers["layers"] for name in row.replace("|", ":").split(":")}
    packages = {
        entry.removesuffix(".py")
        for entry in os.listdir(os.path.join(ROOT, "cellstudy"))
        if (entry.endswith(".py") and entry != "__init__.py")
        or os.path.isfile(os.path.join(ROOT, "cellstudy", entry, "__init__.py"))
    }
    assert packages == named


def test_an_upward_import_breaks_the_contract(tmp_path):
    """records is the write path every feature builds on: an import of monitoring from it
    (as records/service.py had before issue 12) must fail `make test`."""
    shutil.copytree(
        os.path.join(ROOT, "cellstudy"),
        tmp_path / "cellstudy",
        ignore=shutil.ignore_patterns("__pycache__", "static", "templates", "data"),
    )
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path / "pyproject.toml")
    with open(tmp_path / "cellstudy" / "records" / "service.py", "a") as out:
        out.write("\n\ndef _late():\n    from ..monitoring import service  # an import inside a function counts too\n")
    result = _lint(str(tmp_path))
    assert result.returncode != 0
    assert "cellstudy.records is not allowed to import cellstudy.monitoring" in result.stdout


# --- no import circle between modules; imports inside functions say why ------------------------

PACKAGE = os.path.join(ROOT, "cellstudy")


def _modules(package: str) -> dict[str, str]:
    """Dotted module name -> file, for every module of the package (migrations aside)."""
    out = {}
    parent = os.path.dirname(package)
    for folder, dirs, files in os.walk(package):
        dirs[:] = [d for d in dirs if d not in ("migrations", "__pycache__", "templates", "static")]
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), parent)[:-3].split(os.sep)
                out[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = os.path.join(folder, name)
    return out


def _target(module: str, path: str, node: ast.ImportFrom) -> str:
    base = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    if not node.level:
        return node.module or ""
    parts = base.split(".")
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _module_level_imports(tree: ast.Module):
    """Imports run when the module is imported: the module's body and its if/try blocks,
    not functions, and not `if TYPE_CHECKING:` (for the type checker only)."""
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If | ast.Try):
            yield from (n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom))


def import_graph(package: str) -> dict[str, set[str]]:
    modules = _modules(package)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for node in _module_level_imports(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
                continue
            source = _target(module, path, node)
            edges.update(f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names)
        graph[module] = {e for e in edges if e in modules and e != module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_level_import_circle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 100 and graph["cellstudy.monitoring.service"]  # the scan sees the package
    assert circles(graph) == []


def test_a_circle_is_found(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import c\n")
    (package / "c.py").write_text("from .a import x\n\ndef late():\n    from . import b\n")
    assert circles(import_graph(str(package))) == []  # type-checking-only and call-time imports run no circle
    (package / "b.py").write_text("from .c import y\n")
    assert circles(import_graph(str(package))) == [["pkg.a", "pkg.b", "pkg.c"]]


def unexplained_late_imports(package: str) -> list[str]:
    """Imports of the package made inside a function with no comment saying why: on the line,
    or above the block of imports it belongs to."""
    out = []
    modules = _modules(package)
    for path in sorted(modules.values()):
        source = open(path).read()
        lines = source.splitlines()
        for fn in ast.walk(ast.parse(source)):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom):
                    ours = node.level > 0 or (node.module or "").startswith("cellstudy")
                elif isinstance(node, ast.Import):
                    ours = any(a.name.startswith("cellstudy") for a in node.names)
                else:
                    continue
                if not ours or "#" in "".join(lines[node.lineno - 1 : node.end_lineno]):
                    continue
                above = node.lineno - 2
                while above >= 0 and lines[above].strip().startswith(("from ", "import ")):
                    if "#" in lines[above]:
                        break
                    above -= 1
                if above < 0 or "#" not in lines[above]:
                    out.append(f"{os.path.relpath(path, os.path.dirname(package))}:{node.lineno}")
    return out


def test_imports_inside_functions_say_why():
    assert unexplained_late_imports(PACKAGE) == []


def test_an_unexplained_late_import_is_found(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "def f():\n    # b imports this module\n    from . import b\n    from . import c\n\n"
        "def g():\n    import json\n\n    from . import b\n"
    )
    assert unexplained_late_imports(str(package)) == ["pkg/a.py:9"]
