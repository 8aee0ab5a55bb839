# The two commands of the README: `make demo` and `make test`. Each sets itself up from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hopscope-installed
DEBIAN_PACKAGES := prometheus prometheus-node-exporter prometheus-alertmanager chromium iproute2 nginx-light postgresql
# Binaries that tell whether each Debian package is there (same order as DEBIAN_PACKAGES). The store
# tests start their own temporary PostgreSQL cluster with initdb of any installed major version: the glob
# expands when the array is built (postgresql stays last, so a second version only adds entries at the end).
DEBIAN_BINARIES := /usr/bin/prometheus /usr/bin/prometheus-node-exporter /usr/bin/prometheus-alertmanager /usr/bin/chromium /usr/sbin/tc /usr/sbin/nginx /usr/lib/postgresql/*/bin/initdb
PYTEST_ARGS ?=
SCENARIO ?= bandwidth
LAB_ARGS ?=

.PHONY: demo test lab lab-sweep setup system-packages lint typecheck clean-demo help

help:
	@echo "make demo   - set up, generate the demo store, serve the dashboard on http://127.0.0.1:8501"
	@echo "make test   - set up (venv + Debian packages when root) and run the test suite"
	@echo "make lab    - (root) run a lab scenario for real and judge the diagnosis: make lab SCENARIO=bandwidth"
	@echo "make lab-sweep - (root) every lab scenario and the accuracy table (about 5 min a scenario)"
	@echo "make lint   - ruff;  make typecheck - mypy --strict on hopscope/, collectors/ and dashboard/"

demo: setup
	$(BIN)/hopscope demo

test: setup system-packages
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The lab builds network namespaces, veth links, qdiscs and cgroups: root only (docs/lab.md).
lab: setup system-packages
	@[ "$$(id -u)" = 0 ] || { echo "make lab needs root (network namespaces, veth links, tc, cgroups): run it as root"; exit 2; }
	$(BIN)/hopscope lab run $(SCENARIO) $(LAB_ARGS)

# Every lab scenario in turn and the accuracy table (docs/accuracy.md): about 5 minutes a scenario.
lab-sweep: setup system-packages
	@[ "$$(id -u)" = 0 ] || { echo "make lab-sweep needs root (network namespaces, veth links, tc, cgroups): run it as root"; exit 2; }
	$(BIN)/hopscope lab sweep --out var/lab-sweep $(LAB_ARGS)

setup: $(STAMP)

# Reinstall only when the project's metadata changed: quick when nothing did.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "hopscope needs Python >= 3.11 ($(PYTHON) is older)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

# Debian packages the tests drive for real. Installed when root and missing; without root the
# tests that need one skip with a reason naming the package (under CI=true they fail instead).
system-packages:
	@missing=""; pkgs=($(DEBIAN_PACKAGES)); bins=($(DEBIAN_BINARIES)); \
	for i in $${!pkgs[@]}; do [ -x "$${bins[$$i]}" ] || missing="$$missing $${pkgs[$$i]}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else \
	  echo "not root: cannot install$$missing; tests that need them will be skipped"; \
	fi

lint: setup
	$(BIN)/ruff check hopscope collectors dashboard tests benchmarks testbed
	$(BIN)/ruff format --check hopscope collectors dashboard tests benchmarks testbed

typecheck: setup
	$(BIN)/mypy --strict hopscope  # collectors/ and dashboard/ through hopscope's symlinks

clean-demo:
	rm -rf var/demo
