# CellStudy: `make run` serves the demo, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export FLASK_APP := wsgi.py

.PHONY: run test install install-dev browser bench clean
.PHONY: bench-ae
.PHONY: bench-audit
.PHONY: pdf-tools bench-pdf
.PHONY: bench-judgement
.PHONY: lint
.PHONY: security audit-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## run: migrate the SQLite database, load the demo study once, serve on 127.0.0.1:5000
run: install
	$(BIN)/flask db upgrade
	$(BIN)/flask ctcae load
	$(BIN)/flask demo load
	$(BIN)/flask rejudge-infusions
	$(BIN)/flask rejudge-sdv
	@echo "Serving on http://127.0.0.1:5000  (Ctrl-C to stop)"
	$(BIN)/flask run --host 127.0.0.1 --port 5000

## browser: Debian's Chromium for the browser tests (never a downloaded browser)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

## test: the whole suite on SQLite; with TEST_DATABASE_URL set, the database tests again on PostgreSQL
## pdf-tools: Debian's CJK fonts (PDFs print Chinese site names and terms) and poppler-utils (pdftoppm, pdftotext)
pdf-tools:
	@{ fc-list 2>/dev/null | grep -q "Noto Sans CJK SC" && command -v pdftoppm >/dev/null 2>&1; } || { \
	  echo "Installing fonts-noto-cjk and poppler-utils for the PDFs and their tests"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    fonts-noto-cjk fonts-liberation fonts-dejavu-core poppler-utils; }

## lint: ruff's lint and format checks (pyproject [tool.ruff]); part of make test
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## security: bandit over cellstudy/ ([tool.bandit] in pyproject.toml), part of make test: lists the MEDIUM and
## HIGH findings left (each should be fixed or carry `# why  # nosec ID`), then fails on any HIGH one
BANDIT := $(BIN)/bandit -c pyproject.toml -r cellstudy config.py wsgi.py -q
security: install-dev
	$(BANDIT) --severity-level medium --exit-zero -f custom --msg-template "{relpath}:{line}: {test_id} {severity} {msg}"
	$(BANDIT) --severity-level high 2>/dev/null  # (the first run printed bandit's warnings already)

## audit-deps: pip-audit of the installed dependencies against the PyPI/OSV advisories (online; not in make test or .ci/run)
audit-deps: install-dev
	$(BIN)/pip-audit --skip-editable --progress-spinner off

test: install-dev browser pdf-tools lint security
	$(BIN)/pytest
	@if [ -n "$$TEST_DATABASE_URL" ]; then \
	  echo "== PostgreSQL suite: $$TEST_DATABASE_URL"; \
	  $(BIN)/pytest -m "db and not e2e" -p no:cacheprovider; \
	fi

## bench: benchmarks (not part of make test); prints the figures, see bench/RESULTS.md
bench: install-dev
	@command -v wrk >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk; }
	$(BIN)/python bench/run.py

## bench-ae: issue 4's benchmark (safety listings and exports at 100,000 AEs), see bench/RESULTS.md
bench-ae: install-dev
	@command -v wrk >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk; }
	@command -v sqlite3 >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq sqlite3; }
	$(BIN)/python bench/ae_bench.py

## bench-audit: issue 6's benchmark (audit trail viewer, flask audit verify, dashboards on the scale dataset)
bench-audit: install-dev
	@command -v wrk >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk; }
	$(BIN)/python bench/audit_bench.py

clean:
	rm -rf $(VENV) instance .pytest_cache

## bench-pdf: issue 5's benchmark (filled CRF, casebook of 40 forms and 500 audit records), see bench/RESULTS.md
bench-pdf: install-dev pdf-tools
	$(BIN)/python bench/pdf_bench.py

## bench-judgement: issue 11's benchmark (saves, a first-infusion move and an amendment re-judging planned infusions; calendar and subject page against the commit before issue 11), see bench/RESULTS.md
bench-judgement: install-dev
	$(BIN)/python bench/judgement_bench.py
