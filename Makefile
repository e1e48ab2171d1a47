# citysense: the two commands a new user runs (see README.md).
#   make run   install what is missing, then run the whole system locally
#   make test  install what is missing, then run the test suite against real services
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install run test test-ha bench

install:
	@bash deploy/local/install.sh

run:
	@CITYSENSE_INSTALL_FOR_RUN=1 bash deploy/local/install.sh
	@exec $(VENV)/bin/citysense up

test: install
	@$(PY) -m pytest $(PYTEST_ARGS)

# PostgreSQL failover under load: etcd and two Patroni-managed nodes on this machine (tests/ha/).
test-ha: install
	@$(PY) -m pytest -m ha tests/ha $(PYTEST_ARGS)

bench:
	@CITYSENSE_EXTRAS=test,bench bash deploy/local/install.sh
	@$(PY) -m benchmarks.run $(BENCH_ARGS)
