# The README's two set-up commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two install levels: the demo needs only the package and its "demo" extra (rich), and "trio" for
# `DEMO_ARGS="--backend trio"`; the checks need the whole toolchain. Each stamp is redone whenever the project metadata changes.
DEMO_STAMP := $(VENV)/.demo-stamp
STAMP := $(VENV)/.installed-stamp
WHEEL_VENV := $(CURDIR)/.wheel-venv
# `make test-lowest`: the suite again, in its own virtualenv, with fluxgate, prometheus-client,
# anyio and trio at the lowest versions pyproject.toml allows (constraints/lowest.txt pins them;
# the test tools resolve as usual). Redone whenever the metadata or the pins change.
LOWEST_VENV := .venv-lowest
LOWEST_BIN := $(LOWEST_VENV)/bin
LOWEST_PINS := constraints/lowest.txt
LOWEST_STAMP := $(LOWEST_VENV)/.installed-stamp

.PHONY: demo test test-fast test-lowest lint typecheck docs pytest bench dashboard kubernetes dist-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo,trio]'
	touch $(DEMO_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo,test]'
	touch $(STAMP) $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/python -m fluxgate_stream demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check --config noqa.toml .
	$(BIN)/ruff format --config noqa.toml --check .

# deploy/'s generators as Python 3.11: the dashboard's grafana-foundation-sdk needs it (its enums
# are StrEnums), and installs only there (pyproject.toml's "test" extra). src/ stays at 3.10.
typecheck: $(STAMP)
	$(BIN)/pyright
	if $(BIN)/python -c 'import grafana_foundation_sdk' 2>/dev/null; then \
		$(BIN)/pyright --pythonversion 3.11 deploy; \
	else echo "typecheck: deploy/ skipped: grafana-foundation-sdk needs Python 3.11"; fi

pytest: $(STAMP)
	$(BIN)/python -m pytest --cov --cov-report=term $(PYTEST_SELECT) $(PYTEST_ARGS)

# The documentation site (mkdocs.yml, docs/, the API reference from the docstrings) into site/;
# --strict turns every warning (broken reference, unparsable docstring) into a failure.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

test: lint typecheck docs pytest

# The inner loop: lint and the tests not marked slow (`make test` still runs everything). The
# coverage floor (fail_under) holds for the full run only: the slow tests cover the demo.
test-fast: PYTEST_SELECT = -m "not slow" --cov-fail-under=0
test-fast: lint pytest

$(LOWEST_BIN)/python:
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_BIN)/python -m pip install --quiet --upgrade pip

$(LOWEST_STAMP): pyproject.toml $(LOWEST_PINS) | $(LOWEST_BIN)/python
	$(LOWEST_BIN)/python -m pip install --quiet -c $(LOWEST_PINS) -e '.[demo,test]'
	touch $(LOWEST_STAMP)

# Only the pytest suite: lint, pyright and the docs build do not depend on these versions.
test-lowest: $(LOWEST_STAMP)
	$(LOWEST_BIN)/python constraints/check_lowest.py
	$(LOWEST_BIN)/python -m pip list --disable-pip-version-check 2>/dev/null \
		| grep -iE '^(fluxgate|prometheus[-_]client|anyio|trio) '
	$(LOWEST_BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

# Regenerate deploy/grafana/fluxgate-stream.json from deploy/grafana/dashboard.py.
dashboard: $(STAMP)
	$(BIN)/python deploy/grafana/dashboard.py

# Regenerate deploy/kubernetes/prometheusrule.yaml from deploy/prometheus/alerts.yml and rules.yml.
kubernetes: $(STAMP)
	$(BIN)/python deploy/kubernetes/generate.py

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

# Build the sdist and wheel, check them, install the wheel into a fresh virtualenv and import it,
# and verify that the public API is fully typed.
dist-check: $(STAMP)
	rm -rf dist $(WHEEL_VENV)
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install --quiet dist/*.whl
	cd $(WHEEL_VENV) && bin/python -c "import fluxgate_stream; print('wheel imports', fluxgate_stream.__version__)"
	# Checked as installed from the wheel (outside the project, whose config points at .venv).
	cd $(WHEEL_VENV) && VIRTUAL_ENV=$(WHEEL_VENV) PATH=$(WHEEL_VENV)/bin:$$PATH \
		$(CURDIR)/$(BIN)/pyright --verifytypes fluxgate_stream --ignoreexternal

clean:
	rm -rf $(VENV) $(LOWEST_VENV) $(WHEEL_VENV) dist build site .pytest_cache .ruff_cache .coverage htmlcov
