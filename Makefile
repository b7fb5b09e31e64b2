# twinsite — set-up, tests, benchmarks. Everything lives in .venv; nothing needs root.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test bench clean

setup: $(STAMP)

# Reinstall only when the project's dependency declaration changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m bench

# The main job: every experiment in experiments/ against the lab; report in reports/latest/.
.PHONY: drill
drill: setup
	$(PY) -m twinsite.cli drill

# schemathesis against a real gateway for FUZZ_MINUTES (default 10), random seed (printed).
.PHONY: fuzz
FUZZ_MINUTES ?= 10
fuzz: setup
	FUZZ_MINUTES=$(FUZZ_MINUTES) $(PY) -m fuzz

clean:
	rm -rf $(VENV) reports .pytest_cache
