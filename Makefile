# aelab: `make demo` and `make test` are all a new machine needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.aelab-installed
PYTEST_WORKERS ?= 2

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

# Idempotent: re-runs only when the dependency files change.  torch comes first and from the pinned
# version, so no other requirement can pull a different (e.g. CUDA) build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	-@sh scripts/install-fashion-mnist.sh
	-@sh scripts/install-chromium.sh
	$(BIN)/aelab data info mnist >/dev/null   # fills ~/.cache/aelab once (tests copy it, never write it)
	touch $(STAMP)

demo: setup
	$(BIN)/aelab reproduce --preset quick --out runs/demo

test: setup
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks

# throughput (a few minutes), then time to quality (three trainings on all 60000 digits: about 30 minutes on 2 CPU
# cores); add --out to either to record it (docs/benchmarks.md gives the commands behind its numbers)
bench: setup
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/ttq.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
