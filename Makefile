# The two README commands: `make run` and `make test`. Both create .venv if
# missing and (re)install the project when its sources change.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SOURCES := $(shell find chatservice twisted -name '*.py') setup.cfg pyproject.toml
TCP ?= 12345
UDP ?= 12346
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test bench bench-quick clean

$(BIN)/python:
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || \
	  (echo "installing python3-venv (Debian)"; $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv)
	$(PYTHON) -m venv $(VENV)

# A real (not editable) install, so the twistd dropin lands in site-packages
# and `twistd --help` lists chatroom exactly as it will for users.
$(STAMP): $(BIN)/python $(SOURCES)
	$(BIN)/pip install -q --disable-pip-version-check '.[test]'
	@touch $@

run: $(STAMP)
	$(BIN)/twistd -n chatroom --tcp $(TCP) --udp $(UDP)

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q
	$(BIN)/python -m twisted.trial tests

bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp
