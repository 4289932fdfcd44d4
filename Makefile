# The two README commands: `make run` and `make test`. Both create .venv if
# missing and (re)install the project when its sources change.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# Debian programs that end-to-end tests drive as users do: the real telnet
# and irssi clients, in a terminal that tmux provides; chromium, which Playwright
# drives for the web page; and gcc, which builds the benchmark's load generator
# (bench/stepper.c) for its smoke run.
TEST_PROGRAMS := telnet tmux irssi chromium gcc
SOURCES := $(shell find chatservice twisted -name '*.py' -o -name '*.html' -o -name '*.css' -o -name '*.js') setup.cfg pyproject.toml
TCP ?= 12345
UDP ?= 12346
IRC ?= 6667
WEB ?= 8080
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-programs bench bench-quick bench-smoke clean

$(BIN)/python:
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || \
	  (echo "installing python3-venv (Debian)"; $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv)
	$(PYTHON) -m venv $(VENV)

# A real (not editable) install, so the twistd dropin lands in site-packages
# and `twistd --help` lists chatroom exactly as it will for users. `make run`
# installs only what running needs; `make test` adds the test extra.
$(STAMP): $(BIN)/python $(SOURCES)
	$(BIN)/pip install -q --disable-pip-version-check .
	@touch $@

$(TEST_STAMP): $(BIN)/python $(SOURCES)
	$(BIN)/pip install -q --disable-pip-version-check '.[test]'
	@touch $@ $(STAMP)

test-programs:
	@missing=""; for p in $(TEST_PROGRAMS); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (Debian)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

run: $(STAMP)
	$(BIN)/twistd -n chatroom --tcp $(TCP) --udp $(UDP) --irc $(IRC) --web $(WEB)

test: $(TEST_STAMP) test-programs
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q
	$(BIN)/python -m twisted.trial tests

bench: $(TEST_STAMP) test-programs
	$(BIN)/python -m bench.run

bench-quick: $(TEST_STAMP) test-programs
	$(BIN)/python -m bench.run --quick

bench-smoke: $(TEST_STAMP) test-programs
	$(BIN)/python -m bench.run --smoke

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp
