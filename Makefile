# The two quickstart commands: `make demo` and `make test` (each sets itself up).
VENV ?= .venv
PYTHON ?= python3

.PHONY: install demo test soak

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
	$(VENV)/bin/python tests/corpora.py  # the third-party metadata corpora, pinned (.corpora/)
	$(VENV)/bin/pytest

# The soak test (tests/test_soak.py, minutes long): deselected by `make test`.
soak: install
	bash tests/services.sh
	$(VENV)/bin/pytest -m soak tests/test_soak.py
