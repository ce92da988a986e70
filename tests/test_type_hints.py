"""The service layer's public functions carry type hints (issue 12, "house tools").

The service layer: every module of `cellstudy/` but the web edge (routes, forms, views,
template rendering helpers, the CLI), the tables (models) and the migrations. A public
function is a module-level function whose name does not start with "_". Each of its
parameters (but self/cls) and its return value are annotated: a reader (and a type checker)
learns from the signature what a scope, a user or a record is, without reading the body."""

import ast
from pathlib import Path

import cellstudy

ROOT = Path(cellstudy.__file__).parent
EDGE = {"routes.py", "forms.py", "views.py", "render.py", "models.py", "cli.py"}


def service_modules():
    for path in sorted(ROOT.rglob("*.py")):
        if "migrations" in path.parts or path.name in EDGE:
            continue
        yield path


def unannotated(path: Path) -> list[str]:
    out = []
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name.startswith("_"):
            continue
        a = node.args
        params = [p for p in (*a.posonlyargs, *a.args, *a.kwonlyargs) if p.arg not in ("self", "cls")]
        params += [p for p in (a.vararg, a.kwarg) if p is not None]
        missing = [p.arg for p in params if p.annotation is None]
        if node.returns is None:
            missing.append("return")
        if missing:
            out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {', '.join(missing)}")
    return out


def test_the_scan_sees_a_missing_hint(tmp_path):
    sample = tmp_path / "service.py"
    sample.write_text(
        "def typed(a: int, *, b: str = '') -> None: ...\n"
        "def untyped(a, b: int): ...\n"
        "def _private(a): ...\n"
        "def no_return(a: int): ...\n"
    )
    sample = sample.resolve()
    global ROOT
    saved, ROOT = ROOT, tmp_path.resolve()
    try:
        assert unannotated(sample) == ["service.py:2 untyped: a, return", "service.py:4 no_return: return"]
    finally:
        ROOT = saved


def test_every_public_service_function_is_annotated():
    modules = list(service_modules())
    assert any(p.name == "service.py" for p in modules) and len(modules) > 40
    missing = [line for path in modules for line in unannotated(path)]
    assert not missing, "\n".join(missing)
