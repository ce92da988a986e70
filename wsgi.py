"""gunicorn entry point: `gunicorn -w 2 wsgi:app` (set CELLSTUDY_CONFIG=production)."""

from cellstudy import create_app

app = create_app()
