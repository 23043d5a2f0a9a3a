# lorabake: `make run` and `make test` set up everything they need on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VAR := var

.PHONY: setup run services browser test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: this version is the local CPU build; an open range would pull CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[train,tagger,dev]'
	touch $(STAMP)

setup: $(STAMP)

# the tiny models the embedded default offers (tiny-sd15 first; every var/models/tiny-<family> is listed)
TINY := sd15 flux zimage flux2 qwen_image

$(VAR)/models/tiny-%/model_index.json: | $(STAMP)
	$(BIN)/lorabake models make-tiny $(VAR)/models/tiny-$* --family $*

run: setup $(TINY:%=$(VAR)/models/tiny-%/model_index.json)
	LORABAKE_VAR_DIR=$(VAR) $(BIN)/python scripts/run_embedded.py

services:
	./scripts/services.sh > $(VAR)/.services.env

# The browser tests drive Debian's chromium through Playwright (never a Playwright browser download).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

test: setup browser
	mkdir -p $(VAR)
	./scripts/services.sh > $(VAR)/.services.env
	$(BIN)/ruff check trainer core api worker migrations scripts tests bench
	set -a && . ./$(VAR)/.services.env && set +a && $(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: setup
	$(BIN)/python -m bench.train_step
	$(BIN)/python -m bench.network_types
	$(BIN)/python -m bench.processes
	$(BIN)/python -m bench.service

clean:
	rm -rf $(VAR) $(VENV)
