# hfrae: every target installs what it needs into ./.venv first (offline apart from package registries).
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.hfrae-installed
# torch/torchvision pinned to the releases this project is built and tested with; nbdev 2 needs these pins together
PINS    := torch==2.14.1 torchvision==0.29.1 "nbdev>=2.4,<3" "fastcore<2" "execnb<0.2"

.PHONY: install test sync-check nbtest pytest docs demo slow outputs peer clean

$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(PINS) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## the README's test command: nbdev sync checks, every notebook, then pytest
test: install sync-check nbtest pytest

sync-check: install
	PATH="$(abspath $(BIN)):$$PATH" bash .ci/nbdev-sync-check

# two notebooks at a time, one torch thread each: two processes with two threads each on two cores
# make OpenMP threads spin against each other and run many times slower
nbtest: install
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing

# the browser tests need Debian's chromium and pip's playwright, the site's test MathJax, the grader's sandbox Debian's
# bubblewrap; two pytest workers with one torch thread each, a test file per worker (its module fixtures run once)
pytest: install
	bash .ci/install-browser $(VENV)
	bash .ci/install-mathjax $(VENV)
	bash .ci/install-sandbox
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n 2 --dist loadfile tests

## the docs site in _docs/ (open _docs/index.html): the notebooks' stored outputs through Sphinx and myst-nb, nothing
## executed; MathJax comes from the npm registry once (.ci/install-mathjax) and is served from the site itself
docs: install
	bash .ci/install-mathjax $(VENV)
	$(BIN)/python .ci/docs/build.py --out _docs

## slow notebook cells (benchmarks, longer training) as well; the comparison with anomalib is `make peer`
slow: install
	$(BIN)/nbdev_test --n_workers 1 --flags slow --timing --skip_file_glob '*_peers.ipynb'

## hfrae beside anomalib's STFPM and Reverse Distillation (nbs/11b_peers.ipynb, about an hour on 2 cores); anomalib
## gets a venv of its own outside the repository, with torch pinned to hfrae's release so that pip keeps it
PEER_VENV ?= $(HOME)/.cache/hfrae/peer-venv
PEER_PINS := anomalib==2.7.0 torch==2.14.1 torchvision==0.29.1

$(PEER_VENV)/.peer-installed:
	test -x $(PEER_VENV)/bin/python || python3 -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install -q --disable-pip-version-check $(PEER_PINS)
	touch $@

peer: install $(PEER_VENV)/.peer-installed
	HFRAE_PEER_PYTHON=$(PEER_VENV)/bin/python $(BIN)/nbdev_test --path nbs/11b_peers.ipynb --flags slow --timing

## re-execute every chapter (or NBS="nbs/08_learner.ipynb ...") and store its outputs, then nbdev_clean; commit the result
outputs: install
	bash .ci/store-outputs $(NBS)

## the README's main job: offline end to end on synthetic defects (figure, metrics JSON, checkpoints in runs/demo/)
demo: install
	$(BIN)/hfrae demo --out runs/demo

clean:
	rm -rf $(VENV) _proc _docs .pytest_cache
