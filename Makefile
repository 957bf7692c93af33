# The two quickstart commands: `make demo` and `make test` (each sets itself up).
VENV ?= .venv
PYTHON ?= python3

.PHONY: install demo test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/scrapersky demo

test: install
	bash tests/services.sh
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest
