# Two commands on a fresh Debian machine with Python 3.11+:
#   make run    creates .venv, installs monitor, runs `monitor health` (no config needed)
#   make test   also installs the test extras and integration tools, runs the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test bench clean

run: $(VENV)/.installed
	@# 0 ok, 1 warning, 2 critical are verdicts, not failures of `make run`; 3 is.
	@$(BIN)/monitor health; rc=$$?; [ $$rc -le 2 ] || exit $$rc

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-test
	$(BIN)/python bench/run.py

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "monitor needs Python 3.11+ (tomllib); set PYTHON=python3.11")'
	@# Debian ships venv's ensurepip in a separate package.
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null \
	  && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e . --config-settings editable_mode=compat
	@# PYTHONDONTWRITEBYTECODE would make every cron run recompile the package.
	$(BIN)/python -m compileall -q monitor
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	$(BIN)/python -m compileall -q monitor
	@touch $(VENV)/.installed $@

clean:
	rm -rf $(VENV) state .pytest_cache
