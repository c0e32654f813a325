# hfrae: every target installs what it needs into ./.venv first (offline apart from package registries).
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.hfrae-installed
# torch/torchvision pinned to the releases this project is built and tested with; nbdev 2 needs these pins together
PINS    := torch==2.14.1 torchvision==0.29.1 "nbdev>=2.4,<3" "fastcore<2" "execnb<0.2"

.PHONY: install test sync-check nbtest pytest demo slow clean

$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(PINS) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## the README's test command: nbdev sync checks, every notebook, then pytest
test: install sync-check nbtest pytest

sync-check: install
	PATH="$(abspath $(BIN)):$$PATH" bash .ci/nbdev-sync-check

nbtest: install
	$(BIN)/nbdev_test --n_workers 2 --timing

pytest: install
	$(BIN)/pytest -q tests

## slow notebook cells (benchmarks, longer training) as well
slow: install
	$(BIN)/nbdev_test --n_workers 1 --flags slow --timing

## the README's main job (until `hfrae demo` exists: the quickstart of nbs/index.ipynb, executed, outputs written to runs/quickstart/)
demo: install
	mkdir -p runs/quickstart
	$(BIN)/jupyter nbconvert --to markdown --execute nbs/index.ipynb --output-dir runs/quickstart --output quickstart
	@grep -E "^(loss|score)" runs/quickstart/quickstart.md
	@echo "quickstart with figures: runs/quickstart/quickstart.md"

clean:
	rm -rf $(VENV) _proc _docs .pytest_cache
