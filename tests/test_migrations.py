"""Every schema change is a migration: `flask db check` finds no drift (issue 2)."""

import os

import sqlalchemy as sa

from cellstudy.extensions import db


def test_flask_db_check_shows_no_drift(app):
    os.chdir(os.path.join(os.path.dirname(__file__), ".."))  # `migrations/` is found from the project root
    result = app.test_cli_runner().invoke(args=["db", "check"])
    assert result.exit_code == 0, result.output


def test_migrations_reach_head_and_create_every_model_table(app):
    with app.app_context():
        inspector = sa.inspect(db.engine)
        tables = set(inspector.get_table_names())
        assert set(db.metadata.tables) <= tables
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        migrations = os.path.join(os.path.dirname(__file__), "..", "migrations")
        config = Config(os.path.join(migrations, "alembic.ini"))
        config.set_main_option("script_location", migrations)
        head = ScriptDirectory.from_config(config).get_current_head()
        assert db.session.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == head
