"""The layers of ARCHITECTURE.md, enforced (issue 12): the import contract in pyproject.toml
holds, it has no exceptions, and it breaks on an upward import such as records -> monitoring."""

from __future__ import annotations

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
