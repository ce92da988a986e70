"""gunicorn entry point: `gunicorn -w 2 wsgi:app` (set CELLSTUDY_CONFIG=production)."""

import gc

from cellstudy import create_app

app = create_app()

# What start-up made (the modules, the form registry, SQLAlchemy's mappers, the app, its
# templates' environment) lives as long as the worker. Left in the collected generations,
# every full collection walks all of it again: 70-85 ms on this app, during which the request
# that triggered it, and every request queued behind it in that worker, waits (issue 14: the
# monitor dashboard's p99 one request at a time was 112 ms against a p50 of 30; 40 ms frozen).
# gc.freeze() moves it to the permanent generation, which collections skip; what requests
# allocate is collected as before.
gc.collect()
gc.freeze()
