# twinsite — set-up, tests, benchmarks. Everything lives in .venv; nothing needs root.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test bench clean

setup: fuse-deps $(STAMP)

# The lab's NATS stores sit on a FUSE filesystem of ours (twinsite/lab/lazystore.py): Debian's
# fuse3 (fusermount3) and libfuse3. Installed when missing and root; otherwise one line says what.
.PHONY: fuse-deps
fuse-deps:
	@if ! command -v fusermount3 >/dev/null 2>&1 || ! ldconfig -p | grep -q 'libfuse3\.so\.3 '; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing fuse3 libfuse3-3 (the lab's lazy store needs FUSE)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq fuse3 libfuse3-3 >/dev/null 2>&1 || \
	      { apt-get update -qq && apt-get install -y -qq fuse3 libfuse3-3 >/dev/null; }; \
	  else \
	    echo "the lab needs FUSE: install Debian's fuse3 and libfuse3-3 (sudo apt-get install fuse3 libfuse3-3)"; \
	  fi; \
	fi
	@test -e /dev/fuse || echo "no /dev/fuse here: the lab's power-loss store cannot mount (containers: --device /dev/fuse --cap-add SYS_ADMIN)"

# Reinstall only when the project's dependency declaration changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

# The same suite on two pytest-xdist workers; a module's tests (its lab) stay in
# one worker (tests/conftest.py). Not the default yet: see docs/speed.md.
.PHONY: test-parallel
test-parallel: setup
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: setup
	$(PY) -m bench

# The main job: every experiment in experiments/ against the lab; report in reports/latest/.
.PHONY: drill
drill: setup
	$(PY) -m twinsite.cli drill

# The drill RUNS times in a row (default 20): reports/soak/<stamp>/soak.md + soak.json, run-NN/.
.PHONY: soak
RUNS ?= 20
soak: setup
	$(PY) -m twinsite.cli soak --runs $(RUNS)

# schemathesis against a real gateway for FUZZ_MINUTES (default 10), random seed (printed).
.PHONY: fuzz
FUZZ_MINUTES ?= 10
fuzz: setup
	FUZZ_MINUTES=$(FUZZ_MINUTES) $(PY) -m fuzz

clean:
	rm -rf $(VENV) reports .pytest_cache

# The sandbox's control-plane binaries (tools/kube) and the real Pulumi engine (tools/pulumi: CLI,
# kubernetes provider; the Python language host is ours), built once per pinned version into
# ~/.cache/twinsite/tools/<name>-<hash>/ (cold: minutes; cached: instant; docs/sandbox.md, docs/pulumi.md).
.PHONY: sandbox-tools pulumi-tools
sandbox-tools: setup
	$(PY) -m twinsite.sandbox.tools build
	$(PY) -m twinsite.sandbox.pulumi_tools build

pulumi-tools: setup
	$(PY) -m twinsite.sandbox.pulumi_tools build
