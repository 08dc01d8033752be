# Two commands for everyone: `make lab` to learn, `make test` to check.
# Both create .venv (if missing) and install what they need into it first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k residual"`. Every run ends with
# its 15 slowest tests (--durations=15).
PYTEST_ARGS ?=

# The web book: static HTML of the notebooks with their saved outputs (nothing runs).
SITE ?= build/site

.PHONY: lab test test-fast lint figures site clean

# Trusting the course's own notebooks lets JupyterLab draw their saved widgets
# (the sliders of notebook 02) before any cell has run.
lab: $(VENV)/.installed-lab
	$(BIN)/jupyter trust notebooks/*.ipynb
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

# No OMP_WAIT_POLICY=PASSIVE here: it made the notebooks' small-network training 1.6x
# slower (notebook 03: 95 s against 59 s on a 2-core AVX2 CPU), and the processes the
# tests start together already share the cores: run_world's workers take one thread
# each, torchrun gives each worker OMP_NUM_THREADS=1.
test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(PY) -m pytest --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg \
		--nbval-cell-timeout=900 --durations=15 tests notebooks $(PYTEST_ARGS)

# The quick loop while changing code: ruff and the unit tests that neither train with fit,
# nor spawn a process, nor start a browser (those are marked slow; tests/conftest.py fails
# an unmarked test that does), without the notebooks. `make test` still runs everything.
test-fast: export RESNET_LESSONS_QUICK = 1
test-fast: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(PY) -m pytest -m "not slow" --durations=5 tests $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check resnet_lessons tests benchmarks

# Warnings are errors: a broken cross-reference, a missing image, a broken local link.
site: $(VENV)/.installed-book
	$(BIN)/jupyter-book build . --config notebooks/_config.yml --toc notebooks/_toc.yml \
		--path-output $(SITE) --all --warningiserror --keep-going --quiet
	@echo "The web book is in $(SITE)/_build/html/ (open index.html, or publish the folder)"

figures: $(VENV)/.installed-lab
	$(PY) -m resnet_lessons figures --out img

$(PY):
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "resnet-lessons needs Python 3.10 or newer; run: make PYTHON=python3.11 ..."'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-lab: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[lab]'
	touch $@

$(VENV)/.installed-book: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[book]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-lab $(VENV)/.installed-book

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
