# The two commands a newcomer needs: `make run` and `make test` (see README.md).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Exact versions and hashes of every dependency, dev extra included, compiled by uv from the
# ranges in pyproject.toml. make and CI install only from it.
LOCK := requirements.lock

.PHONY: run run-prod-like test audit lint install lock clean

# --require-hashes: a download that does not match the lock fails the install. The project itself
# goes in last with --no-deps, so nothing outside the lock is resolved.
$(STAMP): $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Upgrading dependencies is this one command: it recompiles requirements.lock to the newest
# versions pyproject.toml's ranges allow (`--universal`: one lock for every platform and Python
# >= 3.11), and the next make installs it. Commit pyproject.toml and requirements.lock together.
# To move a single package: make lock LOCK_UPGRADE="--upgrade-package django".
LOCK_UPGRADE ?= --upgrade
lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
		--generate-hashes $(LOCK_UPGRADE) --quiet -o $(LOCK)

run: $(STAMP)
	$(PY) scripts/run.py

# The production path on this machine: gunicorn, production settings, and the PostgreSQL and
# Redis named by DATABASE_URL, CELERY_BROKER_URL and CACHE_URL (see scripts/run_prod_like.py).
run-prod-like: $(STAMP)
	$(PY) scripts/run_prod_like.py

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

# Known vulnerabilities of the locked versions, from the package index's advisory data. Fails
# on an advisory, and also (--strict) when the service cannot answer for a package: a package
# that could not be checked is never a pass. Not in CI: the package index this project reaches
# serves no per-version data and the OSV service does not resolve, so today it always fails.
audit: $(STAMP)
	$(VENV)/bin/pip-audit --strict --disable-pip --progress-spinner off --requirement $(LOCK)

lint: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf var/
