# The two quickstart commands: `make demo` and `make test` (each sets itself up).
VENV ?= .venv
PYTHON ?= python3

.PHONY: install demo test soak

# Our modules are byte-compiled once, as pip does for a regular install (an editable one
# does not, and PYTHONDONTWRITEBYTECODE stops Python doing it): a worker starts 0.1 s sooner.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	$(VENV)/bin/python -m compileall -q scrapersky benchmarks > /dev/null
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/scrapersky demo

test: install
	bash tests/services.sh
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python tests/corpora.py  # the third-party metadata corpora, pinned (.corpora/)
	$(VENV)/bin/pytest

# The soak tests (minutes long; tests/test_soak.py: the CLI's batch, then the same batch
# through `scrapersky up` with its worker killed twice and `up` restarted): deselected by
# `make test`. -s: the figures they print (wall time, outcomes, peak RSS, recovery times).
soak: install
	bash tests/services.sh
	$(VENV)/bin/pytest -m soak tests/test_soak.py tests/test_up_crowd.py tests/test_api_load.py -s
