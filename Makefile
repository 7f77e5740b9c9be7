# `make test` and `make demo` set everything up on a fresh machine: they create .venv, install
# jaxcpt with pinned versions (constraints.txt) and run. Nothing needs to be installed by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.jaxcpt-installed
PYTEST_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install test test-fast demo lock clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	command -v shellcheck >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq shellcheck; }
	$(PY) -m pytest $(PYTEST_ARGS)

# Local iteration: everything but the tests marked slow (under 5 minutes on 2 cores).
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/jaxcpt demo

# Re-pin every dependency to what is installed in .venv (run after changing pyproject.toml).
lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -v '^jaxcpt' > constraints.txt

clean:
	rm -rf $(VENV) runs .pytest_cache
