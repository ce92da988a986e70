"""Configuration: production refuses to start without its secrets (issue 2)."""

import pytest

from cellstudy import create_app


@pytest.mark.parametrize(
    "env,missing",
    [
        ({}, "SECRET_KEY and DATABASE_URL"),
        ({"SECRET_KEY": "x" * 32}, "DATABASE_URL"),
        ({"DATABASE_URL": "sqlite://"}, "SECRET_KEY"),
    ],
)
def test_production_refuses_to_start_without_secret_key_and_database_url(monkeypatch, env, missing):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(RuntimeError, match=missing):
        create_app("production")


def test_production_starts_with_both(monkeypatch, tmp_path):
    monkeypatch.setenv("SECRET_KEY", "s" * 32)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/p.db")
    app = create_app("production")
    assert app.config["SQLALCHEMY_DATABASE_URI"].endswith("p.db")
    assert app.config["LOAD_DEMO_ALLOWED"] is False
    result = app.test_cli_runner().invoke(args=["demo", "load"])
    assert result.exit_code == 2 and "never loaded in production" in result.output


def test_development_uses_sqlite_in_the_instance_folder(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    app = create_app("development")
    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")
    assert app.instance_path in app.config["SQLALCHEMY_DATABASE_URI"]


def test_the_gunicorn_entry_point_freezes_what_start_up_made(tmp_path):
    """Issue 14: full collections walked every start-up object again (70-85 ms, a pause for every
    request queued in the worker); wsgi.py moves them to the permanent generation. Run as
    gunicorn imports it, in a process of its own."""
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "CELLSTUDY_CONFIG": "production",
        "SECRET_KEY": "s" * 32,
        "CELLSTUDY_AUDIT_KEY": "7e57" * 16,
        "DATABASE_URL": f"sqlite:///{tmp_path}/w.db",
        "PYTHONPATH": str(root),
    }
    probe = "import gc, wsgi; print(gc.get_freeze_count(), sum(gc.get_count()))"
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    frozen, pending = (int(n) for n in out.stdout.split())
    assert frozen > 100_000 and pending < 1_000, (frozen, pending)
