# The README's words: run, test, lint, bench.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
TEST_SETTINGS := DJANGO_SETTINGS_MODULE=comicmem_site.settings.test

LITELLM_VENV ?= .venv-litellm

.PHONY: install litellm sysdeps run migrate test test-sqlite test-postgres lint format bench bench-peers clean

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

install: $(BIN)/.installed

# LiteLLM's proxy in its own virtualenv, for the tests against a real OpenAI-compatible server
# (tests/workflows/real_pipelines/test_litellm_proxy.py, tests/integration/test_litellm_worker.py); the app's virtualenv
# is not touched. About 1.5 min and 500 MB the first time, nothing after while requirements-litellm.txt is unchanged.
$(LITELLM_VENV)/.installed: requirements-litellm.txt
	test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LITELLM_VENV)/bin/python -m pip install --quiet -r requirements-litellm.txt
	touch $@

litellm: $(LITELLM_VENV)/.installed

# System tools some tests use (docker-compose to validate the compose file, promtool from Debian's prometheus
# package to check deploy/monitoring/prometheus.yml and the dashboard's queries, Debian's chromium for the
# admin browser test; Playwright never downloads a browser). The panels' CJK font is a Python package
# (requirements.txt), not a system font.
# Installed when we are root with apt-get;
# elsewhere those tests skip and say why.
sysdeps:
	@if ! command -v docker-compose >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null) \
	      || echo "warning: could not install docker-compose; its test will skip"; \
	  else echo "note: docker-compose is not installed; the compose-file test will skip"; fi; \
	fi
	@# Only its promtool is used. Under systemd the package also enables its server (:9090), which no test
	@# needs: `systemctl disable --now prometheus` turns it off.
	@if ! command -v promtool >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
	      || echo "warning: could not install prometheus (promtool); the monitoring configuration tests will skip"; \
	  else echo "note: promtool is not installed; the monitoring configuration tests will skip"; fi; \
	fi
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; the admin browser test will skip"; \
	  else echo "note: /usr/bin/chromium is not installed; the admin browser test will skip"; fi; \
	fi

migrate: install
	$(BIN)/python manage.py migrate --noinput

run: migrate
	$(BIN)/python manage.py ensure_demo_user
	@# One Prometheus folder for the run's web, worker and beat, emptied first (memory_app/metrics.py).
	rm -rf "$${COMICMEM_VAR_DIR:-var}/prometheus"
	@echo "Starting web (http://127.0.0.1:$(PORT)/), worker and beat; Ctrl-C stops all three."
	cd . && PROMETHEUS_MULTIPROC_DIR="$$(realpath -m "$${COMICMEM_VAR_DIR:-var}/prometheus")" \
	  PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho -f Procfile start -p $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy memory_app workflows comicmem_site gunicorn.conf.py

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install litellm bench-peers sysdeps lint
	env -u TEST_DATABASE_URL -u DATABASE_URL $(TEST_SETTINGS) $(BIN)/python manage.py makemigrations --check --dry-run
	@# With PostgreSQL the slow fault tests (-m slow) run once, in the PostgreSQL pass, the production shape;
	@# without it every test runs on SQLite.
	@if [ -n "$$TEST_DATABASE_URL" ]; then \
	  echo "SQLite pass without the slow tests: they run in the PostgreSQL pass that follows."; \
	  $(MAKE) --no-print-directory test-sqlite SQLITE_MARK='-m "not slow"' && \
	  $(MAKE) --no-print-directory test-postgres; \
	else $(MAKE) --no-print-directory test-sqlite && \
	  echo "TEST_DATABASE_URL is not set: the suite ran on SQLite only."; fi

# COMICMEM_SQLITE_PASS: this pass is SQLite on purpose (test-postgres follows), so the tests that need PostgreSQL
# skip here instead of failing under COMICMEM_REQUIRE_SERVICES.
test-sqlite: install
	env -u TEST_DATABASE_URL -u DATABASE_URL COMICMEM_SQLITE_PASS=1 $(BIN)/pytest $(SQLITE_MARK) $(PYTEST_ARGS)

test-postgres: install
	env -u DATABASE_URL $(BIN)/pytest $(PYTEST_ARGS)

# The peers `make bench` compares our engine with (LangGraph, DBOS): their own virtualenv, never our dependencies
# (their pins conflict with requirements.txt's); bench/sections/peers.py runs bench/peers.py with its python.
BENCH_VENV ?= .venv-bench

$(BENCH_VENV)/.installed: requirements-bench.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -r requirements-bench.txt
	touch $@

bench-peers: $(BENCH_VENV)/.installed

bench: install bench-peers
	BENCH_PEERS_PYTHON=$(abspath $(BENCH_VENV))/bin/python $(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(LITELLM_VENV) $(BENCH_VENV) var staticfiles .pytest_cache .ruff_cache
