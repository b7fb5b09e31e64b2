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

clean:
	rm -rf $(VENV) reports .pytest_cache

# The real Pulumi engine: CLI, kubernetes provider and Python language host, built from Go modules
# into ~/.cache/twinsite/tools/pulumi-KEY/bin (docs/pulumi.md). Cold: minutes; cached: instant.
.PHONY: pulumi-tools
pulumi-tools: setup
	$(PY) -m twinsite.sandbox.pulumi_tools build
